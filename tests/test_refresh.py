"""codex-ci refresh against the strict loopback token endpoint: the request, the policy, every failure class."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import login, write_login

from codex_ci.errors import ExitCode
from testing.tables import ENDPOINT, endpoint
from testing.tokenserver import CLIENT_ID, TokenServer, decode_jwt_payload


def stale(home: Path, **kw: object) -> Path:
    return write_login(home, login(expires_in=60, **kw))


def test_refresh_sends_codex_request_and_writes_rotated_tokens(cli, home: Path, token_server: TokenServer) -> None:
    path = stale(home)
    old = json.loads(path.read_text())
    old["unknown_top"] = 1
    old["tokens"]["unknown_inner"] = "kept"
    path.write_text(json.dumps(old))
    run = cli("refresh", "--codex-home", str(home))
    assert run.exit_code == 0, run.stderr
    assert token_server.posts == 1
    request = token_server.requests[0]
    assert request["body"] == {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": "CANARY-rt-0"}
    assert request["headers"]["content-type"] == "application/json"
    new = json.loads(path.read_text())
    assert new["tokens"]["refresh_token"] == token_server.current_refresh_token != "CANARY-rt-0"
    assert new["tokens"]["access_token"] != old["tokens"]["access_token"]
    assert new["tokens"]["account_id"] == old["tokens"]["account_id"]
    assert new["unknown_top"] == 1 and new["tokens"]["unknown_inner"] == "kept"
    assert new["last_refresh"] > old["last_refresh"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "refreshed: the access token expires within the minimum TTL" in run.stderr


def test_fresh_login_is_not_refreshed(cli, home: Path, token_server: TokenServer) -> None:
    path = write_login(home, login(expires_in=7200))
    before = path.read_bytes()
    run = cli("refresh", "--codex-home", str(home))
    assert run.exit_code == 0
    assert token_server.posts == 0
    assert path.read_bytes() == before
    assert "not refreshed: the access token is fresh enough" in run.stderr


@pytest.mark.parametrize(("args", "expires_in", "last_refresh", "posts"), [
    (["--force"], 7200, None, 1),
    (["--min-ttl", "3h"], 7200, None, 1),
    (["--min-ttl", "30m"], 7200, None, 0),
    ([], -600, None, 1),  # expired
    ([], None, "2020-01-01T00:00:00Z", 1),  # no exp claim, old last_refresh
    ([], None, "NOW", 0),  # no exp claim, recent last_refresh
    (["--max-age", "1s"], None, "2026-01-01T00:00:00Z", 1),
])
def test_refresh_policy(cli, home: Path, token_server: TokenServer, args, expires_in, last_refresh, posts) -> None:
    kw = {} if last_refresh in (None, "NOW") else {"last_refresh": last_refresh}
    write_login(home, login(expires_in=expires_in, **kw))
    assert cli("refresh", "--codex-home", str(home), *args).exit_code == 0
    assert token_server.posts == posts


def test_apikey_login_has_nothing_to_refresh(cli, home: Path, token_server: TokenServer) -> None:
    write_login(home, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-CANARY"})
    run = cli("refresh", "--codex-home", str(home), "--force")
    assert run.exit_code == 0
    assert token_server.posts == 0
    assert "apikey login: nothing to refresh" in run.stderr


def test_client_id_override(cli, home: Path, token_server: TokenServer) -> None:
    token_server.client_id = "app_custom"
    stale(home)
    assert cli("refresh", "--codex-home", str(home), env={"CODEX_APP_SERVER_LOGIN_CLIENT_ID": "app_custom"}
               ).exit_code == 0
    assert token_server.requests[0]["body"]["client_id"] == "app_custom"


@pytest.mark.parametrize("mode", [row.mode for row in ENDPOINT if row.rejected])
def test_permanent_failures_are_not_retried(cli, home: Path, token_server: TokenServer, mode: str) -> None:
    row = endpoint(mode)
    path = stale(home)
    before = path.read_bytes()
    token_server.set_mode(mode)
    run = cli("refresh", "--codex-home", str(home))
    assert run.exit_code == row.exit_code == ExitCode.LOGIN_REJECTED
    assert token_server.posts == 1 and not row.retried
    assert path.read_bytes() == before
    assert "Run `codex login` on a trusted machine" in run.stderr and row.error in run.stderr
    assert len(run.stderr.strip().splitlines()) == 2  # the "refreshing" line and the one error line


@pytest.mark.parametrize("mode", [row.mode for row in ENDPOINT if row.server_error])
def test_server_errors_are_retried_then_reported(cli, home: Path, token_server: TokenServer, mode: str) -> None:
    row = endpoint(mode)
    path = stale(home)
    before = path.read_bytes()
    token_server.set_mode(mode)
    run = cli("refresh", "--codex-home", str(home), "--retries", "1")
    assert run.exit_code == row.exit_code
    assert row.retried and token_server.posts == 2
    assert path.read_bytes() == before
    assert row.error in run.stderr


def test_server_error_then_success(cli, home: Path, token_server: TokenServer) -> None:
    path = stale(home)
    token_server.set_mode("http503", count=1)
    assert cli("refresh", "--codex-home", str(home)).exit_code == 0
    assert token_server.posts == 2
    assert json.loads(path.read_text())["tokens"]["refresh_token"] == token_server.current_refresh_token


def test_429_honours_retry_after(cli, home: Path, token_server: TokenServer) -> None:
    stale(home)
    assert endpoint("http429").retried
    token_server.set_mode("http429", count=1)
    started = time.monotonic()
    assert cli("refresh", "--codex-home", str(home)).exit_code == 0
    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    assert token_server.posts == 2


# "slow" answers only with a delay longer than --timeout: the test after this one
@pytest.mark.parametrize("mode", [row.mode for row in ENDPOINT if row.ambiguous and row.mode != "slow"])
def test_ambiguous_answers_are_not_retried(cli, home: Path, token_server: TokenServer, mode: str) -> None:
    row = endpoint(mode)
    path = stale(home)
    before = path.read_bytes()
    token_server.set_mode(mode)
    run = cli("refresh", "--codex-home", str(home))
    assert run.exit_code == row.exit_code
    assert token_server.posts == 1 and bool(token_server.spent_tokens()) == row.spent
    assert path.read_bytes() == before
    assert row.error in run.stderr


def test_timeout_after_sending_is_not_retried(cli, home: Path, token_server: TokenServer) -> None:
    row = endpoint("slow")
    path = stale(home)
    before = path.read_bytes()
    token_server.set_mode(row.mode)
    token_server.delay = 3
    run = cli("refresh", "--codex-home", str(home), "--timeout", "0.5")
    assert run.exit_code == row.exit_code and row.ambiguous
    assert token_server.posts == 1 and bool(token_server.spent_tokens()) == row.spent
    assert path.read_bytes() == before
    assert row.error in run.stderr


def test_partial_answer_keeps_omitted_tokens(cli, home: Path, token_server: TokenServer) -> None:
    path = stale(home)
    old = json.loads(path.read_text())["tokens"]
    token_server.set_mode("partial")
    assert cli("refresh", "--codex-home", str(home)).exit_code == endpoint("partial").exit_code
    new = json.loads(path.read_text())["tokens"]
    assert new["access_token"] != old["access_token"]
    assert (new["id_token"], new["refresh_token"]) == (old["id_token"], old["refresh_token"])


def test_empty_answer_keeps_every_token(cli, home: Path, token_server: TokenServer) -> None:
    path = stale(home)
    old = json.loads(path.read_text())
    token_server.set_mode("empty_ok")
    assert cli("refresh", "--codex-home", str(home)).exit_code == endpoint("empty_ok").exit_code
    new = json.loads(path.read_text())
    assert new["tokens"] == old["tokens"] and new["last_refresh"] > old["last_refresh"]


def test_connection_refused_is_retried(cli, home: Path, unused_port: int) -> None:
    stale(home)
    run = cli("refresh", "--codex-home", str(home), "--retries", "1",
              env={"CODEX_REFRESH_TOKEN_URL_OVERRIDE": f"http://127.0.0.1:{unused_port}/oauth/token"})
    assert run.exit_code == ExitCode.TRANSIENT
    assert run.stderr.count("cannot connect to 127.0.0.1") == 2  # one retry notice, one error


@pytest.mark.parametrize("url", ["http://example.com/oauth/token", "ftp://127.0.0.1/x", "not a url"])
def test_refresh_url_must_be_https_or_loopback(cli, home: Path, url: str) -> None:
    path = stale(home)
    before = path.read_bytes()
    run = cli("refresh", "--codex-home", str(home), env={"CODEX_REFRESH_TOKEN_URL_OVERRIDE": url})
    assert run.exit_code == ExitCode.USAGE
    assert "must be an https:// URL" in run.stderr
    assert path.read_bytes() == before


def test_bad_ca_bundle_is_a_configuration_error(cli, home: Path, tmp_path: Path) -> None:
    stale(home)
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    run = cli("refresh", "--codex-home", str(home), env={
        "CODEX_REFRESH_TOKEN_URL_OVERRIDE": "https://127.0.0.1:9/oauth/token", "CODEX_CA_CERTIFICATE": str(bundle)})
    assert run.exit_code == ExitCode.USAGE
    assert "CA bundle" in run.stderr


def test_missing_and_invalid_files(cli, home: Path, token_server: TokenServer) -> None:
    home.mkdir(mode=0o700)
    assert cli("refresh", "--codex-home", str(home)).exit_code == ExitCode.MISSING
    (home / "auth.json").write_text("{broken")
    assert cli("refresh", "--codex-home", str(home)).exit_code == ExitCode.INVALID
    assert (home / "auth.json").read_text() == "{broken"
    assert cli("refresh", "--codex-home", str(home.parent / "absent")).exit_code == ExitCode.FILESYSTEM
    assert token_server.posts == 0


def test_lock_timeout(cli, home: Path, token_server: TokenServer) -> None:
    path = stale(home)
    before = path.read_bytes()
    fd = os.open(home / "auth.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        run = cli("refresh", "--codex-home", str(home), "--lock-timeout", "0.3")
    finally:
        os.close(fd)
    assert run.exit_code == ExitCode.LOCK_TIMEOUT
    assert "timed out after 0.3s waiting for" in run.stderr
    assert token_server.posts == 0
    assert path.read_bytes() == before


def test_refresh_waits_for_the_lock_then_sees_the_other_refresh(cli, home: Path, token_server: TokenServer) -> None:
    """A holder that refreshes while we wait: after the lock we re-read and do nothing."""
    path = stale(home)
    fd = os.open(home / "auth.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def holder() -> None:
        time.sleep(0.5)
        path.write_text(json.dumps(login(expires_in=7200, refresh_token="CANARY-rt-other")))
        os.close(fd)

    thread = threading.Thread(target=holder)
    thread.start()
    run = cli("refresh", "--codex-home", str(home))
    thread.join()
    assert run.exit_code == 0
    assert token_server.posts == 0
    assert json.loads(path.read_text())["tokens"]["refresh_token"] == "CANARY-rt-other"


def test_access_token_without_exp_in_answer(cli, home: Path, token_server: TokenServer) -> None:
    path = stale(home)
    assert cli("refresh", "--codex-home", str(home)).exit_code == 0
    access = json.loads(path.read_text())["tokens"]["access_token"]
    assert decode_jwt_payload(access)["exp"] > time.time() + 3000


@pytest.mark.parametrize("value", ["abc", "-5m", "1h30", "", "99999999d"])
def test_bad_durations_are_usage_errors(cli, home: Path, value: str) -> None:
    stale(home)
    run = cli("refresh", "--codex-home", str(home), "--min-ttl", value)
    assert run.exit_code == ExitCode.USAGE
    assert "--min-ttl" in run.stderr
