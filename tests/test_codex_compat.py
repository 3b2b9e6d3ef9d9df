"""Compatibility with the real Codex CLI (the version scripts/bootstrap pins), run offline.

Codex must accept the auth.json codex-ci writes, refresh it, send the same refresh request as codex-ci,
and wait for codex-ci's auth.json.lock before writing. Codex's refresh URL and API base point at the
strict loopback TokenServer, which answers Codex's ``GET /v1/models`` with 404 (Codex then falls back to
its bundled model catalog). Without the Codex binary every test here fails: CI must not pass without it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, backdate, login

from codex_ci.authfile import ACCESS_ONLY_TOKEN, parse_time
from codex_ci.locks import AuthLock
from testing.tokenserver import CLIENT_ID, TOKEN_PATH, TokenServer

DEFAULT_BIN = ROOT / ".cache" / "codex" / "node_modules" / ".bin" / "codex"
LATEST_BIN = ROOT / ".cache" / "codex-latest" / "node_modules" / ".bin" / "codex"
LOOPBACK = "127.0.0.1,localhost"
OLD_REFRESH = "2024-01-01T00:00:00.000000Z"
LOCK_HOLD = 8.0  # seconds codex-ci keeps its locks after Codex got its tokens: longer than Codex's 5 s try
MTIME_SLACK = 0.05  # file mtimes come from the kernel's coarse clock, a tick behind time.time()
Completed = subprocess.CompletedProcess[str]


def pinned_version(name: str = "CODEX_VERSION") -> str:
    """A Codex version scripts/bootstrap installs (its ``CODEX_VERSION=`` or ``CODEX_LATEST_VERSION=`` line)."""
    match = re.search(rf"^{name}=(\S+)$", (ROOT / "scripts" / "bootstrap").read_text(), re.MULTILINE)
    assert match, f"scripts/bootstrap has no {name}= line"
    return match.group(1)


def checked_codex(path: str, want: str, scratch: Path) -> str:
    """``path`` if it is an executable Codex CLI of version ``want``; fails the test otherwise."""
    fix = "run scripts/bootstrap to install the Codex CLI, or set CODEX_CI_CODEX_BIN to the pinned one"
    if not os.access(path, os.X_OK):
        pytest.fail(f"the Codex CLI is not installed at {path}: {fix}", pytrace=False)
    proc = run_codex(path, scratch, "--version")
    if proc.returncode != 0 or proc.stdout.split()[-1:] != [want]:
        pytest.fail(f"{path} --version said {proc.stdout.strip() or proc.stderr.strip()!r}, "
                    f"expected codex-cli {want}: {fix}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def codex_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The pinned Codex CLI: $CODEX_CI_CODEX_BIN, else the one scripts/bootstrap installs. Fails if absent."""
    path = os.environ.get("CODEX_CI_CODEX_BIN") or str(DEFAULT_BIN)
    return checked_codex(path, pinned_version(), tmp_path_factory.mktemp("codex-version"))


