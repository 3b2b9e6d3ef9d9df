"""Crash consistency: ``kill -9`` of real ``python -m codex_ci`` processes at random moments and at exact steps.

What these tests prove, after every kill:

* ``auth.json`` is absent only where it was absent before, and otherwise a regular 0600 file holding a complete
  login (valid JSON that AuthFile.parse accepts) whose bytes are the old file's or exactly one complete new
  version: never empty, never partial, never a mix.
* A login the token endpoint rotated is kept (in auth.json, or in the store), except in the documented window:
  the process died after the endpoint rotated and before it wrote auth.json (README, "refresh --store": the one
  window in which a rotation can be lost). Each trial is classified with the token server's timestamped request
  log (rotation time, answer time) against the kill time: no rotation / kept / lost in the window (killed while
  the POST was in flight, or after the answer but before the write) / lost outside the window, which must be 0.
* Nothing stale blocks the next run: a killed process's flock is released by the kernel, so the next
  ``refresh``/``status``/``seed``/``restore``/``persist`` in that home exits 0 with ``--lock-timeout 5`` (exit
  codes are asserted, never durations); and the temp files a killed writer leaves (``.auth.json.*.tmp``, a file
  store's ``.NAME.*.tmp``) are removed by the next writer.
* A store (the file store, and OpenBao as the real server store) is never left with a partial or invalid value,
  its version only moves forward, by exactly one per write: a killed ``persist`` leaves it at the old value or
  the new one, and the next ``persist`` completes it without writing twice.

Random moments: each command's normal run is timed first; each trial then kills at a uniform time over 0-1.2x
that life (plus the token server's random answer delay, which opens the POST window). Trial counts come from
testing/soak.py (fast in scripts/test, full under scripts/soak). Every message carries the seed: rerun with
CODEX_CI_CRASH_SEED=N to replay the same draws. Each test prints its tally (stderr; with
CODEX_CI_CRASH_REPORT=FILE also appended to FILE). The next run after a kill is a real process for the first
trial (every fourth under soak) and the in-process CLI otherwise: the same code without an interpreter start,
which is most of a trial's cost on a 2-CPU runner.

Then deterministic kills: a killed writer's leftover temp files; SIGKILL at each step of an atomic write (a
start-up hook, crashkit.KILLPOINT); processes killed while holding auth.json.lock or a file store's lock. Last,
regression tests of the bugs it found.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Run, backdate, backdated, login, run_process, write_login

from codex_ci.authfile import AuthFile, format_time, utcnow
from codex_ci.errors import ExitCode
from codex_ci.home import CONFIG_LINE
from codex_ci.state import STATE_NAME, digest
from codex_ci.stores import Store
from testing.checks import flock_held
from testing.crashkit import (
    KILLPOINT,
    SEED,
    CrashTokenServer,
    Outcome,
    Tally,
    calibrate,
    check_auth_file,
    child_env,
    classify_rotation,
    complete_login,
    killpoint_env,
    mode,
    refresh_token_of,
    rng_for,
    rotated,
    run_and_kill,
    temp_files,
    wait_stopped,
)
from testing.soak import SOAK, scale
from testing.targets import StoreTarget

STORE_KINDS = ["file", "vault"]
CALIBRATION_RUNS = 3 if SOAK else 1
LOCK = ["--lock-timeout", "5"]
# The refresh lease of the distributed trials: a POST needs --timeout 1 twice (connect, answer) plus a margin of a
# quarter of the lease to start, so this leaves 5.5 s for the restore and the locks before it (2.5 s was seen to
# run out with the load average at 6 on two cores); a killed holder's lease is waited out for this long by the next run.
LEASE_TTL = "10s"
REFRESHED = "codex-ci: refreshed:"  # logged once the new login is written (refresh: auth.json; --store: both)


def as_file(data: dict[str, Any]) -> bytes:
    """A login in the exact bytes codex-ci writes (so a restore of it is byte-identical)."""
    return AuthFile.parse(json.dumps(data), "login").to_bytes()


def as_stored(data: dict[str, Any]) -> str:
    """The same login as a store holds it: the text of ``as_file``."""
    return as_file(data).decode()


class Clock:
    """Strictly increasing last_refresh values in the past: each new login is newer than the one before."""

    def __init__(self) -> None:
        self.base, self.step = utcnow() - timedelta(days=1), 0

    def next(self) -> str:
        self.step += 1
        return format_time(self.base + timedelta(seconds=self.step))


def describe(outcome: Outcome, kill_after: float | None) -> str:
    planned = "none" if kill_after is None else f"{kill_after:.3f}s"
    how = "killed" if outcome.killed else f"exited {outcome.returncode}"
    return f"[CODEX_CI_CRASH_SEED={SEED} kill at {planned}, {how} after {outcome.elapsed:.3f}s]"


def follow(cli: Any, index: int, *args: str, env: dict[str, str]) -> Run:
    """The next run after a kill: a real process for the first trial (and every fourth one in the soak), the
    in-process CLI otherwise."""
    if index == 0 or (SOAK and index % 4 == 0):
        return run_process(*args, env=env)
    return cli(*args, env=env)


def healthy(cli: Any, home: Path, ctx: str) -> None:
    """``status`` takes the (shared) lock and reads a complete, healthy login."""
    run = cli("status", "--codex-home", str(home), "--min-ttl", "0s", *LOCK)
    assert run.exit_code == 0, f"{ctx}: status after the kill exited {run.exit_code}: {run.stderr}"


def check_config(home: Path, ctx: str) -> None:
    """config.toml is absent or complete (it is written atomically too)."""
    path = home / "config.toml"
    if os.path.lexists(path):
        assert path.read_bytes() == CONFIG_LINE.encode(), f"{ctx}: config.toml is partial or foreign"
        assert mode(path) == 0o600, f"{ctx}: config.toml has mode {mode(path):04o}"


def check_home(home: Path, ctx: str) -> None:
    if home.exists():
        assert mode(home) == 0o700, f"{ctx}: CODEX_HOME has mode {mode(home):04o}"
    check_config(home, ctx)
    state = home / STATE_NAME
    if os.path.lexists(state):
        assert mode(state) == 0o600
        try:
            json.loads(state.read_bytes())
        except ValueError:
            raise AssertionError(f"{ctx}: {STATE_NAME} is partial") from None
    for tmp in temp_files(home, "auth.json"):
        assert mode(tmp) == 0o600, f"{ctx}: a temp file of auth.json has mode {mode(tmp):04o}"


def draw_kill(rng: Any, life: float) -> float:
    return rng.uniform(0.0, 1.2 * life)


def run_trials(tally: Tally, rng: Any, n: int, trial: Callable[[int, float | None, float], Outcome],
               *, delays: bool) -> None:
    """Calibrate (uninterrupted runs, fully checked too), then ``n`` trials killed at random moments."""
    started = time.monotonic()
    life = calibrate(lambda: trial(-1, None, 0.0), CALIBRATION_RUNS)
    tally.life = life
    for index in range(n):
        delay = rng.uniform(0.0, 0.4) if delays else 0.0
        trial(index, draw_kill(rng, life + delay), delay)
        tally.trials += 1
    tally.wall = time.monotonic() - started
    tally.report()


@pytest.fixture
def crash_server() -> Iterator[CrashTokenServer]:
    """Every login it issues expires within the default --min-ttl (1h) and says it was issued a day ago (so half
    its lifetime is past): every refresh run rotates, once the login is aged past the one-minute guard."""
    with CrashTokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=1800, issued_age=86400) as server:
        yield server


def check_posts(posts: list[dict[str, Any]], outcome: Outcome, ctx: str, tally: Tally) -> None:
    """Every POST rotated, except one a killed client sent only in part (the server reads a short body)."""
    for post in posts:
        if post["outcome"] == "invalid_request" and outcome.killed:
            tally.notes["truncated-post"] += 1
            continue
        assert post["outcome"] == "rotated", f"{ctx}: the token endpoint answered {post['outcome']}"


def assert_chain_alive(server: CrashTokenServer, ctx: str) -> None:
    assert server.reused == 0 and not server.revoked, f"{ctx}: a spent refresh token was presented: login revoked"


# -- seed -------------------------------------------------------------------------------------------------------

SEED_VARIANTS = {"absent": [], "force": ["--force"], "if-newer": ["--if-newer"]}


def test_kill_seed_at_random_points(cli: Any, tmp_path: Path) -> None:
    """``seed`` killed anywhere (into an empty home, ``--force`` and ``--if-newer`` over an older file) leaves no
    auth.json, the old file or the complete seed, 0600 in a 0700 home; the same ``seed`` run again exits 0, writes
    the seed and removes the temp file the killed one left."""
    rng, tally, clock = rng_for("seed"), Tally("seed"), Clock()

    def trial(index: int, kill_after: float | None, delay: float) -> Outcome:
        tag = f"{index}" if index >= 0 else f"calibration-{tally.notes['calibration']}"
        tally.notes["calibration"] += index < 0
        variant = list(SEED_VARIANTS)[index % 3] if index >= 0 else "force"
        home = tmp_path / f"home-{tag}"
        old = None
        if variant != "absent":
            old = write_login(home, login(refresh_token=f"CANARY-rt-old-{tag}", last_refresh=clock.next())).read_bytes()
        data = login(refresh_token=f"CANARY-rt-seed-{tag}", last_refresh=clock.next())
        new = as_file(data)
        args = ["seed", "--codex-home", str(home), *LOCK, *SEED_VARIANTS[variant]]
        env = {"CODEX_AUTH_JSON": json.dumps(data)}
        outcome = run_and_kill(args, env, kill_after)
        ctx = f"seed trial {tag} ({variant}) {describe(outcome, kill_after)}"
        raw = check_auth_file(home / "auth.json", ctx, exact={old, new})
        check_home(home, ctx)
        for tmp in temp_files(home, "auth.json"):
            assert new.startswith(tmp.read_bytes()), f"{ctx}: a temp file holds something but a prefix of the seed"
        if not outcome.killed:
            assert outcome.returncode == 0, f"{ctx}: {outcome.stderr}"
            assert raw == new, f"{ctx}: a completed seed did not write the seed"
        if index >= 0:
            tally.stages["completed" if not outcome.killed else "after-write" if raw == new else "before-write"] += 1
            tally.notes["auth-tmp-left"] += bool(temp_files(home, "auth.json"))
            tally.notes["config-tmp-left"] += bool(temp_files(home, "config.toml"))
        run = follow(cli, index, *args, env=env)
        assert run.exit_code == 0, f"{ctx}: the next seed exited {run.exit_code}: {run.stderr}"
        assert (home / "auth.json").read_bytes() == new, f"{ctx}: the next seed did not leave the seed in place"
        assert temp_files(home, "auth.json") == [], f"{ctx}: the next seed left the killed writer's temp file"
        check_home(home, ctx)
        healthy(cli, home, ctx)
        return outcome

    run_trials(tally, rng, scale(8, 60), trial, delays=False)


# -- refresh (local) ------------------------------------------------------------------------------------------------


def test_kill_refresh_at_random_points(cli: Any, home: Path, crash_server: CrashTokenServer) -> None:
    """``refresh`` killed anywhere, with the token endpoint answering after a random delay: auth.json is the old
    file or exactly the old file refreshed with the endpoint's answer; a rotation is lost only when the kill fell
    between the rotation and the write; the next ``status`` and ``refresh`` exit 0 (no stale lock) and the
    refresh removes the killed writer's temp file. A lost rotation is then replaced by a new login (what a
    person would do), so that the chain goes on; no spent token is ever presented."""
    rng, tally, server = rng_for("refresh"), Tally("refresh"), crash_server
    path = write_login(home, login(expires_in=1800, refresh_token=server.current_refresh_token))
    env = {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url}
    args = ["refresh", "--codex-home", str(home), *LOCK]

    def trial(index: int, kill_after: float | None, delay: float) -> Outcome:
        backdate(home)  # an hour passes between jobs: a login is never rotated twice within a minute
        before, inode = path.read_bytes(), path.stat().st_ino
        start = len(server.requests)
        server.delay = delay
        outcome = run_and_kill(args, env, kill_after)
        server.quiesce()
        ctx = f"refresh trial {index} (delay {delay:.3f}s) {describe(outcome, kill_after)}"
        posts = server.posts_since(start)
        check_posts(posts, outcome, ctx, tally)
        assert_chain_alive(server, ctx)
        answers = [(before, p["response"]) for p in posts if p["response"]]
        raw = check_auth_file(path, ctx, exact={before}, rotations=answers)
        check_home(home, ctx)
        kept = bool(answers) and refresh_token_of(raw) == answers[0][1]["refresh_token"]
        if not outcome.killed:
            assert outcome.returncode == 0 and kept, f"{ctx}: a completed refresh did not keep its rotation"
        if index >= 0:
            kind = classify_rotation(tally, posts, outcome, kept, ctx, written_marker=REFRESHED,
                                     untouched=path.stat().st_ino == inode)
            assert kind != "lost-outside-window", f"{ctx}: a rotation was lost outside the documented window"
            tally.stages["completed" if not outcome.killed else "after-write" if raw != before else "before-write"] += 1
            tally.notes["auth-tmp-left"] += bool(temp_files(home, "auth.json"))
        if answers and not kept:  # lost in the window: the login is dead; start a new one
            write_login(home, login(expires_in=1800, refresh_token=server.current_refresh_token))
        healthy(cli, home, ctx)
        server.delay = 0.0
        run = follow(cli, index, *args, env=env)
        assert run.exit_code == 0, f"{ctx}: the next refresh exited {run.exit_code}: {run.stderr}"
        assert refresh_token_of(path.read_bytes()) == server.current_refresh_token, f"{ctx}: not the live token"
        assert temp_files(home, "auth.json") == [], f"{ctx}: the next refresh left the killed writer's temp file"
        assert_chain_alive(server, ctx)
        return outcome

    run_trials(tally, rng, scale(10, 80), trial, delays=True)


# -- the stores -----------------------------------------------------------------------------------------------------


def store_path(target: StoreTarget) -> Path | None:
    return Path(target.url.removeprefix("file://")) if target.kind == "file" else None


def read_store(store: Store) -> tuple[bytes, int] | None:
    """The stored login's UTF-8 bytes (comparable with auth.json's) and its version."""
    got = store.read()
    return None if got is None else (got.value.encode(), int(got.version))


def check_store(store: Store, target: StoreTarget, ctx: str, old: tuple[bytes, int],
                new_ok: Callable[[bytes], bool]) -> tuple[bytes, int]:
    """The stored login is complete; it is the old (value, version), or a new value at exactly version + 1."""
    path = store_path(target)
    if path is not None:  # the file store's file itself is never partial
        for file in (path, path.with_name(path.name + ".lease")):
            if file.exists():
                assert mode(file) == 0o600, f"{ctx}: {file.name} has mode {mode(file):04o}"
                try:
                    record = json.loads(file.read_bytes())
                except ValueError:
                    raise AssertionError(f"{ctx}: the file store's {file.name} is partial") from None
                assert isinstance(record.get("version"), int) and isinstance(record.get("value"), str), ctx
    current = read_store(store)
    assert current is not None, f"{ctx}: the store lost its login"
    value, version = current
    complete_login(value, "the stored login", ctx)
    assert version >= old[1], f"{ctx}: the store's version went back from {old[1]} to {version}"
    if current != old:
        assert version == old[1] + 1, f"{ctx}: the store moved from version {old[1]} to {version}, not one write"
        assert new_ok(value), f"{ctx}: the store holds a complete login, but neither the old one nor the new one"
    return current


def check_lease(store: Store, ctx: str, before: int) -> tuple[int, bool]:
    """The lease record is complete JSON; its version only moves forward. Returns (version, held)."""
    got = store.sibling("lease").read()
    if got is None:
        return 0, False
    try:
        record = json.loads(got.value)
    except ValueError:
        raise AssertionError(f"{ctx}: the lease record is partial") from None
    assert int(got.version) >= before, f"{ctx}: the lease's version went back"
    return int(got.version), record.get("holder") is not None


def store_temp_files(target: StoreTarget) -> list[Path]:
    path = store_path(target)
    if path is None:
        return []
    return temp_files(path.parent, path.name) + temp_files(path.parent, path.name + ".lease")


def check_state(home: Path, ctx: str, versions: set[int]) -> None:
    state = home / STATE_NAME
    if os.path.lexists(state):
        recorded = int(json.loads(state.read_bytes())["version"])
        assert recorded in versions, f"{ctx}: {STATE_NAME} records version {recorded}, not one of {versions}"


@pytest.fixture(params=STORE_KINDS)
def crash_target(request: pytest.FixtureRequest) -> StoreTarget:
    target: StoreTarget = request.getfixturevalue(f"{request.param}_target")
    return target


def test_kill_restore_at_random_points(cli: Any, home: Path, crash_target: StoreTarget) -> None:
    """``restore`` killed anywhere while the store holds a newer login: auth.json is the old file or the stored
    login, never partial; the store is untouched; the state file is complete and names the old or the new version;
    the next ``restore`` exits 0, writes the stored login, records its version and removes any temp file."""
    target = crash_target
    rng, tally, clock = rng_for(f"restore-{target.kind}"), Tally(f"restore/{target.kind}"), Clock()
    store = target.open()
    path = home / "auth.json"
    start = as_stored(login(refresh_token="CANARY-rt-restore-start", last_refresh=clock.next()))
    version = int(store.write(start, None))
    args = ["restore", "--from", target.url, "--codex-home", str(home), *LOCK]
    assert cli(*args, env=target.env).exit_code == 0

    def trial(index: int, kill_after: float | None, delay: float) -> Outcome:
        nonlocal version
        before = path.read_bytes()
        newer = as_file(login(refresh_token=f"CANARY-rt-restore-{index}-{clock.step}", last_refresh=clock.next()))
        new_version = int(store.write(newer.decode(), str(version)))
        outcome = run_and_kill(args, target.env, kill_after)
        ctx = f"restore/{target.kind} trial {index} {describe(outcome, kill_after)}"
        raw = check_auth_file(path, ctx, exact={before, newer})
        check_home(home, ctx)
        check_state(home, ctx, {version, new_version})
        assert read_store(store) == (newer, new_version), f"{ctx}: restore changed the store"
        if not outcome.killed:
            assert outcome.returncode == 0 and raw == newer, f"{ctx}: {outcome.stderr}"
        if index >= 0:
            tally.stages["completed" if not outcome.killed else "after-write" if raw == newer else "before-write"] += 1
            tally.notes["auth-tmp-left"] += bool(temp_files(home, "auth.json"))
            tally.rotations["none"] += 1
        run = follow(cli, index, *args, env=target.env)
        assert run.exit_code == 0, f"{ctx}: the next restore exited {run.exit_code}: {run.stderr}"
        assert path.read_bytes() == newer, f"{ctx}: the next restore did not bring the stored login"
        check_state(home, ctx, {new_version})
        assert temp_files(home, "auth.json") == [], f"{ctx}: a killed writer's temp file is still there"
        healthy(cli, home, ctx)
        version = new_version
        return outcome

    run_trials(tally, rng, scale(3, 25), trial, delays=False)


def test_kill_persist_at_random_points(cli: Any, home: Path, crash_target: StoreTarget) -> None:
    """``persist`` killed anywhere after the local login rotated: the store holds the old login at its version or
    the new one at exactly version + 1, never a partial value; auth.json is untouched; the next ``persist`` exits
    0 and leaves the new login at version + 1 (a killed persist whose write landed is not written twice) and no
    temp file of the file store."""
    target = crash_target
    rng, tally, clock = rng_for(f"persist-{target.kind}"), Tally(f"persist/{target.kind}"), Clock()
    store = target.open()
    path = home / "auth.json"
    store.write(as_stored(login(refresh_token="CANARY-rt-persist-start", last_refresh=clock.next())), None)
    assert cli("restore", "--from", target.url, "--codex-home", str(home), env=target.env).exit_code == 0
    args = ["persist", "--to", target.url, "--codex-home", str(home), *LOCK]

    def trial(index: int, kill_after: float | None, delay: float) -> Outcome:
        old = read_store(store)
        assert old is not None
        newer = as_file(login(refresh_token=f"CANARY-rt-persist-{index}-{clock.step}", last_refresh=clock.next()))
        write_login(home, newer)  # Codex refreshed the login during the job
        outcome = run_and_kill(args, target.env, kill_after)
        ctx = f"persist/{target.kind} trial {index} {describe(outcome, kill_after)}"
        check_auth_file(path, ctx, exact={newer})
        check_home(home, ctx)
        value, version = check_store(store, target, ctx, old, lambda value: value == newer)
        check_state(home, ctx, {old[1], old[1] + 1})
        if not outcome.killed:
            assert outcome.returncode == 0 and value == newer, f"{ctx}: {outcome.stderr}"
        if index >= 0:
            tally.stages["completed" if not outcome.killed else "after-store-write" if value == newer
                         else "before-store-write"] += 1
            tally.notes["store-tmp-left"] += bool(store_temp_files(target))
            tally.rotations["kept"] += 1  # the rotated login is in auth.json, which persist never writes
        run = follow(cli, index, *args, env=target.env)
        assert run.exit_code == 0, f"{ctx}: the next persist exited {run.exit_code}: {run.stderr}"
        assert read_store(store) == (newer, old[1] + 1), f"{ctx}: the next persist did not leave exactly one write"
        state = json.loads((home / STATE_NAME).read_bytes())
        assert int(state["version"]) == old[1] + 1 and state["local_digest"] == digest(newer), ctx
        assert store_temp_files(target) == [], f"{ctx}: the file store's temp file is still there"
        healthy(cli, home, ctx)
        return outcome

    run_trials(tally, rng, scale(4, 35), trial, delays=False)


def test_kill_distributed_refresh_at_random_points(cli: Any, tmp_path: Path, crash_target: StoreTarget,
                                                   crash_server: CrashTokenServer) -> None:
    """``refresh --store`` killed anywhere on a fresh runner (restore, lease, POST with a random delay, write,
    persist, release): auth.json is absent, the stored login or exactly its refresh; the store holds the old login
    or that same refreshed file at version + 1; the lease record is complete. A rotation is lost only when the
    kill fell between the rotation and the local write; once auth.json holds it, the next ``refresh --store`` in
    that home heals the store from it (the chain goes on: no spent token is ever presented). The next run exits 0
    once a dead holder's lease expires (LEASE_TTL), leaves auth.json equal to the store, and no temp file."""
    target, server = crash_target, crash_server
    rng, tally, store = rng_for(f"refresh-store-{target.kind}"), Tally(f"refresh-store/{target.kind}"), target.open()
    store.write(as_stored(login(expires_in=1800, refresh_token=server.current_refresh_token,
                                last_refresh=format_time(utcnow() - timedelta(hours=1)))), None)
    env = target.env | {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url}

    def trial(index: int, kill_after: float | None, delay: float) -> Outcome:
        tag = f"{index}" if index >= 0 else f"calibration-{tally.notes['calibration']}"
        tally.notes["calibration"] += index < 0
        home = tmp_path / f"runner-{tag}"  # an ephemeral runner
        args = ["refresh", "--store", target.url, "--codex-home", str(home), *LOCK, "--lease-ttl", LEASE_TTL,
                "--timeout", "1", "--lease-wait", "60"]
        current = store.read()  # an hour passes between jobs: a login is never rotated twice within a minute
        assert current is not None
        store.write(backdated(current.value), current.version)
        old = read_store(store)
        assert old is not None
        lease_version, _ = check_lease(store, "before", 0)
        start = len(server.requests)
        server.delay = delay
        outcome = run_and_kill(args, env, kill_after)
        server.quiesce()
        ctx = f"refresh-store/{target.kind} trial {tag} (delay {delay:.3f}s) {describe(outcome, kill_after)}"
        posts = server.posts_since(start)
        check_posts(posts, outcome, ctx, tally)
        assert_chain_alive(server, ctx)
        answers = [(old[0], p["response"]) for p in posts if p["response"]]
        raw = check_auth_file(home / "auth.json", ctx, exact={None, old[0]}, rotations=answers)
        check_home(home, ctx)
        value, version = check_store(store, target, ctx, old,
                                     lambda value: value == raw and any(rotated(b, r, value) for b, r in answers))
        _, lease_held = check_lease(store, ctx, lease_version)
        new_rt = answers[0][1]["refresh_token"] if answers else None
        kept = new_rt is not None and new_rt in (refresh_token_of(raw), refresh_token_of(value))
        if not outcome.killed:
            assert outcome.returncode == 0 and kept and value == raw, f"{ctx}: {outcome.stderr}"
        if index >= 0:
            kind = classify_rotation(tally, posts, outcome, kept, ctx, written_marker=REFRESHED)
            assert kind != "lost-outside-window", f"{ctx}: a rotation was lost outside the documented window"
            if kind == "kept" and value != raw:
                tally.rotations["kept-local-only"] += 1  # the store is behind until the next run in this home
            stage = ("completed" if not outcome.killed else "nothing-written" if raw is None
                     else "restored" if raw == old[0] else "rotated-local" if value == old[0] else "rotated+stored")
            tally.stages[stage] += 1
            tally.notes["lease-left-held"] += lease_held
            tally.notes["auth-tmp-left"] += bool(temp_files(home, "auth.json"))
            tally.notes["store-tmp-left"] += bool(store_temp_files(target))
        if answers and not kept:  # lost in the window: the login is dead; put a new one in the store
            store.write(as_stored(login(expires_in=1800, refresh_token=server.current_refresh_token,
                                        last_refresh=format_time(utcnow()))), str(version))
        server.delay = 0.0
        run = follow(cli, index, *args, env=env)
        assert run.exit_code == 0, f"{ctx}: the next refresh --store exited {run.exit_code}: {run.stderr}"
        assert_chain_alive(server, ctx)
        after = read_store(store)
        assert after is not None and after[1] >= version, f"{ctx}: the store went back"
        assert value == raw or after[1] > version, f"{ctx}: the next run did not heal the store"
        local = (home / "auth.json").read_bytes()
        assert local == after[0], f"{ctx}: auth.json and the store differ after the next run"
        assert refresh_token_of(local) == server.current_refresh_token, f"{ctx}: not the live refresh token"
        assert temp_files(home, "auth.json") == [], f"{ctx}: a killed writer's temp file is still there"
        assert store_temp_files(target) == [], f"{ctx}: the file store's temp file is still there"
        check_home(home, ctx)
        healthy(cli, home, ctx)
        return outcome

    run_trials(tally, rng, scale(4, 40), trial, delays=True)


