"""Shared fixtures: a CODEX_HOME, logins with canary tokens, the strict loopback token endpoint, the CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AnyStr

import pytest
from typer.testing import CliRunner

from codex_ci.cli import app
from testing.checks import SCRUBBED, assert_no_secrets
from testing.tokenserver import TokenServer, make_login, rfc3339

# The store targets' fixtures (file_target, vault_target, ..., store_target, unused_port).
pytest_plugins = ["testing.fixtures"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def fresh_logger() -> Iterator[None]:
    """Each test starts with codex-ci's logger as a new process has it: a command run in-process (CliRunner) sets
    its level and a handler on a stream that is closed once that command returns."""
    log = logging.getLogger("codex_ci")
    saved = (log.handlers[:], log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "codex-home"


# The access tokens' iat of every test login unless a test says otherwise: a day before the run, one value for all,
# so that logins made a second apart are ordered by their last_refresh, as each test sets it.
ISSUED_AT = int(time.time()) - 86400


def login(*, expires_in: int | None = 7200, refresh_token: str = "CANARY-rt-0", **kw: Any) -> dict[str, Any]:
    """A ChatGPT auth.json dict whose tokens carry canaries."""
    exp = None if expires_in is None else int(time.time()) + expires_in
    kw.setdefault("issued_at", ISSUED_AT)
    return make_login(access_exp=exp, refresh_token=refresh_token, canary="CANARY", **kw)


def write_login(home: Path, data: dict[str, Any] | bytes) -> Path:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / "auth.json"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data, indent=2).encode())
    path.chmod(0o600)
    return path


def backdated(raw: AnyStr, seconds: float = 3600) -> AnyStr:
    """An auth.json whose last_refresh is ``seconds`` ago: a login that may be rotated again (a login is never
    rotated twice within a minute). Bytes for a file, text for a store: the type it is given."""
    data = json.loads(raw)
    data["last_refresh"] = rfc3339(time.time() - seconds)
    text = json.dumps(data, indent=2)
    if isinstance(raw, bytes):
        return text.encode()
    return text


def backdate(home: Path) -> None:
    write_login(home, backdated((home / "auth.json").read_bytes()))


@pytest.fixture
def token_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    with TokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=10 * 86400) as server:
        monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", server.url)
        yield server


@pytest.fixture
def server(token_server: TokenServer) -> TokenServer:
    """``token_server`` by its short name (tests that define their own ``server`` use theirs)."""
    return token_server


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli() -> Any:
    """Run the CLI in process; every run is checked for leaked secrets and tracebacks."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | bytes | None = None) -> Run:
        result = runner.invoke(app, list(args), env=env, input=input, catch_exceptions=False)
        run = Run(result.exit_code, result.stdout, result.stderr)
        assert_no_secrets(run.stdout, run.stderr)
        assert "Traceback" not in run.stdout + run.stderr
        return run

    return invoke


def run_process(*args: str, env: dict[str, str] | None = None, timeout: float = 60, **kw: Any) -> Run:
    """Run ``python -m codex_ci`` as a real process, checked like ``cli``."""
    full_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED} | (env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "codex_ci", *args], env=full_env, capture_output=True, text=True,
        timeout=timeout, **kw,
    )
    run = Run(proc.returncode, proc.stdout, proc.stderr)
    assert_no_secrets(run.stdout, run.stderr)
    assert "Traceback" not in run.stdout + run.stderr
    return run
