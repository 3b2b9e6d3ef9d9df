"""Tools for the kill -9 tests (tests/properties/test_crash.py): kill a real ``python -m codex_ci`` at a chosen
moment, a token endpoint that timestamps each request and can be waited on until idle, checks that a file or a
stored value is one complete version, a tally of the outcomes, and a start-up hook that kills (or stops) the process
at an exact step of an atomic write.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codex_ci.authfile import AuthFile, parse_time
from testing.checks import SCRUBBED, assert_no_secrets
from testing.tokenserver import Reply, TokenServer

# One seed for the whole run, printed in every assertion message: CODEX_CI_CRASH_SEED=N replays the same kill
# times and delays (the machine's timing still varies, so a replay is close, not identical).
SEED = int(os.environ.get("CODEX_CI_CRASH_SEED") or random.SystemRandom().randrange(2**32))


def rng_for(name: str) -> random.Random:
    """A generator per test, so one test's draws do not depend on which other tests ran."""
    return random.Random(f"{SEED}:{name}")


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a CLI child: this one without the scrubbed variables, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if k not in SCRUBBED} | dict(extra)


# -- killing a real process ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one run of the CLI ended. ``killed``: it was still running when SIGKILL was sent and died of it."""

    args: tuple[str, ...]
    returncode: int
    killed: bool
    elapsed: float  # seconds from start to exit (or to the kill)
    t_start: float  # time.monotonic() just before the fork
    t_kill: float | None  # time.monotonic() of the kill, None when the process ended first
    stdout: str
    stderr: str


