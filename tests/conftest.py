"""Shared fixtures: a CODEX_HOME, logins with canary tokens, the strict loopback token endpoint, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from storetargets import StoreTarget
from tokenserver import TokenServer, make_login
from typer.testing import CliRunner

from codex_ci.cli import app

pytest_plugins = ["target_file", "target_vault", "target_aws", "target_gcp", "target_github"]

ROOT = Path(__file__).resolve().parent.parent
JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}")
# Variables that would change what the CLI does; tests set what they need explicitly.
SCRUBBED = (
    "CODEX_HOME", "CODEX_AUTH_JSON", "CODEX_REFRESH_TOKEN_URL_OVERRIDE", "CODEX_APP_SERVER_LOGIN_CLIENT_ID",
    "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV", "CODEX_CA_CERTIFICATE",
    "CODEX_CI_MIN_TTL", "CODEX_CI_LOCK_TIMEOUT", "CODEX_API_KEY", "CODEX_ACCESS_TOKEN",
)


def assert_no_secrets(*texts: str) -> None:
    """No canary value and no JWT in any of ``texts`` (``::add-mask::`` lines are the masking protocol)."""
    for text in texts:
        kept = "\n".join(line for line in text.splitlines() if not line.startswith("::add-mask::"))
        assert "CANARY" not in kept, f"a canary token leaked: {kept!r}"
        assert not JWT.search(kept), f"a JWT leaked: {kept!r}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)


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


def backdated(raw: bytes, seconds: float = 3600) -> bytes:
    """An auth.json whose last_refresh is ``seconds`` ago: a login that may be rotated again (a login is never
    rotated twice within a minute)."""
    from tokenserver import rfc3339

    data = json.loads(raw)
    data["last_refresh"] = rfc3339(time.time() - seconds)
    return json.dumps(data, indent=2).encode()


def backdate(home: Path) -> None:
    write_login(home, backdated((home / "auth.json").read_bytes()))


@pytest.fixture
def token_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    with TokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=10 * 86400) as server:
        monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", server.url)
        yield server


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


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


STORE_KINDS = ["file", "vault", "aws", "gcp"]


@pytest.fixture(params=STORE_KINDS)
def store_target(request: pytest.FixtureRequest) -> StoreTarget:
    """Each store in turn, on a real server on loopback (see target_*.py)."""
    target: StoreTarget = request.getfixturevalue(f"{request.param}_target")
    return target
