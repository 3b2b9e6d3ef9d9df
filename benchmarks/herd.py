"""herd: many refreshers on one stale CODEX_HOME must make exactly one POST to the token endpoint.

(a) process herd: HERD concurrent ``python -m codex_ci refresh`` processes, against one such process.
(b) coordination herd: HERD forked workers released together by a barrier, each calling
    ``codex_ci.local.refresh_home`` (interpreter start-up excluded), against one worker doing the same.
The token endpoint is the strict rotating loopback server of the tests, answering after DELAY seconds.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from tokenserver import TokenServer

from benchmarks.common import LOOPBACK, PYTHON, clean_env, median, ms, write_login
from benchmarks.report import Outcome, Row
from codex_ci.local import refresh_home
from codex_ci.refresh import Policy

HERD = 64
ROUNDS = 3
SINGLE_RUNS = 5
DELAY = 0.15
TARGET = 2.0
TIMEOUT = 120.0
POLICY = Policy(min_ttl=timedelta(hours=1), max_age=timedelta(days=8))
TOKEN = "bench-rt-0"
HOW = (
    f"stale CODEX_HOME (access token expired) and the tests' strict token server answering after {DELAY}s; "
    f"(a) {HERD} `python -m codex_ci refresh` processes spawned back to back, wall time from the first spawn to "
    f"the last exit; (b) {HERD} workers forked after importing codex_ci, released by one multiprocessing.Barrier, "
    "each calling `refresh_home(home, Policy(1h, 8d), lock_timeout=60)`, timed from the release to the last "
    f"worker's return. Herds: median of {ROUNDS} rounds; single refresher: median of {SINGLE_RUNS}. "
    "Every round uses a new home and a new server; POSTs are counted by the server."
)
Report = tuple[bool, float, str]  # (refreshed, monotonic finish time, error or "")


@dataclass(frozen=True)
class Round:
    seconds: float
    posts: int
    refreshed: int
    failures: int
    consistent: bool  # auth.json ends holding the server's live refresh token
    refresher_seconds: float | None = None  # (b) only: when the worker that made the POST returned


def _consistent(home: Path, server: TokenServer) -> bool:
    tokens = json.loads((home / "auth.json").read_text()).get("tokens", {})
    return bool(tokens.get("refresh_token") == server.current_refresh_token)


@contextmanager
def _stale_home_and_server() -> Iterator[tuple[Path, TokenServer]]:
    """A stale CODEX_HOME whose refresh token is the live one of a fresh (not yet started) token server."""
    with tempfile.TemporaryDirectory(prefix="codex-ci-herd-") as tmp:
        home = Path(tmp) / "home"
        write_login(home, expires_in=-600, refresh_token=TOKEN)
        server = TokenServer(initial_refresh_token=TOKEN, delay=DELAY)
        try:
            yield home, server
        finally:
            server.stop()


def _process_round(count: int) -> Round:
    with _stale_home_and_server() as (home, server):
        server.start()
        env = clean_env(CODEX_REFRESH_TOKEN_URL_OVERRIDE=server.url)
        argv = [str(PYTHON), "-m", "codex_ci", "refresh", "--codex-home", str(home), "--lock-timeout", "60"]
        started = time.perf_counter()
        procs = [subprocess.Popen(argv, env=env, cwd=home.parent, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(count)]
        try:
            outputs = [p.communicate(timeout=TIMEOUT)[1].decode(errors="replace") for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        elapsed = time.perf_counter() - started
        consistent = _consistent(home, server)
    failures = sum(p.returncode != 0 for p in procs)
    refreshed = sum("codex-ci: refreshed:" in out for out in outputs)
    return Round(elapsed, server.posts, refreshed, failures, consistent)


def _worker(home: Path, barrier: Barrier, reports: Queue[Report]) -> None:
    barrier.wait(TIMEOUT)
    try:
        result = refresh_home(home, POLICY, lock_timeout=60)
        reports.put((result.refreshed, time.monotonic(), ""))
    except Exception as exc:  # reported to the parent, which counts it as a failure
        reports.put((False, time.monotonic(), f"{type(exc).__name__}: {exc}"))


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _fork_round(count: int) -> Round:
    ctx = multiprocessing.get_context("fork")
    with _stale_home_and_server() as (home, server), _environ(
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=server.url, NO_PROXY=LOOPBACK, no_proxy=LOOPBACK
    ):
        barrier = ctx.Barrier(count + 1)
        reports: Queue[Report] = ctx.Queue()
        workers = [ctx.Process(target=_worker, args=(home, barrier, reports)) for _ in range(count)]
        for worker in workers:  # forked before the server thread starts: the children hold no thread
            worker.start()
        server.start()
        deadline = time.monotonic() + TIMEOUT
        while barrier.n_waiting < count and time.monotonic() < deadline:
            time.sleep(0.002)
        released = time.monotonic()
        barrier.wait(TIMEOUT)
        try:
            results = [reports.get(timeout=TIMEOUT) for _ in range(count)]
        finally:
            for worker in workers:
                worker.join(TIMEOUT)
                if worker.is_alive():
                    worker.kill()
        consistent = _consistent(home, server)
    errors = [error for _, _, error in results if error]
    if errors:
        print(f"herd: worker errors: {sorted(set(errors))}", file=sys.stderr)
    refresher = [finished - released for refreshed, finished, _ in results if refreshed]
    return Round(max(finished for _, finished, _ in results) - released, server.posts,
                 len(refresher), len(errors), consistent, refresher[0] if refresher else None)


def _repeat(label: str, measure: Callable[[int], Round], count: int, times: int) -> list[Round]:
    print(f"herd: {label}: {times} x {count}", file=sys.stderr, flush=True)
    return [measure(count) for _ in range(times)]


def _rounds_ok(rounds: list[Round]) -> bool:
    return all(r.posts == 1 and r.refreshed == 1 and r.failures == 0 and r.consistent for r in rounds)


def _compare(kind: str, herd: list[Round], single: list[Round], target: float | None) -> list[Row]:
    herd_s, single_s = median([r.seconds for r in herd]), median([r.seconds for r in single])
    ratio = herd_s / single_s
    posts = ", ".join(str(r.posts) for r in herd)
    goal, met = ("", None) if target is None else (f"<= {target:.0f}x", ratio <= target)
    return [
        Row(f"{kind}: {HERD} at once, median wall", f"{ms(herd_s)} ms"),
        Row(f"{kind}: 1 alone, median wall", f"{ms(single_s)} ms"),
        Row(f"{kind}: ratio", f"{ratio:.2f}x", goal, met),
        Row(f"{kind}: POSTs per herd round", posts, "1 each", all(r.posts == 1 for r in herd)),
        Row(f"{kind}: failed refreshers, all rounds", str(sum(r.failures for r in herd + single)), "0",
            _rounds_ok(herd + single)),
    ]


def run() -> Outcome:
    proc_herd = _repeat("process herd", _process_round, HERD, ROUNDS)
    proc_single = _repeat("single process", _process_round, 1, SINGLE_RUNS)
    fork_herd = _repeat("coordination herd", _fork_round, HERD, ROUNDS)
    fork_single = _repeat("single worker", _fork_round, 1, SINGLE_RUNS)
    rows = _compare("(a) processes", proc_herd, proc_single, None)
    rows += _compare("(b) coordination", fork_herd, fork_single, TARGET)
    tails = [r.seconds - r.refresher_seconds for r in fork_herd if r.refresher_seconds is not None]
    refresher = [r.refresher_seconds for r in fork_herd if r.refresher_seconds is not None]
    notes = [
        "In (b) the worker that made the POST returned after a median of "
        f"{ms(median(refresher)) if refresher else 'n/a'} ms; the other {HERD - 1} finished "
        f"{ms(median(tails)) if tails else 'n/a'} ms later (median): the herd's cost beyond one refresh is "
        "the queue of waiters taking auth.json.lock one at a time to re-read the refreshed file.",
        "(a) is dominated by starting many interpreters on few CPUs; it shows only that the lock keeps "
        "the POST count at one, not coordination cost.",
    ]
    data = {
        "herd": HERD, "rounds": ROUNDS, "single_runs": SINGLE_RUNS, "server_delay_s": DELAY, "target_ratio_b": TARGET,
        "process_herd": [asdict(r) for r in proc_herd], "process_single": [asdict(r) for r in proc_single],
        "coordination_herd": [asdict(r) for r in fork_herd], "coordination_single": [asdict(r) for r in fork_single],
    }
    passed = _rounds_ok(proc_herd + proc_single + fork_herd + fork_single)
    return Outcome("herd", HOW, rows, data, notes, passed=passed)