@pytest.fixture(scope="module", params=["pinned", "latest"])
def each_codex(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The pinned Codex CLI, then the newest stable one scripts/bootstrap installs."""
    if request.param == "pinned":
        path, want = os.environ.get("CODEX_CI_CODEX_BIN") or str(DEFAULT_BIN), pinned_version()
    else:
        path, want = str(LATEST_BIN), pinned_version("CODEX_LATEST_VERSION")
    return checked_codex(path, want, tmp_path_factory.mktemp("codex-version"))


def codex_env(home: Path, refresh_url: str | None = None) -> dict[str, str]:
    """A minimal environment: no proxy, no API key or access token, loopback exempt from any proxy."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home.parent), "CODEX_HOME": str(home),
           "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK}
    if refresh_url is not None:
        env["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = refresh_url
    return env


def run_codex(codex_bin: str, home: Path, *args: str, refresh_url: str | None = None) -> Completed:
    """Run Codex with ``home`` as CODEX_HOME, stdin closed, output captured, bounded by a timeout."""
    return subprocess.run([codex_bin, *args], env=codex_env(home, refresh_url), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def assert_codex_says(proc: Completed, line: str) -> None:
    """Codex exited 0 and printed ``line`` on stderr (Codex prints everything there)."""
    assert proc.returncode == 0 and line in proc.stderr.splitlines(), (
        f"codex exited {proc.returncode}; stderr: {proc.stderr!r}"
    )


def assert_codex_layout(raw: bytes) -> None:
    """The way Codex writes auth.json: its key order, two-space indent, no trailing newline."""
    data = json.loads(raw)
    assert list(data) == ["auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh"]
    assert list(data["tokens"]) == ["id_token", "access_token", "refresh_token", "account_id"]
    assert raw == json.dumps(data, indent=2).encode()
    assert not raw.endswith(b"\n")


def seed(cli: Any, home: Path, data: dict[str, Any]) -> bytes:
    """``codex-ci seed`` ``data`` through CODEX_AUTH_JSON; return the auth.json it wrote."""
    run = cli("seed", "--codex-home", str(home), env={"CODEX_AUTH_JSON": json.dumps(data)})
    assert run.exit_code == 0, run.stderr
    return (home / "auth.json").read_bytes()


def seed_expired(cli: Any, home: Path, server: TokenServer) -> bytes:
    """Seed an expired login holding the server's live refresh token; send Codex's API calls to the server."""
    seeded = seed(cli, home, login(expires_in=-60, last_refresh=OLD_REFRESH))
    with (home / "config.toml").open("a") as config:
        config.write(f'openai_base_url = "{server.url.removesuffix(TOKEN_PATH)}/v1"\n')
    return seeded


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` every 10 ms; False if it still does not hold after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_codex_accepts_seeded_login(cli, home: Path, codex_bin: str) -> None:
    seed(cli, home, login())
    assert_codex_says(run_codex(codex_bin, home, "login", "status"), "Logged in using ChatGPT")


def test_codex_accepts_login_refreshed_by_codex_ci(cli, home: Path, token_server: TokenServer, codex_bin: str) -> None:
    seed(cli, home, login(expires_in=60, last_refresh=OLD_REFRESH))
    run = cli("refresh", "--codex-home", str(home))
    assert run.exit_code == 0, run.stderr
    assert (token_server.posts, token_server.successes) == (1, 1)
    raw = (home / "auth.json").read_bytes()
    assert json.loads(raw)["tokens"]["refresh_token"] == token_server.current_refresh_token
    assert_codex_layout(raw)
    assert_codex_says(run_codex(codex_bin, home, "login", "status"), "Logged in using ChatGPT")


def test_codex_accepts_seeded_api_key(cli, home: Path, codex_bin: str) -> None:
    seed(cli, home, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-CANARY-0123456789abcdef"})
    proc = run_codex(codex_bin, home, "login", "status")
    assert_codex_says(proc, "Authentication is checked when you send a request.")
    assert "API key configured" in proc.stderr


def test_codex_refreshes_seeded_login(cli, home: Path, token_server: TokenServer, codex_bin: str) -> None:
    """Codex refreshes an expired seeded login once, and codex-ci reads the file Codex wrote as healthy."""
    seed_expired(cli, home, token_server)
    started = time.time()
    proc = run_codex(codex_bin, home, "debug", "models", refresh_url=token_server.url)
    assert proc.returncode == 0, proc.stderr
    assert token_server.posts == 1, token_server.requests
    [request] = token_server.requests
    assert request["outcome"] == "rotated"
    assert request["body"]["client_id"] == CLIENT_ID
    assert request["body"]["grant_type"] == "refresh_token"
    assert request["body"]["refresh_token"] == "CANARY-rt-0"
    raw = (home / "auth.json").read_bytes()
    assert json.loads(raw)["tokens"]["refresh_token"] == token_server.current_refresh_token
    assert_codex_layout(raw)  # what test_codex_accepts_login_refreshed_by_codex_ci expects of codex-ci

    run = cli("status", "--json", "--min-ttl", "5m", "--codex-home", str(home))
    assert run.exit_code == 0, run.stdout
    status = json.loads(run.stdout)
    assert status["health"] == "healthy"
    assert status["refresh_token_present"] is True
    last_refresh = parse_time(status["last_refresh"])
    assert last_refresh is not None and last_refresh.timestamp() >= started - 1  # written by Codex just now


def test_codex_ci_sends_the_request_codex_sends(cli, home: Path, token_server: TokenServer, codex_bin: str) -> None:
    """Codex refreshes, then ``codex-ci refresh --force`` refreshes the result: the two requests match."""
    seed_expired(cli, home, token_server)
    assert run_codex(codex_bin, home, "debug", "models", refresh_url=token_server.url).returncode == 0
    codex_token = json.loads((home / "auth.json").read_text())["tokens"]["refresh_token"]
    backdate(home)  # a login is never rotated twice within a minute
    run = cli("refresh", "--force", "--codex-home", str(home))
    assert run.exit_code == 0, run.stderr
    codex_request, ci_request = token_server.requests
    assert [codex_request["outcome"], ci_request["outcome"]] == ["rotated", "rotated"]
    assert ci_request["headers"]["content-type"] == codex_request["headers"]["content-type"]
    codex_body = dict(codex_request["body"])
    codex_body.pop("refresh_reason", None)  # Codex says why it refreshed; the server ignores it
    assert ci_request["body"] == codex_body | {"refresh_token": codex_token}


def test_codex_waits_for_codex_ci_locks(cli, home: Path, token_server: TokenServer, each_codex: str) -> None:
    """Codex (0.169+) gets its tokens without a lock, then takes auth.lock and tries auth.json.lock for 5 s; were
    auth.json.lock alone held that long, it would replay the spent token. codex-ci holds both, Codex's way, for
    8 s: Codex waits quietly on auth.lock, writes once they are released, and sends one request."""
    seeded = seed_expired(cli, home, token_server)
    path = home / "auth.json"
    with AuthLock(home, timeout=5):
        proc = subprocess.Popen(
            [each_codex, "debug", "models"], env=codex_env(home, token_server.url), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        got_tokens = wait_until(lambda: token_server.posts > 0, timeout=10)
        time.sleep(LOCK_HOLD)
        running = proc.poll() is None
        before_release = path.read_bytes()
        released = time.time()
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()  # only if communicate timed out
        proc.wait()
    assert got_tokens, "Codex sent no refresh request"
    assert running, f"Codex exited while codex-ci held the lock: {stderr!r}"
    assert before_release == seeded, "Codex wrote auth.json while codex-ci held the lock"
    assert proc.returncode == 0, stderr
    assert token_server.posts == 1, token_server.requests  # a second POST means Codex gave up waiting
    assert json.loads(path.read_bytes())["tokens"]["refresh_token"] == token_server.current_refresh_token
    assert path.stat().st_mtime >= released - MTIME_SLACK


def test_codex_accepts_an_access_only_copy_and_never_presents_the_real_refresh_token(
        cli, home: Path, token_server: TokenServer, each_codex: str) -> None:
    """An access-only copy (refresh token: a placeholder): Codex accepts it and sends nothing while the access token
    is valid; once it has expired, Codex presents only the placeholder, fails, and leaves auth.json and the real
    login alone (the family is not revoked)."""
    run = cli("seed", "--access-only", "--codex-home", str(home),
              env={"CODEX_AUTH_JSON": json.dumps(login(refresh_token="CANARY-rt-0"))})
    assert run.exit_code == 0, run.stderr
    assert_codex_says(run_codex(each_codex, home, "login", "status"), "Logged in using ChatGPT")
    assert token_server.posts == 0

    expired = home.parent / "expired"
    run = cli("seed", "--access-only", "--codex-home", str(expired),
              env={"CODEX_AUTH_JSON": json.dumps(login(expires_in=-60, refresh_token="CANARY-rt-0"))})
    assert run.exit_code == 0, run.stderr
    with (expired / "config.toml").open("a") as config:
        config.write(f'openai_base_url = "{token_server.url.removesuffix(TOKEN_PATH)}/v1"\n')
    before = (expired / "auth.json").read_bytes()
    proc = run_codex(each_codex, expired, "debug", "models", refresh_url=token_server.url)
    presented = [r["body"].get("refresh_token") for r in token_server.requests if r["path"] == TOKEN_PATH]
    assert presented, f"Codex sent no refresh for an expired access token: {proc.stderr!r}"
    assert set(presented) == {ACCESS_ONLY_TOKEN}, presented  # never the real refresh token
    assert not token_server.revoked and token_server.current_refresh_token == "CANARY-rt-0"
    assert (expired / "auth.json").read_bytes() == before