# -- deterministic: a killed writer's temp file, each step of the atomic write, a killed lock holder --------------


@pytest.mark.parametrize("writer", ["seed --force", "refresh", "restore"])
def test_stale_temp_files_of_a_killed_writer_are_cleaned(cli: Any, home: Path, tmp_path: Path, writer: str) -> None:
    """What a writer killed after writing its temp file and before the rename leaves (``.auth.json.<x>.tmp`` with
    part of a login, and an empty one) changes nothing for a reader (``status`` exits 0 and leaves them), and the
    next writer, whichever it is, removes them and leaves a complete auth.json."""
    old = login(expires_in=1800, refresh_token="CANARY-rt-0", last_refresh=format_time(utcnow() - timedelta(hours=2)))
    path = write_login(home, as_file(old))
    partial = as_file(login(refresh_token="CANARY-rt-half"))
    stale = [home / ".auth.json.k1lled0a.tmp", home / ".auth.json.k1lled0b.tmp"]
    stale[0].write_bytes(partial[: len(partial) // 2])
    stale[1].write_bytes(b"")
    for tmp in stale:
        tmp.chmod(0o600)
    status = cli("status", "--codex-home", str(home), "--min-ttl", "0s", *LOCK)
    assert status.exit_code == 0, status.stderr
    assert all(tmp.exists() for tmp in stale), "a reader removed a writer's temp file"
    with CrashTokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=1800) as server:
        newer = login(refresh_token="CANARY-rt-new", last_refresh=format_time(utcnow()))
        env: dict[str, str] = {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url, "CODEX_AUTH_JSON": json.dumps(newer)}
        extra: list[str] = []
        if writer == "restore":
            url = f"file://{tmp_path / 'store' / 'codex.json'}"
            from codex_ci.stores import open_store

            open_store(url).write(as_stored(newer), None)
            extra = ["--from", url]
        run = run_process(*writer.split(), "--codex-home", str(home), *extra, *LOCK, env=env)
        assert run.exit_code == 0, run.stderr
        expected_rt = server.current_refresh_token if writer == "refresh" else "CANARY-rt-new"
    assert [p for p in stale if p.exists()] == [], "the next writer left a killed writer's temp file"
    complete_login(path.read_bytes(), "auth.json", writer)
    assert refresh_token_of(path.read_bytes()) == expected_rt
    assert mode(path) == 0o600


@pytest.mark.parametrize("stage", ["created", "partial", "written", "synced", "renamed"])
def test_seed_killed_at_each_step_of_the_atomic_write(cli: Any, home: Path, stage: str) -> None:
    """``seed --force`` killed at each step of its write (temp file created; half written; written, not fsynced;
    fsynced, not renamed; renamed): before the rename auth.json is the old file, byte for byte, and the temp file
    holds a prefix of the new one; from the rename on it is the new file. ``status`` then exits 0, and the next
    ``seed --force`` exits 0, writes the seed and removes the temp file."""
    old = write_login(home, as_file(login(refresh_token="CANARY-rt-old"))).read_bytes()
    new_data = login(refresh_token="CANARY-rt-new")
    new = as_file(new_data)
    env = {"CODEX_AUTH_JSON": json.dumps(new_data)}
    args = ["seed", "--force", "--codex-home", str(home), *LOCK]
    outcome = run_and_kill(args, env | killpoint_env("auth.json", stage), None, bootstrap=KILLPOINT)
    assert outcome.killed, f"the kill point {stage} was not reached: {outcome.returncode} {outcome.stderr}"
    raw = check_auth_file(home / "auth.json", stage, exact={old, new})
    left = temp_files(home, "auth.json")
    if stage == "renamed":
        assert raw == new and left == []
    else:
        assert raw == old, f"{stage}: auth.json changed before the rename"
        assert len(left) == 1
        content = left[0].read_bytes()
        assert new.startswith(content), f"{stage}: the temp file holds something but a prefix of the seed"
        if stage == "created":
            assert content == b""
        elif stage == "partial":
            assert 0 < len(content) < len(new)
        else:
            assert content == new
    assert cli("status", "--codex-home", str(home), "--min-ttl", "0s", *LOCK).exit_code == 0
    run = cli(*args, env=env)
    assert run.exit_code == 0, run.stderr
    assert (home / "auth.json").read_bytes() == new
    assert temp_files(home, "auth.json") == []


@pytest.mark.parametrize("stage", ["partial", "synced", "renamed"])
def test_persist_killed_at_each_step_of_the_file_store_write(home: Path, file_target: StoreTarget, stage: str,
                                                            cli: Any) -> None:
    """``persist`` to the file store killed at each step of the store file's atomic write: the store is the old
    complete record at its version, or (from the rename on) the new one at version + 1; the next ``persist``
    exits 0, leaves the new login at exactly version + 1 and removes the temp file."""
    store, path = file_target.open(), store_path(file_target)
    assert path is not None
    an_hour_ago = format_time(utcnow() - timedelta(hours=1))
    store.write(as_stored(login(refresh_token="CANARY-rt-old", last_refresh=an_hour_ago)), None)
    assert cli("restore", "--from", file_target.url, "--codex-home", str(home)).exit_code == 0
    newer = as_file(login(refresh_token="CANARY-rt-new", last_refresh=format_time(utcnow())))
    write_login(home, newer)
    old = read_store(store)
    assert old is not None
    args = ["persist", "--to", file_target.url, "--codex-home", str(home), *LOCK]
    outcome = run_and_kill(args, killpoint_env(path.name, stage), None, bootstrap=KILLPOINT)
    assert outcome.killed, f"the kill point {stage} was not reached: {outcome.returncode} {outcome.stderr}"
    value, version = check_store(store, file_target, stage, old, lambda value: value == newer)
    left = temp_files(path.parent, path.name)
    assert (value == newer) == (stage == "renamed") and bool(left) == (stage != "renamed")
    run = cli(*args)
    assert run.exit_code == 0, run.stderr
    assert read_store(store) == (newer, old[1] + 1)
    assert temp_files(path.parent, path.name) == []


@pytest.mark.parametrize("stage", ["synced", "renamed"])
def test_refresh_killed_around_its_rename_loses_a_rotation_only_before_it(cli: Any, home: Path, stage: str) -> None:
    """The documented window, exactly: ``refresh`` killed after the endpoint rotated and after its temp file is
    complete but before the rename loses that rotation (auth.json is the old file, the endpoint's log has the
    rotation); killed just after the rename, auth.json holds it. Either way the next ``status`` exits 0 and the
    temp file is gone after the next writer."""
    old = write_login(home, as_file(login(expires_in=1800, refresh_token="CANARY-rt-0",
                                          last_refresh=format_time(utcnow() - timedelta(hours=1))))).read_bytes()
    with CrashTokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=1800) as server:
        env = {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url}
        outcome = run_and_kill(["refresh", "--codex-home", str(home), *LOCK], env | killpoint_env("auth.json", stage),
                               None, bootstrap=KILLPOINT)
        assert outcome.killed, f"the kill point {stage} was not reached: {outcome.returncode} {outcome.stderr}"
        server.quiesce()
        (answer,) = [p for p in server.posts_since(0) if p["response"]]
        raw = check_auth_file(home / "auth.json", stage, exact={old}, rotations=[(old, answer["response"])])
        assert (refresh_token_of(raw) == server.current_refresh_token) == (stage == "renamed")
        assert cli("status", "--codex-home", str(home), "--min-ttl", "0s", *LOCK).exit_code == 0
        if stage == "synced":  # the login is gone with that process; a new login is seeded over it
            seed = login(expires_in=1800, refresh_token=server.current_refresh_token)
            run = cli("seed", "--force", "--codex-home", str(home), *LOCK, env={"CODEX_AUTH_JSON": json.dumps(seed)})
        else:
            run = cli("refresh", "--codex-home", str(home), *LOCK, env=env)
        assert run.exit_code == 0, run.stderr
        assert server.reused == 0
    assert temp_files(home, "auth.json") == []


