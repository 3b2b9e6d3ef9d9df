"""The promise under real conditions: one rotation, no lost login, zero reuse — with skewed clocks (libfaketime),
cancelled jobs (SIGINT/SIGTERM mid-POST), re-seeds, planted timestamps, Codex's own locks, short-lived tokens,
too-soon rotations and unbounded leases. Real processes against the strict token server (no reuse grace), on the
file store and on OpenBao.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import SCRUBBED, assert_no_secrets, backdated, login, write_login

from codex_ci.errors import ExitCode
from testing.checks import flock_held
from testing.targets import StoreTarget
from testing.tokenserver import TokenServer, rfc3339

LOCK = ("--lock-timeout", "60")


def faketime_cmd(offset: str | None) -> list[str]:
    if offset is None:
        return []
    binary = shutil.which("faketime")
    if binary is None:
        pytest.fail("libfaketime's `faketime` is not installed: run scripts/bootstrap", pytrace=False)
    return [binary, "-f", offset]


def environ(target: StoreTarget | None, server: TokenServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env |= (target.env if target else {}) | {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url,
                                              "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    return env | extra


def spawn(*args: str, env: dict[str, str], clock: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*faketime_cmd(clock), sys.executable, "-m", "codex_ci", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    assert_no_secrets(out, err)
    assert "Traceback" not in out + err
    return proc.returncode, err


def run(*args: str, env: dict[str, str], clock: str | None = None) -> tuple[int, str]:
    return finish(spawn(*args, env=env, clock=clock))


def put(target: StoreTarget, data: dict[str, Any], expected: str | None = None) -> str:
    return target.open().write(json.dumps(data, indent=2), expected)


def stored(target: StoreTarget) -> dict[str, Any]:
    got = target.open().read()
    assert got is not None
    data: dict[str, Any] = json.loads(got.value)
    return data


def token(path: Path) -> str:
    value: str = json.loads(path.read_text())["tokens"]["refresh_token"]
    return value


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -- 1. a runner whose clock was ahead when it rotated ------------------------------------------------------------

def test_a_login_rotated_under_a_clock_ten_minutes_ahead_loses_to_the_stores_newer_version(
        tmp_path: Path, target: StoreTarget, server: TokenServer) -> None:
    put(target, login(expires_in=-60))
    env = environ(target, server)
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    # runner A, its clock 10 minutes ahead, rotates and persists: its last_refresh is in the future
    assert run("refresh", "--store", target.url, "--codex-home", str(home_a), *LOCK, env=env, clock="+600s")[0] == 0
    # runner B (a right clock) rotates later: the store's login is newer, its last_refresh older than A's
    code, err = run("keepalive", "--store", target.url, "--codex-home", str(home_b), *LOCK, env=env)
    assert code == 0, err
    assert server.successes == 2
    # A's next job, clock right now: the store's version wins, whatever A's timestamp says
    code, err = run("refresh", "--store", target.url, "--codex-home", str(home_a), *LOCK, env=env)
    assert code == 0, err
    assert token(home_a / "auth.json") == server.current_refresh_token == stored(target)["tokens"]["refresh_token"]
    # and the login still rotates: nothing presented a spent token
    time.sleep(0)  # (the next rotation is a keepalive run elsewhere)
    code, err = run("keepalive", "--store", target.url, "--codex-home", str(tmp_path / "c"), "--max-age", "0s",
                    *LOCK, env=env)
    assert (code, server.reused, server.revoked) == (0, 0, False), err


# -- 2. a lease holder whose clock is behind ------------------------------------------------------------------------

def test_a_lease_written_by_a_clock_five_minutes_behind_is_not_taken_over(
        tmp_path: Path, target: StoreTarget, server: TokenServer) -> None:
    put(target, login(expires_in=-60))
    server.delay = 2.0  # the holder's rotation is slow
    env = environ(target, server)
    holder = spawn("refresh", "--store", target.url, "--codex-home", str(tmp_path / "a"), "--lease-ttl", "60s",
                   *LOCK, env=env, clock="-300s")
    lease = target.open().sibling("lease")
    wait_until(lambda: server.posts == 1)
    record = lease.read()
    assert record is not None and json.loads(record.value)["holder"]
    waiter = spawn("refresh", "--store", target.url, "--codex-home", str(tmp_path / "b"), *LOCK, env=env)
    assert finish(holder)[0] == 0
    code, err = finish(waiter)
    assert code == 0, err
    assert "another runner refreshed it" in err
    assert (server.posts, server.reused) == (1, 0)
    assert token(tmp_path / "b" / "auth.json") == server.current_refresh_token


def test_a_waiter_takes_over_a_dead_holders_lease_after_its_ttl_by_its_own_clock(
        tmp_path: Path, file_target: StoreTarget, server: TokenServer) -> None:
    """A record left by a dead holder, its timestamps far in the future, expires after its TTL all the same."""
    put(file_target, login(expires_in=-60))
    forever = {"holder": "dead-runner/1", "acquired_at": "2099-01-01T00:00:00Z", "expires_at": "2099-01-01T00:01:00Z",
               "ttl_seconds": 2}
    file_target.open().sibling("lease").write(json.dumps(forever), None)
    code, err = run("refresh", "--store", file_target.url, "--codex-home", str(tmp_path / "h"), "--lease-ttl", "30s",
                    "--timeout", "5", *LOCK, env=environ(file_target, server))
    assert code == 0, err
    assert "dead-runner/1" in err and "past its TTL" in err
    assert server.successes == 1


def test_a_lease_record_claiming_more_than_the_cap_is_treated_as_expired(
        tmp_path: Path, file_target: StoreTarget, server: TokenServer) -> None:
    put(file_target, login(expires_in=-60))
    greedy = {"holder": "buggy-runner/1", "acquired_at": "2026-01-01T00:00:00Z", "ttl_seconds": 10 * 365 * 86400}
    file_target.open().sibling("lease").write(json.dumps(greedy), None)
    started = time.monotonic()
    code, err = run("refresh", "--store", file_target.url, "--codex-home", str(tmp_path / "h"), *LOCK,
                    env=environ(file_target, server))
    assert code == 0, err
    assert server.successes == 1
    assert time.monotonic() - started < 60  # not ten years, nor the 180 s lease wait


@pytest.mark.parametrize("ttl", ["1000h", "16m", "0s"])
def test_a_lease_ttl_over_the_cap_is_a_usage_error(tmp_path: Path, file_target: StoreTarget, server: TokenServer,
                                                   ttl: str) -> None:
    put(file_target, login(expires_in=-60))
    code, err = run("refresh", "--store", file_target.url, "--codex-home", str(tmp_path / "h"), "--lease-ttl", ttl,
                    env=environ(file_target, server))
    assert code == ExitCode.USAGE
    assert "--lease-ttl must be more than 0 and at most 15m" in err
    assert server.posts == 0 and file_target.open().sibling("lease").read() is None


def test_a_lease_shorter_than_one_request_is_a_usage_error(tmp_path: Path, file_target: StoreTarget,
                                                          server: TokenServer) -> None:
    put(file_target, login(expires_in=-60))
    code, err = run("refresh", "--store", file_target.url, "--codex-home", str(tmp_path / "h"), "--lease-ttl", "20s",
                    "--timeout", "30", env=environ(file_target, server))
    assert code == ExitCode.USAGE and "too short for one request" in err
    assert server.posts == 0


# -- 3. a cancelled job -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_local_refresh_cancelled_mid_post_saves_the_rotation(home: Path, server: TokenServer, signum: int) -> None:
    write_login(home, login(expires_in=-60))
    server.delay = 1.5  # the endpoint has rotated; its answer is on the way
    proc = spawn("refresh", "--codex-home", str(home), *LOCK, env=environ(None, server))
    wait_until(lambda: server.posts == 1)
    proc.send_signal(signum)
    code, err = finish(proc)
    assert code == (143 if signum == signal.SIGTERM else 130), err
    assert f"interrupted by {signal.Signals(signum).name} (after finishing the rotation" in err
    assert token(home / "auth.json") == server.current_refresh_token
    assert (server.successes, server.reused) == (1, 0)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_distributed_refresh_cancelled_mid_post_saves_the_rotation_to_the_store(
        tmp_path: Path, target: StoreTarget, server: TokenServer, signum: int) -> None:
    put(target, login(expires_in=-60))
    server.delay = 1.5
    env = environ(target, server)
    proc = spawn("refresh", "--store", target.url, "--codex-home", str(tmp_path / "a"), *LOCK, env=env)
    wait_until(lambda: server.posts == 1)
    proc.send_signal(signum)
    code, err = finish(proc)
    assert code == (143 if signum == signal.SIGTERM else 130), err
    assert stored(target)["tokens"]["refresh_token"] == server.current_refresh_token
    lease = target.open().sibling("lease").read()
    assert lease is not None and json.loads(lease.value)["holder"] is None  # saved, so released
    # the next runner starts from the saved rotation, a live token: an hour later it rotates it, with no reuse
    server.delay = 0
    current = target.open().read()
    assert current is not None
    target.open().write(backdated(current.value), current.version)
    code, err = run("keepalive", "--store", target.url, "--codex-home", str(tmp_path / "b"), "--max-age", "0s",
                    *LOCK, env=env)
    assert (code, server.successes, server.reused) == (0, 2, 0), err


def test_a_signal_while_waiting_for_the_lock_stops_cleanly_and_sends_nothing(home: Path, server: TokenServer
                                                                            ) -> None:
    write_login(home, login(expires_in=-60))
    fd = os.open(home / "auth.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = spawn("refresh", "--codex-home", str(home), *LOCK, env=environ(None, server))
        time.sleep(1.0)  # it is waiting on auth.lock (or still starting: a signal then is handled the same)
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
    finally:
        os.close(fd)
    assert code == 143 and "interrupted by SIGTERM" in err and "rotation" not in err
    assert server.posts == 0


# -- 4. a re-seed of an older secret before persist --------------------------------------------------------------------

def test_reseeding_an_older_secret_after_restore_is_not_persisted_over_the_newer_login(
        tmp_path: Path, target: StoreTarget, server: TokenServer) -> None:
    now = int(time.time())
    old = login(refresh_token="CANARY-rt-L1", issued_at=now - 7200)
    new = login(refresh_token="CANARY-rt-L2", issued_at=now - 600)
    put(target, new)
    env = environ(target, server)
    home = tmp_path / "h"
    assert run("restore", "--from", target.url, "--codex-home", str(home), env=env)[0] == 0
    code, err = run("seed", "--force", "--codex-home", str(home), env=env | {"CODEX_AUTH_JSON": json.dumps(old)})
    assert code == 0, err
    code, err = run("persist", "--to", target.url, "--codex-home", str(home), env=env)
    assert code == ExitCode.CONFLICT, err
    assert "older than the login it was restored from" in err and "persist --force" in err
    assert stored(target)["tokens"]["refresh_token"] == "CANARY-rt-L2"


def test_when_both_the_home_and_the_store_changed_restore_overwrites_neither(
        tmp_path: Path, target: StoreTarget, server: TokenServer) -> None:
    put(target, login(refresh_token="CANARY-rt-base"))
    env = environ(target, server)
    home = tmp_path / "h"
    assert run("restore", "--from", target.url, "--codex-home", str(home), env=env)[0] == 0
    version = target.open().read()
    assert version is not None
    put(target, login(refresh_token="CANARY-rt-store"), version.version)
    write_login(home, login(refresh_token="CANARY-rt-local"))
    code, err = run("restore", "--from", target.url, "--codex-home", str(home), env=env)
    assert code == ExitCode.CONFLICT and "both changed" in err, err
    assert token(home / "auth.json") == "CANARY-rt-local"
    code, err = run("persist", "--to", target.url, "--codex-home", str(home), env=env)
    assert code == ExitCode.CONFLICT and "both changed" in err, err
    assert stored(target)["tokens"]["refresh_token"] == "CANARY-rt-store"
    assert run("restore", "--force", "--from", target.url, "--codex-home", str(home), env=env)[0] == 0
    assert token(home / "auth.json") == "CANARY-rt-store"


# -- 5. a planted future last_refresh ----------------------------------------------------------------------------------

FUTURE = "2099-01-01T00:00:00.000000Z"


def test_a_planted_future_login_never_wins_and_persist_force_recovers(
        tmp_path: Path, target: StoreTarget, server: TokenServer) -> None:
    now = int(time.time())
    put(target, login(refresh_token="CANARY-rt-planted", last_refresh=FUTURE, issued_at=now + 10 * 86400))
    env = environ(target, server)
    relogin = tmp_path / "trusted"
    write_login(relogin, login(refresh_token="CANARY-rt-relogin", issued_at=now - 60))
    code, err = run("persist", "--to", target.url, "--codex-home", str(relogin), env=env)
    assert code == 0, err
    assert stored(target)["tokens"]["refresh_token"] == "CANARY-rt-relogin"

    # a login genuinely newer than this copy: persist refuses (non-zero, with the way out), --force recovers
    version = target.open().read()
    assert version is not None
    put(target, login(refresh_token="CANARY-rt-newer", issued_at=now), version.version)
    other = tmp_path / "other"
    write_login(other, login(refresh_token="CANARY-rt-mine", issued_at=now - 3600))
    code, err = run("persist", "--to", target.url, "--codex-home", str(other), env=env)
    assert code == ExitCode.CONFLICT and "persist --force" in err, err
    assert stored(target)["tokens"]["refresh_token"] == "CANARY-rt-newer"
    code, err = run("persist", "--force", "--to", target.url, "--codex-home", str(other), env=env)
    assert code == 0, err
    assert stored(target)["tokens"]["refresh_token"] == "CANARY-rt-mine"


def test_seed_if_newer_replaces_a_planted_future_login(home: Path, server: TokenServer) -> None:
    write_login(home, login(refresh_token="CANARY-rt-planted", last_refresh=FUTURE))
    seed = login(refresh_token="CANARY-rt-seed")
    code, err = run("seed", "--if-newer", "--codex-home", str(home),
                    env=environ(None, server, CODEX_AUTH_JSON=json.dumps(seed)))
    assert code == 0, err
    assert "ahead of this machine's clock" in err
    assert token(home / "auth.json") == "CANARY-rt-seed"


def test_keepalive_max_age_rotates_a_planted_future_login(tmp_path: Path, target: StoreTarget, server: TokenServer
                                                          ) -> None:
    put(target, login(expires_in=86400, last_refresh=FUTURE))
    code, err = run("keepalive", "--store", target.url, "--max-age", "1d", "--codex-home", str(tmp_path / "h"),
                    *LOCK, env=environ(target, server))
    assert code == 0, err
    assert server.successes == 1
    assert stored(target)["tokens"]["refresh_token"] == server.current_refresh_token


# -- 6. Codex's own lock order ----------------------------------------------------------------------------------------

def test_refresh_holds_both_codex_locks_for_the_whole_post(home: Path, server: TokenServer) -> None:
    write_login(home, login(expires_in=-60))
    server.delay = 1.5
    proc = spawn("refresh", "--codex-home", str(home), *LOCK, env=environ(None, server))
    wait_until(lambda: server.posts == 1)
    during = flock_held(home / "auth.lock"), flock_held(home / "auth.json.lock")
    assert finish(proc)[0] == 0
    assert during == (True, True)
    assert (flock_held(home / "auth.lock"), flock_held(home / "auth.json.lock")) == (False, False)


def test_restore_waits_for_a_process_holding_auth_lock(tmp_path: Path, file_target: StoreTarget,
                                                       server: TokenServer) -> None:
    """auth.lock is taken first, as Codex takes it: a holder of auth.lock alone keeps codex-ci out."""
    put(file_target, login(refresh_token="CANARY-rt-stored"))
    home = tmp_path / "h"
    write_login(home, login(refresh_token="CANARY-rt-local", issued_at=int(time.time()) - 10 * 86400))
    fd = os.open(home / "auth.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        code, err = run("restore", "--from", file_target.url, "--codex-home", str(home), "--lock-timeout", "1",
                        env=environ(file_target, server))
    finally:
        os.close(fd)
    assert code == ExitCode.LOCK_TIMEOUT and "auth.lock" in err, err
    assert token(home / "auth.json") == "CANARY-rt-local"


# -- 7. short-lived access tokens --------------------------------------------------------------------------------------

def test_sixteen_local_runners_with_thirty_minute_tokens_rotate_once(home: Path, server: TokenServer) -> None:
    server.access_ttl = 1800  # below --min-ttl 1h
    write_login(home, login(expires_in=-60))
    env = environ(None, server)
    procs = [spawn("refresh", "--codex-home", str(home), "--min-ttl", "1h", *LOCK, env=env) for _ in range(16)]
    results = [finish(p) for p in procs]
    assert [code for code, _ in results] == [0] * 16, results
    # the later ones started after the first rotation: the new token is fresh for them (half its life is left)
    procs = [spawn("refresh", "--codex-home", str(home), "--min-ttl", "1h", *LOCK, env=env) for _ in range(4)]
    assert [finish(p)[0] for p in procs] == [0] * 4
    assert (server.posts, server.reused) == (1, 0)


def test_eight_store_runners_with_thirty_minute_tokens_rotate_once(tmp_path: Path, target: StoreTarget,
                                                                   server: TokenServer) -> None:
    server.access_ttl = 1800
    put(target, login(expires_in=-60))
    env = environ(target, server)
    procs = [spawn("refresh", "--store", target.url, "--codex-home", str(tmp_path / f"r{i}"), "--min-ttl", "1h",
                   *LOCK, env=env) for i in range(8)]
    results = [finish(p) for p in procs]
    assert [code for code, _ in results] == [0] * 8, results
    assert (server.posts, server.reused) == (1, 0)
    live = server.current_refresh_token
    assert all(token(tmp_path / f"r{i}" / "auth.json") == live for i in range(8))


# -- 8. too-soon rotations --------------------------------------------------------------------------------------------

def test_a_forced_refresh_seconds_after_a_rotation_sends_nothing(home: Path, server: TokenServer) -> None:
    write_login(home, login(expires_in=-60))
    env = environ(None, server)
    assert run("refresh", "--codex-home", str(home), *LOCK, env=env)[0] == 0
    code, err = run("refresh", "--force", "--codex-home", str(home), *LOCK, env=env)
    assert code == 0, err
    assert "never rotated twice within a minute" in err
    assert server.posts == 1


def test_a_keepalive_seconds_after_a_rotation_sends_nothing(tmp_path: Path, target: StoreTarget,
                                                            server: TokenServer) -> None:
    put(target, login(expires_in=-60))
    env = environ(target, server)
    assert run("refresh", "--store", target.url, "--codex-home", str(tmp_path / "a"), *LOCK, env=env)[0] == 0
    code, err = run("keepalive", "--store", target.url, "--codex-home", str(tmp_path / "b"), *LOCK, env=env)
    assert code == 0, err
    assert "never rotated twice within a minute" in err
    assert server.posts == 1


def test_earliest_refresh_at_from_the_endpoint_is_honoured(home: Path, server: TokenServer) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    server.extra_answer = {"earliest_refresh_at": rfc3339(later.timestamp())}
    write_login(home, login(expires_in=-60))
    env = environ(None, server)
    assert run("refresh", "--codex-home", str(home), *LOCK, env=env)[0] == 0
    # make the rotation look old, so that only earliest_refresh_at holds the next one off
    data = json.loads((home / "auth.json").read_text())
    data["last_refresh"] = rfc3339(time.time() - 3600)
    write_login(home, data)
    code, err = run("refresh", "--force", "--codex-home", str(home), *LOCK, env=env)
    assert code == 0, err
    assert "asked for no refresh before" in err
    assert server.posts == 1


def test_an_expired_access_token_is_refreshed_even_if_last_refresh_is_recent(home: Path, server: TokenServer
                                                                            ) -> None:
    """A seed stamped "now" (or a skewed clock) must not keep an expired login from being refreshed."""
    write_login(home, login(expires_in=-60, last_refresh=rfc3339(time.time())))
    code, err = run("refresh", "--codex-home", str(home), *LOCK, env=environ(None, server))
    assert code == 0, err
    assert server.successes == 1


# -- 9. a request whose headers trickle in -----------------------------------------------------------------------------

class TrickleServer:
    """Accepts a connection and sends an HTTP answer one byte every 0.2 s (about 20 s in all)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/oauth/token"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            answer = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 80 + b"\r\nContent-Length: 2\r\n\r\n{}"
            with conn:
                for byte in answer:
                    if self.stop.wait(0.2):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_the_whole_answer_has_one_deadline_headers_included(home: Path) -> None:
    trickle = TrickleServer()
    try:
        write_login(home, login(expires_in=-60))
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED} | {
            "CODEX_REFRESH_TOKEN_URL_OVERRIDE": trickle.url}
        started = time.monotonic()
        code, err = run("refresh", "--timeout", "1", "--codex-home", str(home), env=env)
        elapsed = time.monotonic() - started
    finally:
        trickle.close()
    assert code == ExitCode.TRANSIENT and "no answer from 127.0.0.1 in time" in err, err
    assert elapsed < 12, elapsed  # the answer alone would take 20 s; before, only each read was bounded
