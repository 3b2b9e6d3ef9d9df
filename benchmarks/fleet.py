"""fleet: FLEET runners, each with its own CODEX_HOME, rotate one stale stored login at once, per store.

Each runner does what a job does: ``refresh --store URL`` (the distributed refresh: restore, lease, one POST by
whoever holds the lease, CAS write, release) and then ``persist --to URL``. The fleet's wall time is compared with
one runner doing the same alone (target: at most TARGET times).

(a) processes: ``python -m codex_ci refresh --store URL && python -m codex_ci persist --to URL``, FLEET at once
    (spawned back to back) against one alone; wall time from the first spawn to the last exit.
(b) forked workers: FLEET workers forked after the imports (store SDK included) and after opening the store,
    released by one barrier, each calling ``codex_ci.distributed.distributed_refresh`` then ``persist``; wall time from
    the release to the last return, against one worker doing the same. Like the herd benchmark, but through a
    store: it measures the coordination, not interpreter start-up.

The store servers are those of the stores benchmark (the Secret Manager fake in its own process here, so that this
process never starts gRPC before forking). Every round uses a new secret holding a stale login and a released lease
record (the steady state: the lease record exists after the first rotation), a new token server answering after
DELAY seconds, and new CODEX_HOMEs. Store operations of the parent (seeding, the final check) run in forked children.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from benchmarks.common import LOOPBACK, PYTHON, clean_env, environ, median, ms, release_workers
from benchmarks.report import Outcome, Row
from benchmarks.stores import KINDS, Backend, Recorder, Tally, backend
from codex_ci.policy import Policy
from testing.tokenserver import TokenServer, make_login

FLEET = 16
ROUNDS_PROCESSES = 1  # rounds of (a), fleet and single: a fleet round takes 8-50 s on 2 (shared) CPUs
SINGLE_PROCESSES = 1
ROUNDS_FORKED = 3
TARGET = 3.0
DELAY = 0.15  # the token endpoint's answer time, as in the herd benchmark
POLICY = Policy(timedelta(hours=1), timedelta(days=8))  # the CLI's defaults
LEASE_TTL = timedelta(minutes=2)
LEASE_WAIT = 60.0
TIMEOUT = 120.0  # seconds any one runner may take
TOKEN = "bench-rt-0"
SDK = {"file": (), "vault": ("hvac",), "aws": ("boto3",), "gcp": ("google.cloud.secretmanager", "grpc")}
HOW = (
    f"{FLEET} runners, each with its own new CODEX_HOME, on one stale stored login (access token expired) per store; "
    "each runs the distributed refresh with the CLI's defaults (--min-ttl 1h, --lease-ttl 2m) and then persist. "
    f"(a) processes: `python -m codex_ci refresh --store URL && python -m codex_ci persist --to URL` for each "
    f"runner, all spawned back to back, timed from the first spawn to the last exit; (b) forked workers: forked "
    "after importing codex_ci and the store's SDK and opening the store, released by one multiprocessing.Barrier, "
    "each calling `distributed_refresh` then `persist`, timed from the release to the last return. Each is "
    f"compared with 1 runner alone doing the same, rounds interleaved. (a): {ROUNDS_PROCESSES} round, fleet and "
    f"single (a fleet round of processes takes 8-50 s here); (b): medians of {ROUNDS_FORKED} rounds, fleet and "
    "single. Every "
    "round: a new secret holding the stale login and a released lease record, a new strict token server "
    f"answering after {DELAY}s (it counts POSTs and "
    "refresh_token_reused answers), new homes. Checked after each round: every runner's auth.json and the store "
    "hold the token server's live refresh token. Store servers as in the stores benchmark (OpenBao dev server, "
    "moto's server, the gRPC Secret Manager fake, a local file)."
)


@dataclass
class Round:
    seconds: float
    posts: int
    reused: int
    failures: int
    runners_current: int  # runners whose auth.json holds the live refresh token
    store_current: bool  # the store holds it
    refresher_seconds: float | None = None  # (b): when the worker that rotated the login returned
    calls: dict[str, int] = field(default_factory=dict)  # (b): store round trips of all the workers, by kind
    lease_reads: list[int] = field(default_factory=list)  # (b): lease reads per worker (1 + retries)
    cpu_seconds: float = 0.0  # (a): user + system time of the runners' processes

    def correct(self, count: int) -> bool:
        return (self.posts, self.reused, self.failures, self.runners_current, self.store_current) == (
            1, 0, 0, count, True)


def _login(*, expires_in: int, refresh_token: str) -> str:
    data = make_login(access_exp=int(time.time()) + expires_in, refresh_token=refresh_token)
    return json.dumps(data, indent=2)


def _in_child(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child and return what it returns (store work stays out of this process)."""
    ctx = multiprocessing.get_context("fork")
    answers: Queue[tuple[bool, Any]] = ctx.Queue()

    def target() -> None:
        try:
            answers.put((True, fn()))
        except Exception as exc:
            answers.put((False, f"{type(exc).__name__}: {exc}"))

    child = ctx.Process(target=target)
    child.start()
    try:
        ok, value = answers.get(timeout=TIMEOUT)
    finally:
        child.join(TIMEOUT)
        if child.is_alive():
            child.kill()
    if not ok:
        raise RuntimeError(f"fleet: a child failed: {value}")
    return value