def test_distributed_refresh_killed_before_its_store_write_is_healed_by_the_next_run(
        cli: Any, tmp_path: Path, file_target: StoreTarget) -> None:
    """``refresh --store`` killed after it wrote the rotated login to auth.json and just before the store file's
    rename: auth.json holds the rotation, the store the old login at its version (the lease is left held). The next
    ``refresh --store`` in that home heals the store from auth.json first, and does not rotate the fresh login
    again: exit 0, no spent token presented, the store at version + 1 equal to auth.json, no
    temp file."""
    path = store_path(file_target)
    assert path is not None
    store = file_target.open()
    with CrashTokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=1800) as server:
        store.write(as_stored(login(expires_in=1800, refresh_token="CANARY-rt-0",
                                    last_refresh=format_time(utcnow() - timedelta(hours=1)))), None)
        old = read_store(store)
        assert old is not None
        home = tmp_path / "runner"
        env = {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url}
        args = ["refresh", "--store", file_target.url, "--codex-home", str(home), *LOCK, "--lease-ttl", LEASE_TTL,
                "--timeout", "1", "--lease-wait", "60"]
        outcome = run_and_kill(args, env | killpoint_env(path.name, "synced"), None, bootstrap=KILLPOINT)
        assert outcome.killed, f"the kill point was not reached: {outcome.returncode} {outcome.stderr}"
        server.quiesce()
        (answer,) = [p for p in server.posts_since(0) if p["response"]]
        raw = check_auth_file(home / "auth.json", "killed before the store write", exact=set(),
                              rotations=[(old[0], answer["response"])])
        assert refresh_token_of(raw) == server.current_refresh_token
        assert read_store(store) == old
        assert check_lease(store, "killed", 0)[1], "the killed holder's lease should still be held"
        run = cli(*args, env=env)
        assert run.exit_code == 0, run.stderr
        assert "codex-ci: not refreshed:" in run.stderr
        assert server.reused == 0 and not server.revoked
        after = read_store(store)
        assert after is not None and after[1] == old[1] + 1
        assert after[0] == (home / "auth.json").read_bytes()
        assert refresh_token_of(after[0]) == server.current_refresh_token
    assert store_temp_files(file_target) == []