def run_and_kill(args: Sequence[str], env: Mapping[str, str], kill_after: float | None, *,
                 bootstrap: str | None = None, timeout: float = 120) -> Outcome:
    """Start ``python -m codex_ci ARGS`` and SIGKILL it ``kill_after`` seconds later (None: let it finish).

    With ``bootstrap``, run that code instead of ``-m codex_ci`` (see :data:`KILLPOINT`)."""
    command = [sys.executable, "-c", bootstrap, *args] if bootstrap else [sys.executable, "-m", "codex_ci", *args]
    t_start = time.monotonic()
    proc = subprocess.Popen(command, env=child_env(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t_kill = None
    try:
        if kill_after is None:
            proc.wait(timeout=timeout)
        else:
            # Popen.wait polls with sleeps of up to 50 ms: wait coarsely, then sleep to the exact moment.
            try:
                proc.wait(timeout=max(0.0, kill_after - 0.06))
            except subprocess.TimeoutExpired:
                remaining = t_start + kill_after - time.monotonic()
                if remaining > 0:
                    time.sleep(remaining)
                t_kill = time.monotonic()
                os.kill(proc.pid, signal.SIGKILL)  # harmless if it just exited: not reaped yet, so the pid is ours
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ended = time.monotonic()
    killed = proc.returncode == -signal.SIGKILL
    outcome = Outcome(tuple(args), proc.returncode, killed, (t_kill if killed and t_kill else ended) - t_start,
                      t_start, t_kill if killed else None, stdout, stderr)
    assert_no_secrets(stdout, stderr)
    if not killed:
        assert "Traceback" not in stdout + stderr, stderr
    return outcome


def calibrate(run: Callable[[], Outcome], runs: int) -> float:
    """The median duration of ``runs`` uninterrupted runs (``run()`` returns an Outcome): the life to spread kills
    over (the median, so that one run slowed down by a loaded machine does not stretch it)."""
    durations: list[float] = []
    for _ in range(runs):
        outcome = run()
        assert outcome.returncode == 0, f"a normal run failed ({outcome.returncode}): {outcome.stderr}"
        durations.append(outcome.elapsed)
    return statistics.median(durations)


# -- a token endpoint that says when it rotated and when it answered --------------------------------------------


class CrashTokenServer(TokenServer):
    """The strict TokenServer, plus for every POST: ``t_decided`` (the rotation, before ``delay``), ``t_sent``
    (after the answer was written), ``sent_rt`` and the token ``response``; and :meth:`quiesce`."""

    def recorded(self, entry: dict[str, Any], reply: Reply) -> None:
        entry["t_decided"] = time.monotonic()
        body = entry.get("body")
        entry["sent_rt"] = body.get("refresh_token") if isinstance(body, dict) else None
        entry["response"] = json.loads(reply.body) if reply.status == 200 and entry["outcome"] == "rotated" else None

    def answered(self, entry: dict[str, Any]) -> None:
        entry["t_sent"] = time.monotonic()  # the answer was written (or the write failed: client gone)

    def quiesce(self, timeout: float = 30) -> None:
        """Return once every request sent so far has been handled to the end.

        Call it after the client was killed and reaped. A dead client's request may still sit in the accept queue
        and rotate the login later; a probe connection made now queues behind it (the accept queue is FIFO), so
        once the probe is answered every earlier connection is counted as in progress; then wait for none."""
        try:
            with urllib.request.urlopen(self.base_url + "/", timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # the 404 is the answer we wanted
        left = self.wait_idle(timeout)
        assert not left, f"the token server still has {left} requests in progress after {timeout}s"

    def posts_since(self, start: int) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests[start:] if r["path"] == "/oauth/token"]


# -- one complete version, never a partial one ----------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def temp_files(directory: Path, name: str) -> list[Path]:
    """Temp files an atomic writer of ``directory/name`` leaves when killed before its rename."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f".{name}.*.tmp"))


def rotated(base: bytes, response: Mapping[str, Any], written: bytes) -> bool:
    """True if ``written`` is exactly what a refresh makes of ``base`` with this token ``response`` (at the
    ``last_refresh`` it carries): every other key and token kept, the new tokens in, in Codex's layout."""
    try:
        when = parse_time(json.loads(written)["last_refresh"])
    except (ValueError, KeyError, TypeError):
        return False
    if when is None:
        return False
    expected = AuthFile.parse(base, "base").with_refresh(dict(response), when).to_bytes()
    return written == expected


def complete_login(raw: bytes, what: str, ctx: str) -> AuthFile:
    """``raw`` is non-empty, valid JSON, and a login AuthFile.parse accepts."""
    assert raw.strip(), f"{ctx}: {what} is empty"
    try:
        json.loads(raw)
    except ValueError as exc:
        why = f"{exc.msg} at {exc.pos}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise AssertionError(f"{ctx}: {what} is not valid JSON ({why}): a partial write") from None
    from codex_ci.errors import InvalidAuthError

    try:
        return AuthFile.parse(raw, what)
    except InvalidAuthError as exc:
        raise AssertionError(f"{ctx}: {what} is not a usable login: {exc.message}") from None


def check_auth_file(path: Path, ctx: str, *, exact: Collection[bytes | None],
                    rotations: Iterable[tuple[bytes, Mapping[str, Any]]] = ()) -> bytes | None:
    """auth.json is absent (allowed only if None is in ``exact``), or a regular 0600 file holding a complete
    login whose bytes equal one of ``exact`` or the result of one of ``rotations`` (base bytes, token response).
    Returns its bytes (None when absent)."""
    if not os.path.lexists(path):
        assert None in exact, f"{ctx}: {path.name} is missing"
        return None
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode), f"{ctx}: {path.name} is not a regular file"
    assert stat.S_IMODE(info.st_mode) == 0o600, f"{ctx}: {path.name} has mode {stat.S_IMODE(info.st_mode):04o}"
    raw = path.read_bytes()
    complete_login(raw, path.name, ctx)
    if raw in exact:
        return raw
    for base, response in rotations:
        if rotated(base, response, raw):
            return raw
    raise AssertionError(f"{ctx}: {path.name} is a valid login but neither the old file nor a new version")


def refresh_token_of(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    value = json.loads(raw).get("tokens", {}).get("refresh_token")
    return value if isinstance(value, str) else None


# -- counting ------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the kills of one test did: ``stages`` counts where each run died (or "completed" when it ended first);
    ``rotations`` counts no-rotation / kept / lost-in-window (split by whether the answer had been sent) /
    lost-outside-window; ``notes`` counts side facts (temp files left, a lease left held)."""

    name: str
    trials: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    rotations: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    life: float = 0.0  # the calibrated duration of a normal run, seconds
    wall: float = 0.0

    def line(self) -> str:
        def show(counter: Counter[str]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(counter.items())) or "-"

        return (f"crash[{self.name}] seed={SEED} trials={self.trials} normal-run={self.life:.2f}s "
                f"wall={self.wall:.1f}s | stage: {show(self.stages)} | rotation: {show(self.rotations)} | "
                f"notes: {show(self.notes)}")

    def report(self) -> None:
        print(self.line(), file=sys.stderr)
        out = os.environ.get("CODEX_CI_CRASH_REPORT")
        if out:
            with open(out, "a", encoding="utf-8") as handle:
                handle.write(self.line() + "\n")


def classify_rotation(tally: Tally, posts: Sequence[dict[str, Any]], outcome: Outcome, kept: bool, ctx: str,
                      *, written_marker: str, untouched: bool = True) -> str:
    """Sort one trial into no-rotation / kept / lost-in-window-* / lost-outside-window and count it.

    A rotation is lost "in the window" when the process was killed after the endpoint rotated and before it
    wrote auth.json: it died of our SIGKILL, had not yet logged ``written_marker`` (the line it logs once the
    new login is written) and, where the caller can tell (``untouched``: auth.json is still the same inode, so it
    was never replaced), never wrote auth.json. "in-flight": killed before the endpoint even sent its answer;
    "after-answer": the answer was sent, the process died before its write. Any other loss is outside."""
    rotations = [p for p in posts if p["outcome"] == "rotated"]
    assert len(rotations) <= 1, f"{ctx}: one run rotated the login {len(rotations)} times"
    if not rotations:
        kind = "none"
    elif kept:
        kind = "kept"
    elif outcome.killed and written_marker not in outcome.stderr and untouched:
        sent = rotations[0].get("t_sent")
        assert outcome.t_kill is not None
        kind = "lost-in-window-in-flight" if sent is None or outcome.t_kill < sent else "lost-in-window-after-answer"
    else:
        kind = "lost-outside-window"
    tally.rotations[kind] += 1
    return kind


# -- killing at an exact step of an atomic write -----------------------------------------------------------------

# Run as ``python -c KILLPOINT ARGS...``: the CLI, except that the first atomic write of CRASHKIT_FILE (its temp
# file is ``.NAME.*.tmp``) sends this process CRASHKIT_SIGNAL (SIGKILL, or SIGSTOP to freeze it) at CRASHKIT_STAGE:
#   created  the temp file exists, empty          partial  half of the data written
#   written  all data written, not fsynced       synced   fsynced and closed, not yet renamed
#   renamed  renamed over the target, before the directory fsync
KILLPOINT = r"""
import os, runpy, signal, sys, tempfile
NAME = os.environ.pop("CRASHKIT_FILE")
STAGE = os.environ.pop("CRASHKIT_STAGE")
SIG = getattr(signal, os.environ.pop("CRASHKIT_SIGNAL", "SIGKILL"))
fds = set()
fired = []
def mine(path):
    base = os.path.basename(os.fsdecode(path))
    return base.startswith("." + NAME + ".") and base.endswith(".tmp") and base.count(".") == NAME.count(".") + 3
def hit(stage):
    if stage == STAGE and not fired:
        fired.append(stage)
        os.kill(os.getpid(), SIG)
real_mkstemp, real_write, real_fsync, real_close, real_replace = (
    tempfile.mkstemp, os.write, os.fsync, os.close, os.replace)
def mkstemp(*a, **k):
    fd, path = real_mkstemp(*a, **k)
    if mine(path):
        fds.add(fd)
        hit("created")
    return fd, path
def write(fd, data):
    if fd in fds and STAGE == "partial" and not fired:
        real_write(fd, bytes(memoryview(data)[: max(1, len(data) // 2)]))
        hit("partial")
    return real_write(fd, data)
def fsync(fd):
    if fd in fds:
        hit("written")
    return real_fsync(fd)
def close(fd):
    real_close(fd)
    if fd in fds:
        fds.discard(fd)
def replace(src, dst, *a, **k):
    if mine(src):
        hit("synced")
    real_replace(src, dst, *a, **k)
    if mine(src):
        hit("renamed")
tempfile.mkstemp, os.write, os.fsync, os.close, os.replace = mkstemp, write, fsync, close, replace
sys.argv[0] = "codex-ci"
runpy.run_module("codex_ci", run_name="__main__")
"""
STAGES = ("created", "partial", "written", "synced", "renamed")


def killpoint_env(file: str, stage: str, sig: str = "SIGKILL") -> dict[str, str]:
    return {"CRASHKIT_FILE": file, "CRASHKIT_STAGE": stage, "CRASHKIT_SIGNAL": sig}


def wait_stopped(pid: int, timeout: float = 60) -> None:
    """Wait (bounded) until ``pid`` is stopped by SIGSTOP (state T in /proc/PID/stat)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            raise AssertionError(f"process {pid} is gone before it stopped") from None
        if state in ("T", "t"):
            return
        if state in ("Z", "X"):
            raise AssertionError(f"process {pid} exited before it stopped")
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop within {timeout}s")