def _seed(be: Backend, url: str) -> None:
    """The store holds a stale login with the token server's first refresh token, and a released lease record."""

    def seed() -> None:
        store = be.open(url)
        store.write(_login(expires_in=-600, refresh_token=TOKEN), None)
        store.sibling("lease").write(json.dumps({"holder": None, "released_at": "2026-01-01T00:00:00Z"}), None)

    _in_child(seed)


def _check(be: Backend, url: str, homes: list[Path], server: TokenServer) -> tuple[int, bool]:
    live = server.current_refresh_token
    current = 0
    for home in homes:
        with contextlib.suppress(OSError, ValueError, KeyError):
            current += json.loads((home / "auth.json").read_text())["tokens"]["refresh_token"] == live

    def stored() -> str:
        found = be.open(url).read()
        return "" if found is None else str(json.loads(found.value)["tokens"]["refresh_token"])

    return current, _in_child(stored) == live


# ---- (a) processes ------------------------------------------------------------------------------------------------


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_round(be: Backend, count: int, work: Path) -> Round:
    url = be.new_url()
    _seed(be, url)
    homes = [work / f"home-{i}" for i in range(count)]
    with TokenServer(initial_refresh_token=TOKEN, delay=DELAY, access_ttl=86400) as server:
        env = clean_env(CODEX_REFRESH_TOKEN_URL_OVERRIDE=server.url, **be.env)
        py = shlex.quote(str(PYTHON))
        scripts = [f"{py} -m codex_ci refresh --store {shlex.quote(url)} --codex-home {shlex.quote(str(home))} && "
                   f"{py} -m codex_ci persist --to {shlex.quote(url)} --codex-home {shlex.quote(str(home))}"
                   for home in homes]
        cpu, started = _children_cpu(), time.perf_counter()
        procs = [subprocess.Popen(["sh", "-c", script], env=env, cwd=work, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for script in scripts]
        try:
            errors = [p.communicate(timeout=TIMEOUT)[1].decode(errors="replace") for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        elapsed, cpu = time.perf_counter() - started, _children_cpu() - cpu
        failed = [err for p, err in zip(procs, errors, strict=True) if p.returncode != 0]
        if failed:
            print(f"fleet: {be.kind}: a runner failed: {failed[0][-500:]}", file=sys.stderr)
        current, in_store = _check(be, url, homes, server)
        return Round(elapsed, server.posts, server.reused, len(failed), current, in_store, cpu_seconds=cpu)


# ---- (b) forked workers -------------------------------------------------------------------------------------------

Report = tuple[bool, float, str, dict[str, int], int]  # (rotated, finished, error, calls by kind, lease reads)


def _worker(be: Backend, url: str, home: Path, barrier: Barrier, reports: Queue[Report]) -> None:
    from codex_ci.distributed import distributed_refresh
    from codex_ci.home import Home
    from codex_ci.sync import persist

    recorder = Recorder()
    recorder.install(be.kind)
    store = be.open(url)
    barrier.wait(TIMEOUT)
    try:
        with recorder.counting() as calls:
            result = distributed_refresh(Home(home), store, POLICY, lock_timeout=60, lease_ttl=LEASE_TTL,
                                         lease_wait=LEASE_WAIT)
            persist(Home(home), store, lock_timeout=60)
        finished = time.monotonic()
        tally = Tally.of(list(calls))
        kinds = {"reads": tally.reads, "writes": tally.writes, "moves": tally.moves, "other": tally.other}
        reports.put((result.refreshed, finished, "", kinds, tally.lease_reads))
    except Exception as exc:  # reported to the parent, which counts it as a failure
        reports.put((False, time.monotonic(), f"{type(exc).__name__}: {exc}", {}, 0))


def _fork_round(be: Backend, count: int, work: Path) -> Round:
    ctx = multiprocessing.get_context("fork")
    url = be.new_url()
    _seed(be, url)
    homes = [work / f"home-{i}" for i in range(count)]
    server = TokenServer(initial_refresh_token=TOKEN, delay=DELAY, access_ttl=86400)
    try:
        with environ(CODEX_REFRESH_TOKEN_URL_OVERRIDE=server.url, NO_PROXY=LOOPBACK, no_proxy=LOOPBACK, **be.env):
            barrier = ctx.Barrier(count + 1)
            reports: Queue[Report] = ctx.Queue()
            workers = [ctx.Process(target=_worker, args=(be, url, home, barrier, reports)) for home in homes]
            released, results = release_workers(workers, barrier, reports, server, TIMEOUT)
        errors = [error for _, _, error, _, _ in results if error]
        if errors:
            print(f"fleet: {be.kind}: worker errors: {sorted(set(errors))}", file=sys.stderr)
        rotated = [finished - released for done, finished, _, _, _ in results if done]
        calls = {k: sum(r[3].get(k, 0) for r in results) for k in ("reads", "writes", "moves", "other")}
        current, in_store = _check(be, url, homes, server)
        return Round(max(finished for _, finished, _, _, _ in results) - released, server.posts, server.reused,
                     len(errors), current, in_store, rotated[0] if rotated else None, calls,
                     sorted(r[4] for r in results))
    finally:
        server.stop()


# ---- running and reporting ----------------------------------------------------------------------------------------


@dataclass
class Comparison:
    kind: str  # the store
    mode: str  # "(a) processes" or "(b) forked"
    fleet: list[Round]
    single: list[Round]

    @property
    def fleet_s(self) -> float:
        return median([r.seconds for r in self.fleet])

    @property
    def single_s(self) -> float:
        return median([r.seconds for r in self.single])

    @property
    def ratio(self) -> float:
        return self.fleet_s / self.single_s

    @property
    def correct(self) -> bool:
        return all(r.correct(FLEET) for r in self.fleet) and all(r.correct(1) for r in self.single)

    def rows(self) -> list[Row]:
        posts = ", ".join(str(r.posts) for r in self.fleet)
        reused = sum(r.reused for r in self.fleet + self.single)
        failures = sum(r.failures for r in self.fleet + self.single)
        current = ", ".join(f"{r.runners_current}/{FLEET}" for r in self.fleet)
        stored = all(r.store_current for r in self.fleet + self.single)
        label = f"{self.kind} {self.mode}"
        return [
            Row(f"{label}: {FLEET} at once / 1 alone, median wall",
                f"{ms(self.fleet_s)} ms / {ms(self.single_s)} ms = {self.ratio:.2f}x", f"<= {TARGET:.0f}x",
                self.ratio <= TARGET),
            Row(f"{label}: POSTs per round; refresh_token_reused; failures", f"{posts}; {reused}; {failures}",
                "1 each; 0; 0", all(r.posts == 1 for r in self.fleet + self.single) and reused == failures == 0),
            Row(f"{label}: runners ending with the live refresh token; store holds it",
                f"{current}; {'yes' if stored else 'NO'}", f"{FLEET}/{FLEET}; yes", self.correct),
        ]


def _prepare(kind: str) -> None:
    """Import what a runner of this store uses, so that forked workers start with it loaded."""
    for name in ("codex_ci.distributed", "codex_ci.refresh", "codex_ci.lease", f"codex_ci.stores.{kind}", "filelock",
                 "httpx", *SDK[kind]):
        importlib.import_module(name)


def _measure(be: Backend, mode: str, measure: Callable[[Backend, int, Path], Round], rounds: int,
             singles: int) -> Comparison:
    """Fleet and single rounds interleaved (single first), so that drift on a shared machine hits both alike."""
    print(f"fleet: {be.kind} {mode}: {rounds} x {FLEET} and {singles} x 1, interleaved", file=sys.stderr, flush=True)

    def once(count: int) -> Round:
        with tempfile.TemporaryDirectory(prefix="codex-ci-fleet-") as tmp:
            return measure(be, count, Path(tmp))

    fleet: list[Round] = []
    single: list[Round] = []
    for n in range(max(rounds, singles)):
        if n < singles:
            single.append(once(1))
        if n < rounds:
            fleet.append(once(FLEET))
    return Comparison(be.kind, mode, fleet, single)


def _notes(comparisons: list[Comparison]) -> list[str]:
    cpus = len(os.sched_getaffinity(0))
    processes = [c for c in comparisons if c.mode.startswith("(a)")]
    forked = [c for c in comparisons if c.mode.startswith("(b)")]

    def cpu_of(rounds: list[Round]) -> float:
        return median([r.cpu_seconds for r in rounds])

    figures = "; ".join(
        f"{c.kind}: {cpu_of(c.fleet):.1f} s CPU for {c.fleet_s:.1f} s wall (alone {cpu_of(c.single):.2f} s CPU, "
        f"{c.single_s:.2f} s wall: floor {FLEET * cpu_of(c.single) / cpus / c.single_s:.1f}x)" for c in processes)
    notes = [
        f"(a) is CPU-bound on interpreter and SDK start-up: each runner starts two Python processes (refresh, then "
        f"persist) that import codex-ci and the store's SDK, so a round starts {2 * FLEET} of them on {cpus} CPUs. "
        f"The fleet cannot beat {FLEET} x one runner's CPU time / {cpus} CPUs, so the ratio's floor is that over "
        f"one runner's wall time: {figures}. What the fleet takes above that floor is the lease back-off of the "
        "waiting runners (as in (b)) and the contention of more processes than CPUs.",
    ]
    parts, waits = [], []
    for c in forked:
        done = [r.refresher_seconds for r in c.fleet if r.refresher_seconds is not None]
        tail = [r.seconds - r.refresher_seconds for r in c.fleet if r.refresher_seconds is not None]
        lease_reads = [n for r in c.fleet for n in r.lease_reads]
        calls = [sum(r.calls.values()) for r in c.fleet]
        waits.append(median(tail) / c.single_s)
        parts.append(f"{c.kind}: {ms(c.fleet_s)} ms = rotation {ms(median(done))} ms (alone {ms(c.single_s)} ms) "
                     f"+ wait {ms(median(tail))} ms; {median(calls):.0f} store round trips per round for all "
                     f"{FLEET} workers, {min(lease_reads)} to {max(lease_reads)} lease attempts per worker")
    notes.append(
        "(b) forked, the fleet's wall time split into the rotation (release to the return of the worker that "
        "rotated) and the wait (from then to the last worker's return): " + "; ".join(parts) + ". The rotation is "
        "slower than alone because all the workers restore and try the lease at the same instant, on the same 2 "
        "CPUs as the store server (moto, a Python server, most of all). The wait is the lease back-off in "
        "codex_ci/sync.py: a worker that finds the lease taken sleeps 0.125-0.375 s, then 0.25-0.75 s (doubling, "
        "jittered) before it reads the store again, so most workers re-check once before the rotation is done and "
        "then sleep up to 0.75 s more. Against a single runner that needs about "
        f"{DELAY * 1000:.0f} ms for the token endpoint plus a few store round trips, the wait alone is "
        f"{min(waits):.1f}-{max(waits):.1f}x; a shorter poll while the lease is young (say every 50-100 ms for "
        "the first second) would bring the wait down to about one poll."
    )
    return notes


def run() -> Outcome:
    comparisons: list[Comparison] = []
    for kind in KINDS:
        with backend(kind, gcp_in_process=False) as be:
            comparisons.append(_measure(be, "(a) processes", _process_round, ROUNDS_PROCESSES,
                                        SINGLE_PROCESSES))
            _prepare(kind)
            comparisons.append(_measure(be, "(b) forked", _fork_round, ROUNDS_FORKED, ROUNDS_FORKED))
    rows = [row for c in comparisons for row in c.rows()]
    data = {
        "fleet": FLEET, "rounds_processes": ROUNDS_PROCESSES, "single_processes": SINGLE_PROCESSES,
        "rounds_forked": ROUNDS_FORKED, "target_ratio": TARGET,
        "server_delay_s": DELAY,
        "results": [{"store": c.kind, "mode": c.mode, "ratio": round(c.ratio, 3), "fleet": [asdict(r) for r in c.fleet],
                     "single": [asdict(r) for r in c.single]} for c in comparisons],
    }
    return Outcome("fleet", HOW, rows, data, _notes(comparisons), passed=all(c.correct for c in comparisons))
