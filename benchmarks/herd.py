"""herd: many refreshers on one stale CODEX_HOME must make exactly one POST to the token endpoint.

(a) process herd: HERD concurrent ``python -m codex_ci refresh`` processes, against one such process.
(b) coordination herd: HERD forked workers released together by a barrier, each calling
    ``codex_ci.rotate.refresh_home`` (interpreter start-up excluded), against one worker doing the same. The
    parent imports filelock first: a CLI process has it loaded before it contends for the lock, while 64 children
    importing it at the same instant would measure the import, not the coordination.
The token endpoint is the strict rotating loopback server of the tests, answering after DELAY seconds.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import resource
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

from benchmarks.common import LOOPBACK, PYTHON, clean_env, environ, median, ms, release_workers, write_login
from benchmarks.report import Outcome, Row
from codex_ci.home import Home
from codex_ci.policy import Policy
from codex_ci.rotate import refresh_home
from testing.tokenserver import TokenServer

HERD = 64
ROUNDS = 3
SINGLE_RUNS = 5
DELAY = 0.15
TARGET = 2.0
TIMEOUT = 120.0
POLICY = Policy(min_ttl=timedelta(hours=1), max_age=timedelta(days=8))
TOKEN = "bench-rt-0"
ACCESS_TTL = 86400  # new tokens outlive POLICY.min_ttl, so no waiter has a reason to refresh again
HOW = (
    f"stale CODEX_HOME (access token expired) and the tests' strict token server answering after {DELAY}s; "
    f"(a) {HERD} `python -m codex_ci refresh` processes spawned back to back, wall time from the first spawn to "
    f"the last exit; (b) {HERD} workers forked after importing codex_ci, released by one multiprocessing.Barrier, "
    "each calling `refresh_home(home, Policy(1h, 8d), lock_timeout=60)`, timed from the release to the last "
    "worker's return (the parent imports filelock first, as each CLI process has before it contends). "
    f"Herds: median of {ROUNDS} rounds; single refresher: median of {SINGLE_RUNS}. Every round uses a new home "
    "and a new server; POSTs are counted by the server; CPU time is the children's user+sys time."
)
Report = tuple[bool, float, str]  # (refreshed, monotonic finish time, error or "")


@dataclass(frozen=True)
class Round:
    seconds: float
    cpu_seconds: float  # user + system time of all the refreshers of the round
    posts: int
    refreshed: int
    failures: int
    consistent: bool  # auth.json ends holding the server's live refresh token
    refresher_seconds: float | None = None  # (b) only: when the worker that made the POST returned


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _consistent(home: Path, server: TokenServer) -> bool:
    tokens = json.loads((home / "auth.json").read_text()).get("tokens", {})
    return bool(tokens.get("refresh_token") == server.current_refresh_token)


@contextmanager
def _stale_home_and_server() -> Iterator[tuple[Path, TokenServer]]:
    """A stale CODEX_HOME whose refresh token is the live one of a fresh (not yet started) token server."""
    with tempfile.TemporaryDirectory(prefix="codex-ci-herd-") as tmp:
        home = Path(tmp) / "home"
        write_login(home, expires_in=-600, refresh_token=TOKEN)
        server = TokenServer(initial_refresh_token=TOKEN, delay=DELAY, access_ttl=ACCESS_TTL)
        try:
            yield home, server
        finally:
            server.stop()


def _process_round(count: int) -> Round:
    with _stale_home_and_server() as (home, server):
        server.start()
        env = clean_env(CODEX_REFRESH_TOKEN_URL_OVERRIDE=server.url)
        argv = [str(PYTHON), "-m", "codex_ci", "refresh", "--codex-home", str(home), "--lock-timeout", "60"]
        cpu, started = _children_cpu(), time.perf_counter()
        procs = [subprocess.Popen(argv, env=env, cwd=home.parent, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(count)]
        try:
            outputs = [p.communicate(timeout=TIMEOUT)[1].decode(errors="replace") for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        elapsed, cpu = time.perf_counter() - started, _children_cpu() - cpu
        consistent = _consistent(home, server)
    failures = sum(p.returncode != 0 for p in procs)
    refreshed = sum("codex-ci: refreshed:" in out for out in outputs)
    return Round(elapsed, cpu, server.posts, refreshed, failures, consistent)


def _worker(home: Path, barrier: Barrier, reports: Queue[Report]) -> None:
    barrier.wait(TIMEOUT)
    try:
        result = refresh_home(Home(home), POLICY, lock_timeout=60)
        reports.put((result.refreshed, time.monotonic(), ""))
    except Exception as exc:  # reported to the parent, which counts it as a failure
        reports.put((False, time.monotonic(), f"{type(exc).__name__}: {exc}"))


def _fork_round(count: int) -> Round:
    ctx = multiprocessing.get_context("fork")
    with _stale_home_and_server() as (home, server), environ(
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=server.url, NO_PROXY=LOOPBACK, no_proxy=LOOPBACK
    ):
        barrier = ctx.Barrier(count + 1)
        reports: Queue[Report] = ctx.Queue()
        workers = [ctx.Process(target=_worker, args=(home, barrier, reports)) for _ in range(count)]
        cpu = _children_cpu()
        released, results = release_workers(workers, barrier, reports, server, TIMEOUT)
        cpu = _children_cpu() - cpu
        consistent = _consistent(home, server)
    errors = [error for _, _, error in results if error]
    if errors:
        print(f"herd: worker errors: {sorted(set(errors))}", file=sys.stderr)
    refresher = [finished - released for refreshed, finished, _ in results if refreshed]
    return Round(max(finished for _, finished, _ in results) - released, cpu, server.posts,
                 len(refresher), len(errors), consistent, refresher[0] if refresher else None)


@dataclass(frozen=True)
class Comparison:
    """A herd against a single refresher: rounds of each, and the figures reported."""

    kind: str
    herd: list[Round]
    single: list[Round]

    @property
    def ratio(self) -> float:
        return self.herd_s / self.single_s

    @property
    def herd_s(self) -> float:
        return median([r.seconds for r in self.herd])

    @property
    def single_s(self) -> float:
        return median([r.seconds for r in self.single])

    @property
    def correct(self) -> bool:
        """Exactly one POST and one refresh per round, no failure, and auth.json left holding the live token."""
        rounds = self.herd + self.single
        return all(r.posts == 1 and r.refreshed == 1 and r.failures == 0 and r.consistent for r in rounds)

    def rows(self, target: float | None) -> list[Row]:
        goal, met = ("", None) if target is None else (f"<= {target:.0f}x", self.ratio <= target)
        posts = ", ".join(str(r.posts) for r in self.herd)
        failures = sum(r.failures for r in self.herd + self.single)
        return [
            Row(f"{self.kind}: {HERD} at once / 1 alone, median wall",
                f"{ms(self.herd_s)} ms / {ms(self.single_s)} ms"),
            Row(f"{self.kind}: ratio", f"{self.ratio:.2f}x", goal, met),
            Row(f"{self.kind}: POSTs per round; failures", f"{posts}; {failures}", "1 each; 0", self.correct),
        ]


def _measure(kind: str, measure: Callable[[int], Round]) -> Comparison:
    print(f"herd: {kind}: {ROUNDS} x {HERD}, then {SINGLE_RUNS} x 1", file=sys.stderr, flush=True)
    herd = [measure(HERD) for _ in range(ROUNDS)]
    return Comparison(kind, herd, [measure(1) for _ in range(SINGLE_RUNS)])


def _notes(processes: Comparison, forked: Comparison) -> list[str]:
    cpus = len(os.sched_getaffinity(0))
    cpu, one = median([r.cpu_seconds for r in processes.herd]), median([r.cpu_seconds for r in processes.single])
    notes = [
        f"(a): the {HERD} processes used {cpu:.1f} s of CPU in all ({cpu / cpus:.1f} s per CPU on {cpus} CPUs; "
        f"{HERD} x one lone process's {one:.2f} s = {HERD * one:.1f} s) for a median wall time of "
        f"{processes.herd_s:.1f} s: the herd costs {HERD} interpreter start-ups, and the lock adds no POST.",
    ]
    for c in (forked,):
        done = [r.refresher_seconds for r in c.herd if r.refresher_seconds is not None]
        tail = [r.seconds - r.refresher_seconds for r in c.herd if r.refresher_seconds is not None]
        cpu_herd, cpu_one = median([r.cpu_seconds for r in c.herd]), median([r.cpu_seconds for r in c.single])
        notes.append(
            f"{c.kind}: the worker that made the POST returned {ms(median(done))} ms after the release (a lone "
            f"worker: {ms(c.single_s)} ms); the last of the other {HERD - 1} returned {ms(median(tail))} ms after "
            f"it. CPU: {cpu_herd:.2f} s for the herd, {cpu_one:.2f} s for one worker (fork and exit included)."
        )
    return notes


def run() -> Outcome:
    processes = _measure("(a) processes", _process_round)
    importlib.import_module("filelock")  # forked children inherit it, as each CLI process has it before contending
    forked = _measure("(b) coordination", _fork_round)
    rows = processes.rows(None) + forked.rows(TARGET)
    data = {
        "herd": HERD, "rounds": ROUNDS, "single_runs": SINGLE_RUNS, "server_delay_s": DELAY, "target_ratio_b": TARGET,
        **{c.kind: {"ratio": round(c.ratio, 3), "herd": [asdict(r) for r in c.herd],
                    "single": [asdict(r) for r in c.single]} for c in (processes, forked)},
    }
    passed = processes.correct and forked.correct
    return Outcome("herd", HOW, rows, data, _notes(processes, forked), passed=passed)