def test_refresh_killed_while_holding_the_lock_releases_it(home: Path) -> None:
    """A ``refresh`` killed while it holds auth.json.lock (waiting for a token endpoint that answers after 5 s)
    releases the flock at once: the lock is taken while it waits and free right after the kill, and the next
    ``status --lock-timeout 1`` and ``seed --force --lock-timeout 1`` exit 0. auth.json is the old file (this kill
    is inside the documented window: the endpoint rotated, the answer never arrived)."""
    old = write_login(home, as_file(login(expires_in=1800, refresh_token="CANARY-rt-0"))).read_bytes()
    with CrashTokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=1800, delay=5.0) as server:
        env = child_env({"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url})
        proc = subprocess.Popen([sys.executable, "-m", "codex_ci", "refresh", "--codex-home", str(home), *LOCK],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not server.posts_since(0) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert server.posts_since(0), "the refresh never reached the token endpoint"
            assert flock_held(home / "auth.json.lock"), "refresh does not hold the lock during its POST"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert not flock_held(home / "auth.json.lock"), "the killed process's lock was not released"
        status = run_process("status", "--codex-home", str(home), "--min-ttl", "0s", "--lock-timeout", "1")
        assert status.exit_code == 0, status.stderr
        assert (home / "auth.json").read_bytes() == old
        seed = login(expires_in=1800, refresh_token=server.current_refresh_token)
        run = run_process("seed", "--force", "--codex-home", str(home), "--lock-timeout", "1",
                          env={"CODEX_AUTH_JSON": json.dumps(seed)})
        assert run.exit_code == 0, run.stderr


def test_persist_killed_while_holding_the_file_store_lock_releases_it(home: Path, file_target: StoreTarget,
                                                                     cli: Any) -> None:
    """A ``persist`` frozen inside the file store's write (holding ``PATH.lock``) and then killed releases that
    flock at once: the next ``persist`` exits 0 and writes the login at version + 1."""
    store, path = file_target.open(), store_path(file_target)
    assert path is not None
    an_hour_ago = format_time(utcnow() - timedelta(hours=1))
    store.write(as_stored(login(refresh_token="CANARY-rt-old", last_refresh=an_hour_ago)), None)
    newer = as_file(login(refresh_token="CANARY-rt-new", last_refresh=format_time(utcnow())))
    write_login(home, newer)
    old = read_store(store)
    assert old is not None
    args = ["persist", "--to", file_target.url, "--codex-home", str(home), *LOCK]
    env = child_env(killpoint_env(path.name, "created", "SIGSTOP"))
    proc = subprocess.Popen([sys.executable, "-c", KILLPOINT, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_stopped(proc.pid)
        assert flock_held(path.with_name(path.name + ".lock")), "persist writes the store without its lock"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not flock_held(path.with_name(path.name + ".lock"))
    assert read_store(store) == old
    run = run_process(*args)
    assert run.exit_code == 0, run.stderr
    assert read_store(store) == (newer, old[1] + 1)
    assert temp_files(path.parent, path.name) == []


# -- regressions of bugs this file found (temp files, config.toml, the lease's temp file) ------------------------


def test_seed_killed_while_writing_config_toml_is_completed_by_the_next_seed(home: Path) -> None:
    """``seed`` into an empty home writes config.toml, then auth.json, both under auth.json.lock. Killed in between
    (its config.toml temp file just created), the documented re-run (``seed``) completes the home: config.toml
    with ``cli_auth_credentials_store = "file"``, auth.json, and no temp file left."""
    data = login(refresh_token="CANARY-rt-seed")
    env = {"CODEX_AUTH_JSON": json.dumps(data)}
    args = ["seed", "--codex-home", str(home), *LOCK]
    outcome = run_and_kill(args, env | killpoint_env("config.toml", "created"), None, bootstrap=KILLPOINT)
    assert outcome.killed
    assert not (home / "auth.json").exists() and not (home / "config.toml").exists()
    run = run_process(*args, env=env)
    assert run.exit_code == 0, run.stderr
    assert (home / "auth.json").read_bytes() == as_file(data)
    assert (home / "config.toml").read_bytes() == CONFIG_LINE.encode()
    assert temp_files(home, "config.toml") == []


def test_a_writer_frozen_inside_the_lock_holds_off_the_next_one(home: Path, file_target: StoreTarget,
                                                                  cli: Any) -> None:
    """Two ``restore`` runs in one empty home: A is frozen just after creating its config.toml temp file, which it
    writes under auth.json.lock. B cannot touch A's temp file: it times out on the lock (exit 7). A, resumed,
    finishes; then B runs to the end."""
    file_target.open().write(as_stored(login(refresh_token="CANARY-rt-stored")), None)
    args = ["restore", "--from", file_target.url, "--codex-home", str(home)]
    env = child_env(killpoint_env("config.toml", "created", "SIGSTOP"))
    proc = subprocess.Popen([sys.executable, "-c", KILLPOINT, *args, *LOCK], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_stopped(proc.pid)
        assert len(temp_files(home, "config.toml")) == 1
        assert cli(*args, "--lock-timeout", "0.5").exit_code == ExitCode.LOCK_TIMEOUT
        assert len(temp_files(home, "config.toml")) == 1
    finally:
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert cli(*args, *LOCK).exit_code == 0
    assert (home / "config.toml").read_bytes() == CONFIG_LINE.encode()


def test_file_store_write_spares_the_lease_writers_temp_file(tmp_path: Path, file_target: StoreTarget,
                                                            cli: Any) -> None:
    """Runner A (``refresh --store file://P``) is frozen while writing the lease ``P.lease`` under ``P.lease.lock``;
    runner B persists to ``P`` under ``P.lock``. B's write_atomic removes ``.P.*.tmp``, which matches A's live
    ``.P.lease.<x>.tmp``; A's rename then fails and its refresh exits 9 (STORE) instead of taking the lease."""
    path = store_path(file_target)
    assert path is not None
    with CrashTokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=1800) as server:
        stale = login(expires_in=1800, refresh_token="CANARY-rt-0",
                      last_refresh=format_time(utcnow() - timedelta(hours=1)))
        file_target.open().write(as_stored(stale), None)
        args = ["refresh", "--store", file_target.url, "--codex-home", str(tmp_path / "a"), *LOCK]
        env = child_env({"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url}
                        | killpoint_env(path.name + ".lease", "created", "SIGSTOP"))
        proc = subprocess.Popen([sys.executable, "-c", KILLPOINT, *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_stopped(proc.pid)
            assert len(temp_files(path.parent, path.name + ".lease")) == 1
            b = tmp_path / "b"
            write_login(b, as_file(login(expires_in=1800, refresh_token="CANARY-rt-0",
                                         last_refresh=format_time(utcnow()))))
            assert cli("persist", "--to", file_target.url, "--codex-home", str(b)).exit_code == 0
        finally:
            proc.send_signal(signal.SIGCONT)
            _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"runner A failed ({proc.returncode}): {stderr.strip()}"
