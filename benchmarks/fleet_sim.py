"""fleet_sim: a simulated CI fleet sharing one ChatGPT login through a store, against the strict rotating endpoint.

Each simulated job is what a CI job does with the action: a fresh CODEX_HOME; ``refresh --store`` (the distributed
refresh); "use" the login for a random time; ``persist``. Jobs run at a random concurrency (1 to 16 at once,
changing every few jobs), mostly in long-lived worker processes that call ``codex_ci.sync`` directly (one store
client per worker, as one CLI process has one), and a small share as real ``python -m codex_ci`` processes.

Runners' wall clocks are off by up to ±10 minutes for a share of the jobs: a CLI job then runs under libfaketime
(``faketime -f +NNNs python -m codex_ci ...``), an in-process job with codex-ci's clock (``authfile.utcnow``, as
every codex_ci module bound it) offset in its worker. Monotonic clocks are never skewed (they are per machine).

Runners die mid-job, at a point chosen per job, really: ``kill`` is SIGKILL of the worker process (no ``finally``,
no lease release), ``abandon`` raises out of the job like a failing step (``finally`` blocks run), ``sigint`` and
``sigterm`` send that signal to the worker process (a cancelled job: codex-ci defers it through a rotation, else
stops with exit 130 or 143). The points:

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

Cancelled mid-POST: the token server picks rotations (the first, then every CANCEL_EVERY-th, of jobs given no death
point) and, having rotated, signals the job's process (the worker, or the CLI process) with SIGINT or SIGTERM in
turn, then answers CANCEL_DELAY later. The job must finish the rotation, save the new login to the store and stop
with exit 130 or 143; then its persist step runs or the runner vanishes.

Checks, from the token server's own log (the chain of refresh tokens and when each was spent) and the tokens the
jobs saw in or wrote to the store: refresh_token_reused 0; not revoked; no rotation lost (its refresh token never
reached the store and no later rotation superseded it), counting losses inside the documented window apart; the
store ends with the server's live login; every job cancelled mid-POST saved its rotation and exited 130 or 143;
every job that finished held a login that was live at some point during the job (not spent before it started), and
none kept a login whose access token had expired by its own clock when the job started; no job failed that was not
killed; no token in any CLI output.
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
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from benchmarks import stores
from benchmarks.common import LOOPBACK
from benchmarks.report import Outcome, Row
from testing.tokenserver import TokenServer, make_login

KINDS = ("file", "vault", "aws", "gcp")
MIN_TTL = 60  # seconds: --min-ttl
# Each new access token lives 1-2 s (exp is whole seconds). codex-ci rotates a login at most once a minute unless
# its access token has expired (refresh.too_soon), and not while more than half its lifetime is left
# (refresh.threshold): so a login is rotated when its access token expires, every 1-2 s, i.e. every few jobs.
ACCESS_TTL = 2
LEASE_TTL = 15  # seconds: the workers' lease TTL (a killed holder blocks the fleet this long). codex-ci sends no
# POST that could outlive its lease minus a margin (sync.LEASE_MARGIN, at most a quarter of the TTL); one attempt of
# CLIENT may take 4 s; the rest is for the store re-read and the lock under the lease, slow on 2 busy CPUs
CLIENT: dict[str, Any] = {"connect_timeout": 1.0, "read_timeout": 3.0, "attempts": 1}
CLI_REFRESH = ["--lease-ttl", "25s", "--timeout", "2", "--retries", "0"]  # connect and read within 2 s each
LEASE_WAIT = 90.0  # seconds: --lease-wait
MAX_CONCURRENCY = 16
PHASE_JOBS = (4, 30)  # a new random concurrency every this many jobs
USE_SECONDS = (0.0, 0.25)  # the job's use of the login
CLI_SHARE = 0.04
DEATH_SHARE = 0.2  # jobs given a death point outside the lease (after restore, after refresh, before persist)
LEASE_DEATH_SHARE = 0.05  # jobs given a lease holder's death point (it fires only if the job takes the lease)
SKEW_SHARE = 0.15  # in-process jobs whose runner's wall clock is off
CLI_SKEW_SHARE = 0.5  # CLI jobs run under faketime
MAX_SKEW = 600  # seconds: a skewed clock is off by 1 s to 10 minutes, either way
CANCEL_EVERY = 4  # the first rotation POST of a job without a death point, then every 4th, is cancelled mid-POST
# The token server answers a cancelled POST this long after signalling its sender: the signal is handled while the
# POST is in flight, and the answer still comes far inside the client's read timeout and interrupts.GRACE_SECONDS
CANCEL_DELAY = 0.3
# seconds the token server waits to learn the pid of a CLI job it cancels (its worker wrote it when it started the
# process, so it is there at once): with CANCEL_DELAY, well inside the CLI's --timeout
PID_WAIT = 1.0
POINTS = ("after_restore", "lease_taken", "rotated", "stored", "refreshed", "before_persist")
LEASE_POINTS = ("lease_taken", "rotated", "stored")
SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}
EXIT_OF = {signal.SIGINT.name: 130, signal.SIGTERM.name: 143}
JOB_TIMEOUT = 150.0
SPARE_WORKERS = 2  # beyond MAX_CONCURRENCY: the persist steps of dead runners never wait for a slot
TOKEN_PREFIX = "FLEET"
FIRST_TOKEN = f"{TOKEN_PREFIX}-rt-0"
TOKEN_URL = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"
FAKETIME = shutil.which("faketime") or "/usr/bin/faketime"
# libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 makes Python 3.11's time.sleep fail with EINVAL
# (clock_nanosleep with TIMER_ABSTIME: wolfcw/libfaketime#426), and faking the monotonic clock instead makes
# threading waits hang for the offset; so the CLI keeps the real monotonic clock and sleeps by select().
SHIM = '''"""fleet_sim under faketime: time.sleep by select() (libfaketime#426 breaks clock_nanosleep here)."""
import select
import time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


time.sleep = _sleep
'''
JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}")
PRELOAD = ["benchmarks.fleet_sim", "codex_ci.distributed", "codex_ci.refresh", "codex_ci.stores.file",
           "codex_ci.stores.vault", "codex_ci.stores.aws", "codex_ci.stores.gcp", "hvac", "boto3",
           "google.cloud.secretmanager", "filelock"]
HOW = (
    "each job = fresh CODEX_HOME, `refresh --store` (distributed), use the login for U(0, 0.25) s, `persist`; "
    f"jobs at a random concurrency 1-{MAX_CONCURRENCY} (redrawn every 4-30 jobs), {100 - CLI_SHARE * 100:.0f}% in "
    "long-lived worker processes calling `codex_ci.sync` (started by a forkserver; one store client per worker), "
    f"{CLI_SHARE * 100:.0f}% as real `python -m codex_ci refresh --store` + `persist` processes. Strict rotating "
    f"token server (reuse of a spent refresh token revokes the login), access tokens valid {ACCESS_TTL} s (iat = "
    f"issue time) with --min-ttl {MIN_TTL}s: codex-ci never rotates a login twice within a minute unless its access "
    "token has expired, so the login is rotated each time its access token expires, every few jobs. Wall clocks: "
    f"{SKEW_SHARE * 100:.0f}% of the in-process jobs and {CLI_SKEW_SHARE * 100:.0f}% of the CLI jobs run on a clock "
    f"off by U(1 s, {MAX_SKEW // 60} min) either way (CLI: `faketime -f +NNNs`, real monotonic clock; in process: "
    "codex-ci's utcnow offset); with 2-s access tokens a runner ahead sees every token expired and rotates it "
    "whenever it gets the lease, one behind sees it fresh and rotates nothing. Lease TTL "
    f"{LEASE_TTL} s for the workers (token client: 1 s connect, 3 s read, no retry), 25 s for the CLI jobs "
    "(`--timeout 2 --retries 0`): codex-ci sends no POST that could outlive its lease. Deaths: "
    f"{DEATH_SHARE * 100:.0f}% of jobs die after restore, after refresh or before persist, and "
    f"{LEASE_DEATH_SHARE * 100:.0f}% are given a lease holder's death point (holding the lease before the POST, "
    "between the rotation and the store write, after the store write before the release), which fires only if "
    "the job takes the lease; a death is a SIGKILL of the worker, an abandon (an exception out of the job) or a "
    "SIGINT/SIGTERM to the worker, then the runner's persist step runs from its CODEX_HOME or the runner vanishes "
    "(a runner killed between the rotation and the store write always gets its persist step, as README requires). "
    f"Cancelled mid-POST: the first rotation of a job without a death point, then every {CANCEL_EVERY}th, is "
    "answered only after the token server has sent the job's process (worker or CLI) SIGINT or SIGTERM in turn "
    f"and waited {CANCEL_DELAY} s. A loss inside the documented window is measured apart (`window trial`: the "
    "runner vanishes there). Store servers: a file, OpenBao dev server, moto server, the tests' gRPC Secret "
    "Manager fake, all on loopback."
)

log = logging.getLogger("codex_ci.fleet_sim")


# ---- the jobs -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    n: int
    runner: str  # "inproc" or "cli"
    use_seconds: float
    death: str | None = None  # one of POINTS
    mode: str = "kill"  # "kill" (SIGKILL), "abandon" (an exception out of the job), "sigint" or "sigterm"
    after: str = "persist"  # after a death: "persist" (the persist step runs) or "vanish"
    skew: int = 0  # seconds the runner's wall clock is off (+ ahead, - behind)
    after_cancel: str = "persist"  # after a cancel mid-POST (chosen by the token server): "persist" or "vanish"


def _skew(rng: random.Random, share: float) -> int:
    return rng.choice((-1, 1)) * rng.randint(1, MAX_SKEW) if rng.random() < share else 0


def plan(jobs: int, seed: int, *, cli_share: float = CLI_SHARE) -> list[JobSpec]:
    """Random job specs, reproducible from ``seed``."""
    rng = random.Random(seed)  # noqa: S311 (a simulation, not cryptography)
    specs = []
    for n in range(jobs):
        runner = "cli" if rng.random() < cli_share else "inproc"
        use = round(rng.uniform(*USE_SECONDS), 3)
        skew = _skew(rng, CLI_SKEW_SHARE if runner == "cli" else SKEW_SHARE)
        after_cancel = rng.choice(("persist", "vanish"))
        draw = rng.random()
        base = JobSpec(n, runner, use, skew=skew, after_cancel=after_cancel)
        if draw >= DEATH_SHARE + LEASE_DEATH_SHARE:
            specs.append(base)
            continue
        if runner == "cli":  # a CLI job's runner goes away before its persist step
            specs.append(JobSpec(n, runner, use, "before_persist", "kill", "vanish", skew, after_cancel))
            continue
        point = rng.choice(LEASE_POINTS if draw < LEASE_DEATH_SHARE else
                           [p for p in POINTS if p not in LEASE_POINTS])
        if point == "rotated":
            # no abandon here: nothing can raise between the rotation and the point where codex-ci keeps the lease
            # (SIGINT and SIGTERM are deferred through the rotation), and a raise there would release the lease
            # over the spent token. A signal is deferred until the login is saved, so the runner may then vanish.
            mode = rng.choice(("kill", "sigint", "sigterm"))
            after = "persist" if mode == "kill" else rng.choice(("persist", "vanish"))
        else:
            mode = rng.choice(("kill", "abandon", "sigint", "sigterm"))
            after = rng.choice(("persist", "vanish"))
        specs.append(JobSpec(n, runner, use, point, mode, after, skew, after_cancel))
    return specs


def _tagged(url: str, n: int, runner: str) -> str:
    """The token URL as one job sends it: the query names the job, for the token server's cancellations."""
    return f"{url}?job={n}&runner={runner}"


def pid_file(home: str | Path) -> Path:
    """Where a CLI job's worker records the pid of the CLI process it started (for the token server)."""
    home = Path(home)
    return home.with_name(f"{home.name}.cli-pid")


# ---- the worker process ---------------------------------------------------------------------------------------------


class Abandon(BaseException):  # noqa: N818 (like KeyboardInterrupt: not an error, a job that stops)
    """The job stops here, as a failing step would; ``finally`` blocks run."""


class _Current:
    """The job a worker runs now, for the hooks."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] | None = None
        self.report: dict[str, Any] = {}
        self.conn: Connection | None = None
        self.restores = 0


CURRENT = _Current()


class _Clock:
    """This runner's wall clock: real time plus ``offset`` seconds (set per job)."""

    offset = 0.0

    def utcnow(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)


CLOCK = _Clock()


def _skew_codex_clock() -> None:
    """Make every codex_ci module read the worker's clock: claims.utcnow (authfile re-exports it) and each module's
    binding of it (they import it by name). Modules imported later bind the replaced one."""
    import codex_ci.authfile as authfile

    for name in ("sync", "distributed", "rotate", "seed", "lease", "refresh", "state", "status", "files", "claims"):
        importlib.import_module(f"codex_ci.{name}")
    real = authfile.utcnow
    for name, module in list(sys.modules.items()):
        if (name == "codex_ci" or name.startswith("codex_ci.")) and getattr(module, "utcnow", None) is real:
            module.utcnow = CLOCK.utcnow  # type: ignore[attr-defined]


def _token(value: bytes | str) -> str | None:
    try:
        token = json.loads(value)["tokens"]["refresh_token"]
    except (ValueError, KeyError, TypeError):
        return None
    return token if isinstance(token, str) else None


def _home_token(home: Path) -> str | None:
    try:
        return _token((home / "auth.json").read_bytes())
    except OSError:
        return None


def _checkpoint(point: str) -> None:
    spec = CURRENT.spec
    if spec is None or spec["death"] != point:
        return
    CURRENT.report["died_at"] = point
    mode = spec["mode"]
    if mode == "abandon":
        raise Abandon(point)
    if mode in SIGNALS:
        from codex_ci import interrupts

        os.kill(os.getpid(), SIGNALS[mode])
        # outside a rotation the handler raises Interrupted at once; inside one it only records the signal, and the
        # rotation raises it once the new login is saved
        for _ in range(1000):
            if interrupts.pending() is not None:
                return
            time.sleep(0.01)
        raise RuntimeError(f"{mode} at {point} was neither raised nor deferred")
    assert CURRENT.conn is not None
    CURRENT.conn.send(("dying", CURRENT.report))
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


def _install_hooks(store: Any) -> None:
    """Wrap the calls the death points follow, and the store's writes (to learn which logins reached it)."""
    from codex_ci import distributed
    from codex_ci.lease import Lease

    # distributed.py's own globals (imported there, not re-exported)
    real_restore, real_refresh_home = getattr(distributed, "restore"), getattr(distributed, "refresh_home")  # noqa: B009
    real_acquire, real_release = Lease.try_acquire, Lease.release
    real_write = store.write

    def restore(*args: Any, **kw: Any) -> Any:
        began = time.monotonic()  # the store is read after this
        result = real_restore(*args, **kw)
        if CURRENT.spec is not None:
            if result.auth is not None and result.auth.refresh_token is not None:
                token = result.auth.refresh_token.reveal()
                CURRENT.report["in_store"].append(token)
                CURRENT.report["read_at"].setdefault(token, began)
            CURRENT.restores += 1
            if CURRENT.restores == 1:
                CURRENT.report["first_token"] = CURRENT.report["in_store"][-1] if CURRENT.report["in_store"] else None
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

    def write(value: str, expected: str | None) -> str:
        version = str(real_write(value, expected))
        if CURRENT.spec is not None:
            token = _token(value)
            if token:
                CURRENT.report["stored"].append(token)
                CURRENT.report["stored_at"].append((token, time.monotonic()))  # written by now
        return version

    setattr(distributed, "restore", restore)  # noqa: B010 (the names distributed.py calls: its own globals)
    setattr(distributed, "refresh_home", refresh_home)  # noqa: B010
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
    from codex_ci import interrupts
    from codex_ci.stores import open_store

    interrupts.install()  # as the CLI does: SIGINT and SIGTERM raise Interrupted, deferred through a rotation
    _skew_codex_clock()
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
            "died_at": None, "error": None, "exit": None, "signal": None, "skew": task.get("skew", 0),
            "t_start": time.monotonic(), "clock_start": time.time() + task.get("skew", 0), "t_got": None,
            "t_end": None, "token": None, "first_token": None, "kept": False, "exp": None, "expired_real": None,
            "rotated_to": None, "stored": [], "stored_at": [], "in_store": [], "read_at": {}, "t_refresh_end": None,
            "lease_taken": False, "persist_action": None, "warnings": [], "leaks": 0}


def _fail(report: dict[str, Any], exc: BaseException) -> None:
    from codex_ci.errors import CodexCIError

    report["status"] = "failed"
    if isinstance(exc, CodexCIError):
        report["error"], report["exit"] = f"{type(exc).__name__}: {exc.message}", int(exc.exit_code)
    else:
        report["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"


def _use(home: Path, report: dict[str, Any], use_seconds: float) -> None:
    """What the job does with the login: read it, then work for a while. Whether its access token was still valid
    by the runner's own clock when the job started is judged in analyse (report["clock_start"])."""
    auth = json.loads((home / "auth.json").read_text())
    report["t_got"] = time.monotonic()
    report["token"] = auth["tokens"]["refresh_token"]
    from testing.tokenserver import decode_jwt_payload

    exp = decode_jwt_payload(auth["tokens"]["access_token"]).get("exp")
    report["exp"] = exp if isinstance(exp, int) else None
    report["expired_real"] = report["exp"] is None or report["exp"] <= time.time()
    time.sleep(use_seconds)
    report["t_end"] = time.monotonic()


def _run_job(task: dict[str, Any], store: Any, conn: Connection, config: dict[str, Any]) -> dict[str, Any]:
    from codex_ci.distributed import distributed_refresh
    from codex_ci.errors import Interrupted
    from codex_ci.home import Home
    from codex_ci.policy import Policy
    from codex_ci.refresh import TokenClient
    from codex_ci.sync import persist

    report = _new_report(task)
    CURRENT.spec, CURRENT.report, CURRENT.conn, CURRENT.restores = task, report, conn, 0
    CLOCK.offset = task["skew"]
    os.environ[TOKEN_URL] = _tagged(config["token_url"], task["n"], task["runner"])
    home = Path(task["home"])
    try:
        if task["runner"] == "cli":
            _run_cli_job(task, report, config)
            return report
        policy = Policy(timedelta(seconds=MIN_TTL), timedelta(days=8))
        result = distributed_refresh(Home(home), store, policy, lock_timeout=30, lease_ttl=timedelta(seconds=LEASE_TTL),
                                     lease_wait=LEASE_WAIT, client=TokenClient(**CLIENT))
        _checkpoint("refreshed")
        _use(home, report, task["use_seconds"])
        report["kept"] = not result.refreshed and report["token"] == report["first_token"]
        _checkpoint("before_persist")
        report["persist_action"] = persist(Home(home), store, lock_timeout=30).action
        report["status"] = "ok"
    except Abandon:
        report["status"] = "died"
    except Interrupted as exc:
        report.update(status="cancelled", exit=int(exc.exit_code), signal=signal.Signals(exc.signum).name)
    except Exception as exc:
        _fail(report, exc)
    finally:
        CURRENT.spec = None
        CLOCK.offset = 0.0
    return report


def _clean_faketime(pid: int) -> None:
    """What the faketime wrapper leaves in /dev/shm when it is killed."""
    for name in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
        with contextlib.suppress(OSError):
            os.unlink(f"/dev/shm/{name}")  # noqa: S108 (the wrapper's own names, for its pid)


def _cli(args: list[str], report: dict[str, Any], task: dict[str, Any], config: dict[str, Any]
         ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m codex_ci ARGS`` as this job's runner would: under faketime when its clock is skewed."""
    command = [sys.executable, "-m", "codex_ci", *args]
    env = {**os.environ, TOKEN_URL: _tagged(config["token_url"], task["n"], "cli")}
    if task["skew"]:
        command = [FAKETIME, "-f", f"{task['skew']:+d}s", *command]
        path = [config["shim"], *filter(None, [env.get("PYTHONPATH")])]
        env |= {"FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    pid_file(task["home"]).write_text(str(proc.pid))
    try:
        stdout, stderr = proc.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        _clean_faketime(proc.pid)
    for text in (stdout, stderr):
        report["leaks"] += bool(JWT.search(text) or f"{TOKEN_PREFIX}-rt-" in text or "Traceback" in text)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _cli_persist(task: dict[str, Any], report: dict[str, Any], config: dict[str, Any]) -> bool:
    """The persist step of a CLI job. A persist the store won (superseded: exit 10) wrote nothing, by design."""
    persist = _cli(["persist", "--to", config["url"], "--codex-home", task["home"]], report, task, config)
    if persist.returncode not in (0, 10):
        report.update(status="failed", exit=persist.returncode, error=persist.stderr.strip()[-300:])
        return False
    report["persist_action"] = ("superseded" if persist.returncode == 10 else
                                "written" if "codex-ci: wrote" in persist.stderr else "unchanged")
    return True


def _run_cli_job(task: dict[str, Any], report: dict[str, Any], config: dict[str, Any]) -> None:
    home = Path(task["home"])
    refresh = _cli(["refresh", "--store", config["url"], "--codex-home", str(home), "--min-ttl", f"{MIN_TTL}s",
                    "--lease-wait", str(LEASE_WAIT), *CLI_REFRESH], report, task, config)
    report["t_refresh_end"] = time.monotonic()  # a login this CLI rotated was in the store by then
    if refresh.returncode in EXIT_OF.values():  # cancelled (mid-POST): the rotation must be saved first
        report.update(status="cancelled", exit=refresh.returncode, rotated_to=_home_token(home),
                      signal={v: k for k, v in EXIT_OF.items()}[refresh.returncode])
        if task["after_cancel"] == "persist":
            _cli_persist(task, report, config)
        return
    if refresh.returncode != 0:
        report.update(status="failed", exit=refresh.returncode, error=refresh.stderr.strip()[-300:])
        return
    token = _home_token(home)
    report["in_store"].append(token)  # refresh --store exits 0 only with its login in the store
    report["read_at"][token] = report["t_start"]  # read from the store at the earliest when the CLI started
    if "codex-ci: refreshed:" in refresh.stderr:
        report["rotated_to"] = token
    _use(home, report, task["use_seconds"])
    report["kept"] = ("codex-ci: not refreshed:" in refresh.stderr
                      and "another runner refreshed it" not in refresh.stderr)
    if task["death"] == "before_persist":
        report.update(status="died", died_at="before_persist")
        return
    if _cli_persist(task, report, config):
        report["status"] = "ok"


def _persist_step(task: dict[str, Any], store: Any) -> dict[str, Any]:
    """The persist step of a runner whose job died or was cancelled, from the same CODEX_HOME (and clock)."""
    from codex_ci.home import Home
    from codex_ci.sync import persist

    report = _new_report(task)
    CURRENT.spec, CURRENT.report, CURRENT.conn = {"death": None}, report, None
    CLOCK.offset = task.get("skew", 0)
    try:
        report["persist_action"] = persist(Home(Path(task["home"])), store, lock_timeout=30).action
        report["status"] = "ok"
    except Exception as exc:
        _fail(report, exc)
    finally:
        CURRENT.spec = None
        CLOCK.offset = 0.0
    return report


# ---- the token server's cancellations -------------------------------------------------------------------------------


class FleetTokenServer(TokenServer):
    """The strict token server, plus cancellations mid-POST: the first rotation POST of an eligible job (one given
    no death point), then every ``cancel_every``-th, is answered only after the job's process got SIGINT or
    SIGTERM (in turn) and CANCEL_DELAY passed. ``eligible(n)`` and ``pid_of(n, runner)`` are the fleet's."""

    def __init__(self, *args: Any, cancel_every: int = 0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.cancel_every = cancel_every
        self.eligible: Callable[[int], bool] = lambda n: False
        self.pid_of: Callable[[int, str], int | None] = lambda n, runner: None
        self.cancels: list[dict[str, Any]] = []
        self._due = cancel_every > 0
        self._local = threading.local()

    def issue_next(self) -> dict[str, Any]:
        response = super().issue_next()  # under self.lock, in the handler's thread
        self._local.issued = (self.issued, response["refresh_token"])
        if self.cancel_every and self.issued % self.cancel_every == 1 % self.cancel_every:
            self._due = True
        return response

    def answering(self, entry: dict[str, Any], query: dict[str, list[str]]) -> None:
        """The token server's hook, before each answer: a rotation due to be cancelled is answered only after its
        sender has been signalled."""
        self.cancel(query)

    def cancel(self, query: dict[str, list[str]]) -> None:
        issued, self._local.issued = getattr(self._local, "issued", None), None
        try:
            n, runner = int(query["job"][0]), query["runner"][0]
        except (KeyError, IndexError, ValueError):
            return
        with self.lock:
            if issued is None or not self._due or not self.eligible(n):
                return
            self._due = False
            signum = (signal.SIGINT, signal.SIGTERM)[len(self.cancels) % 2]
            entry: dict[str, Any] = {"n": n, "runner": runner, "signal": signum.name, "rotation": issued[0],
                                     "token": issued[1], "pid": None}
            self.cancels.append(entry)
        pid = self.pid_of(n, runner)
        try:
            if pid is None:
                raise ProcessLookupError
            os.kill(pid, signum)
        except OSError:  # counted (cancels_not_delivered) and failed by analyse; the answer still goes out
            entry["error"] = "the job's process was not found"
            return
        entry["pid"] = pid
        time.sleep(CANCEL_DELAY)


def _ppid(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cli_process(home: str | Path) -> int | None:
    """The pid of the ``python -m codex_ci`` process a CLI job runs now (the child of faketime when skewed)."""
    deadline = time.monotonic() + PID_WAIT
    while time.monotonic() < deadline:
        try:
            pid = int(pid_file(home).read_text())
        except (OSError, ValueError):
            pid = 0
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == pid] if pid else []
        for candidate in ([pid] if pid else []) + children:
            try:
                command = Path(f"/proc/{candidate}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"codex_ci" in command and os.path.basename(command[0]).startswith(b"python"):
                return candidate
        time.sleep(0.05)
    return None


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
        shim = workdir / "faketime-shim"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "sitecustomize.py").write_text(SHIM)
        self.config = {"url": url, "env": {**env, TOKEN_URL: server.url}, "token_url": server.url,
                       "shim": str(shim)}
        self.ctx = _context()
        self.workers: list[_Worker] = []
        self.specs: dict[int, JobSpec] = {}
        self.job_pids: dict[int, int] = {}  # job -> the worker running it (read by the token server's threads)
        self.reports: dict[int, dict[str, Any]] = {}
        self.followups: list[dict[str, Any]] = []
        self.persist_steps: list[dict[str, Any]] = []
        self.respawns = 0
        if isinstance(server, FleetTokenServer):
            server.eligible, server.pid_of = self.eligible, self.pid_of

    # -- for the token server's cancellations (called from its threads) --
    def eligible(self, n: int) -> bool:
        spec = self.specs.get(n)
        return spec is not None and spec.death is None

    def pid_of(self, n: int, runner: str) -> int | None:
        if runner == "cli":
            return _cli_process(self.workdir / f"job-{n}")
        pid = self.job_pids.get(n)
        return pid if pid is not None and any(w.process.pid == pid for w in list(self.workers)) else None

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
        if kind == "job":
            self.job_pids[task["n"]] = worker.process.pid
        worker.conn.send((kind, task))

    def _finish(self, worker: _Worker, report: dict[str, Any]) -> None:
        task = worker.task
        assert task is not None
        worker.task = None
        if worker.kind == "persist":
            self.persist_steps.append(report | {"for_death": task["died_at"]})
            return
        self.reports[task["n"]] = report
        # a cancelled CLI job ran its persist step itself (the CLI), if its runner stayed
        after = task["after"] if task["death"] else task["after_cancel"] if task["runner"] == "inproc" else "vanish"
        if report["status"] in ("died", "cancelled") and after == "persist":
            self.followups.append({"n": task["n"], "home": task["home"], "died_at": report["died_at"] or "mid_post",
                                   "skew": task["skew"]})

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
        self.specs = {spec.n: spec for spec in specs}
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


def _chain(server: TokenServer) -> tuple[list[str], list[str], dict[str, float], str]:
    """The server's rotations in order: the refresh tokens issued, those presented (each spent by a rotation),
    when each was spent, and the live one."""
    with server.lock:
        presented = [r["body"]["refresh_token"] for r in server.requests if r["outcome"] == "rotated"]
        spent = server.spent_tokens()
        live = server.current_refresh_token
    issued = presented[1:] + [live] if presented else []
    return issued, presented, spent, live


def analyse(kind: str, specs: list[JobSpec], fleet: Fleet, run: dict[str, Any], server: TokenServer,
            final: str | None) -> FleetResult:
    by_n = {s.n: s for s in specs}
    reports = [fleet.reports.get(s.n, {"n": s.n, "status": "not run"}) for s in specs]
    report_of = {r["n"]: r for r in reports}
    issued, presented, spent, live = _chain(server)
    known = set(issued) | {FIRST_TOKEN}
    reached = {t for r in reports + fleet.persist_steps for t in r.get("stored", []) + r.get("in_store", []) if t}
    final_token = _token(final) if final is not None else None
    if final_token:
        reached.add(final_token)
    never_stored = [t for t in issued if t not in reached]
    superseded = set(issued[:-1])  # every rotation but the last was spent by the next one
    lost = [t for t in never_stored if t not in superseded]
    window = {r["rotated_to"] for r in reports
              if r.get("died_at") == "rotated" and by_n[r["n"]].mode == "kill" and by_n[r["n"]].after == "vanish"
              and r.get("rotated_to")}
    lost_in_window = [t for t in lost if t in window]
    finished = [r for r in reports if r["status"] == "ok"]
    # a login spent before the job started is dead, unless the job read it while its rotation was in flight: the
    # store holds the spent refresh token from the POST until the rotating runner's write. Only a runner that judged
    # the login due earlier can rotate it then (their clocks disagree: it is fresh for the reader); that is measured
    # apart. Store writes are timed by the writers' hooks, or bounded by the end of the CLI process that rotated.
    successor = dict(zip(presented, issued, strict=True))
    stored_at: dict[str, float] = {}
    for r in reports + fleet.persist_steps:
        for token, at in r.get("stored_at", []):
            stored_at[token] = min(at, stored_at.get(token, at))
    for r in reports:
        if r.get("runner") == "cli" and r.get("rotated_to") and r.get("t_refresh_end") is not None:
            stored_at.setdefault(r["rotated_to"], r["t_refresh_end"])

    def in_flight(r: dict[str, Any]) -> bool:
        written = stored_at.get(successor.get(r["token"], ""))
        return written is not None and r["read_at"].get(r["token"], r["t_start"]) < written

    spent_at_start = [r for r in finished
                      if r["token"] not in known or (r["token"] != live and spent.get(r["token"], 0) <= r["t_start"])]
    dead_logins = [r["n"] for r in spent_at_start if not in_flight(r)]
    read_in_flight = [r for r in spent_at_start if in_flight(r)]
    # a job that kept the login it restored had judged its access token unexpired, by its own clock, when it
    # decided (at or after clock_start): an access token expired by then is always refreshed (refresh.too_soon)
    kept_expired = [r["n"] for r in finished
                    if r.get("kept") and (r.get("exp") is None or r["exp"] <= r["clock_start"])]
    superseded_during = sum(1 for r in finished if r["t_got"] < spent.get(r["token"], 0) <= r["t_end"])
    # cancelled mid-POST: the rotation the server made must be in the store (seen there, or presented by the next
    # rotation, which only a copy read from the store can do) and the job must have stopped with the signal's code
    cancels = list(getattr(server, "cancels", []))
    signalled = [c for c in cancels if c["pid"] is not None]
    saved = reached | set(presented)

    def cancel_saved(c: dict[str, Any]) -> bool:
        r = report_of.get(c["n"], {})
        return (c["pid"] is not None and r.get("status") == "cancelled" and r.get("exit") == EXIT_OF[c["signal"]]
                and r.get("rotated_to") == c["token"] and c["token"] in saved)

    cancelled_ns = {c["n"] for c in signalled}
    unexpected = [r for r in reports if r["status"] == "cancelled" and not r.get("died_at")
                  and r["n"] not in cancelled_ns]
    failed = [r for r in reports if r["status"] in ("failed", "not run")] + unexpected
    failed_steps = [r for r in fleet.persist_steps if r["status"] != "ok"]
    deaths = Counter(f"{by_n[r['n']].mode} {r['died_at']}" for r in reports
                     if r["status"] == "died" or (r["status"] == "cancelled" and r.get("died_at")))
    warnings = Counter(w for r in reports + fleet.persist_steps for w in r.get("warnings", []))
    skewed = [s for s in specs if s.skew]
    skewed_reports = [report_of[s.n] for s in skewed]
    with server.lock:
        posts, successes, reused, revoked = server.posts, server.successes, server.reused, server.revoked
    metrics = {
        "jobs": len(specs), "cli_jobs": sum(s.runner == "cli" for s in specs), "finished": len(finished),
        "died": sum(deaths.values()), "deaths": dict(sorted(deaths.items())),
        "skewed_jobs": len(skewed), "skewed_cli_jobs": sum(s.runner == "cli" for s in skewed),
        "skewed_ahead": sum(s.skew > 0 for s in skewed), "skewed_behind": sum(s.skew < 0 for s in skewed),
        "skew_range_seconds": [min((s.skew for s in skewed), default=0), max((s.skew for s in skewed), default=0)],
        "skewed_jobs_finished": sum(r["status"] == "ok" for r in skewed_reports),
        "skewed_jobs_that_rotated": sum(bool(r.get("rotated_to")) for r in skewed_reports),
        "cancelled_mid_post": len(signalled), "cancelled_mid_post_cli": sum(c["runner"] == "cli" for c in signalled),
        "cancelled_mid_post_by_signal": dict(Counter(c["signal"] for c in signalled)),
        "cancelled_mid_post_saved": sum(cancel_saved(c) for c in cancels),
        "cancels_not_delivered": len(cancels) - len(signalled),
        "persist_steps_after_death": len(fleet.persist_steps),
        "persist_steps_that_wrote": sum(r["persist_action"] in ("written", "created") for r in fleet.persist_steps),
        "persists_superseded": sum(r.get("persist_action") == "superseded" for r in reports + fleet.persist_steps),
        "failed": len(failed), "failures": [(r["n"], r.get("error")) for r in failed][:10],
        "failed_persist_steps": len(failed_steps),
        "posts": posts, "rotations": successes, "refresh_token_reused": reused, "revoked": revoked,
        "rotations_never_stored": len(never_stored), "lost_rotations": len(lost) - len(lost_in_window),
        "lost_in_window": len(lost_in_window), "store_ends_newest": final_token == live and final_token is not None,
        "jobs_with_a_dead_login": len(dead_logins), "dead_login_jobs": dead_logins[:10],
        "logins_superseded_during_use": superseded_during,
        "jobs_that_read_a_login_in_rotation": len(read_in_flight),
        "jobs_that_read_a_login_in_rotation_kept_it": sum(bool(r.get("kept")) for r in read_in_flight),
        "jobs_kept_a_login_expired_by_their_clock": len(kept_expired),
        "jobs_handed_an_access_token_expired_by_the_real_clock": sum(bool(r.get("expired_real")) for r in finished),
        "cli_leaks": sum(r.get("leaks", 0) for r in reports),
        "lease_holders_killed": sum(1 for r in reports if r.get("died_at") in ("lease_taken", "rotated", "stored")
                                    and by_n[r["n"]].mode == "kill"),
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
        "no job kept a login expired by its own clock": not kept_expired,
        "every job cancelled mid-POST saved its rotation and exited 130/143":
            metrics["cancelled_mid_post_saved"] == len(cancels),
        "no token in CLI output": metrics["cli_leaks"] == 0,
    }
    return FleetResult(kind, len(specs), run["seconds"], metrics, checks, reports)


def simulate(kind: str, url: str, env: dict[str, str], *, jobs: int, seed: int, specs: list[JobSpec] | None = None,
             deadline_seconds: float = 600.0, stale: bool = True, max_concurrency: int = MAX_CONCURRENCY,
             cancel_every: int = CANCEL_EVERY) -> FleetResult:
    """Seed ``url`` with a login, run the fleet against a new strict token server, and check the outcome."""
    from codex_ci.stores import open_store

    specs = plan(jobs, seed) if specs is None else specs
    store = open_store(url, {**os.environ, **env})
    access_exp = int(time.time()) + (-60 if stale else ACCESS_TTL)
    store.write(json.dumps(make_login(access_exp=access_exp, refresh_token=FIRST_TOKEN), indent=2), None)
    with tempfile.TemporaryDirectory(prefix="codex-ci-fleet-") as tmp, FleetTokenServer(
            initial_refresh_token=FIRST_TOKEN, access_ttl=ACCESS_TTL, token_prefix=TOKEN_PREFIX,
            cancel_every=cancel_every) as server:
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
    return simulate(kind, url, env, jobs=2, seed=0, specs=specs, deadline_seconds=120, max_concurrency=1,
                    cancel_every=0)


# ---- store servers for the benchmark --------------------------------------------------------------------------------


@contextlib.contextmanager
def backend(kind: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh secret location on a running store server of ``kind``: (url, env). Started as the stores benchmark
    starts them (from testing/targets/), without request logs; the gRPC fake in this process (the workers come
    from the forkserver, never forked from this process); stopped on exit."""
    with stores.backend(kind, server_log=False) as found:
        yield found.new_url(), found.env


# ---- the benchmark ---------------------------------------------------------------------------------------------


def _rows(result: FleetResult) -> list[Row]:
    m, k = result.metrics, result.kind
    deaths = ", ".join(f"{v} {name}" for name, v in m["deaths"].items()) or "none"
    return [
        Row(f"{k}: jobs (CLI processes); finished; died; failed",
            f"{m['jobs']} ({m['cli_jobs']}); {m['finished']}; {m['died']}; {m['failed']}", "failed 0",
            m["failed"] == 0 and m["failed_persist_steps"] == 0),
        Row(f"{k}: deaths", deaths),
        Row(f"{k}: jobs on a skewed wall clock (CLI under faketime); ahead / behind; offsets; finished; rotated",
            f"{m['skewed_jobs']} ({m['skewed_cli_jobs']}); {m['skewed_ahead']} / {m['skewed_behind']}; "
            f"{m['skew_range_seconds'][0]:+d} to {m['skew_range_seconds'][1]:+d} s; {m['skewed_jobs_finished']}; "
            f"{m['skewed_jobs_that_rotated']}"),
        Row(f"{k}: cancelled mid-POST (CLI); SIGINT / SIGTERM; rotation saved and exit 130/143",
            f"{m['cancelled_mid_post']} ({m['cancelled_mid_post_cli']}); "
            f"{m['cancelled_mid_post_by_signal'].get('SIGINT', 0)} / "
            f"{m['cancelled_mid_post_by_signal'].get('SIGTERM', 0)}; {m['cancelled_mid_post_saved']}",
            "all", m["cancelled_mid_post_saved"] == m["cancelled_mid_post"] and not m["cancels_not_delivered"]),
        Row(f"{k}: persist steps after a death or cancel (that wrote the login); persists superseded",
            f"{m['persist_steps_after_death']} ({m['persist_steps_that_wrote']}); {m['persists_superseded']}"),
        Row(f"{k}: rotations (server successes) / POSTs; jobs per rotation",
            f"{m['rotations']} / {m['posts']}; {m['jobs'] / max(m['rotations'], 1):.1f}"),
        Row(f"{k}: refresh_token_reused; revoked", f"{m['refresh_token_reused']}; {m['revoked']}", "0; False",
            m["refresh_token_reused"] == 0 and not m["revoked"]),
        Row(f"{k}: lost rotations (outside the window); lost in the window", f"{m['lost_rotations']}; "
            f"{m['lost_in_window']}", "0; -", m["lost_rotations"] == 0),
        Row(f"{k}: store ends with the newest login", str(m["store_ends_newest"]), "True", m["store_ends_newest"]),
        Row(f"{k}: finished jobs holding a dead login; logins superseded during use; read while their rotation "
            "was in flight (spent, not yet stored)",
            f"{m['jobs_with_a_dead_login']}; {m['logins_superseded_during_use']}; "
            f"{m['jobs_that_read_a_login_in_rotation']}", "0; -; -", m["jobs_with_a_dead_login"] == 0),
        Row(f"{k}: jobs that kept a login expired by their own clock; handed one expired by the real clock",
            f"{m['jobs_kept_a_login_expired_by_their_clock']}; "
            f"{m['jobs_handed_an_access_token_expired_by_the_real_clock']}", "0; -",
            m["jobs_kept_a_login_expired_by_their_clock"] == 0),
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
        f"Machine: {os.cpu_count()} shared cores (a VM that other work may use at the same time): wall times and jobs "
        "per rotation vary with its load; the correctness checks do not depend on timing.",
        "Deaths: `kill` = SIGKILL of the worker process at the point, `abandon` = an exception out of the job "
        "there (`finally` blocks run), `sigint`/`sigterm` = that signal to the worker (deferred by codex-ci "
        "through a rotation, so at `rotated` the login is saved before the job stops); after any, the runner's "
        "persist step ran from its CODEX_HOME, or the runner vanished. Points inside the distributed refresh fire "
        "only for the job holding the lease.",
        "Cancelled mid-POST: the token server rotated the login, sent the job's process (worker or CLI) SIGINT or "
        f"SIGTERM and answered {CANCEL_DELAY} s later; the job finished the rotation, saved it to the store and "
        "stopped with 130 or 143, then its persist step ran or its runner vanished.",
        "Skewed clocks: CLI jobs run as `faketime -f +NNNs python -m codex_ci ...` with "
        "FAKETIME_DONT_FAKE_MONOTONIC=1 and, because libfaketime 0.9.10 then breaks Python 3.11's time.sleep "
        "(EINVAL from clock_nanosleep, wolfcw/libfaketime#426), a sitecustomize that sleeps by select(); in-process "
        "jobs offset codex-ci's utcnow. With access tokens living 2 s a runner ahead by more than that rotates "
        "whenever it gets the lease (it sees every token expired), and one far behind never does: with real token "
        "lifetimes a 10-minute skew matters only in a token's last 10 minutes.",
        "A lost rotation: its refresh token never reached the store and no later rotation spent it. `window "
        "trial`: a runner killed between the rotation and the store write whose disk is gone (README's window): "
        "its rotation is lost, and the next refresh presents the spent token, so the strict server revokes the "
        "login, as README warns; the fleet runs give every runner killed in that window its persist step at once.",
        "Jobs per rotation depends on the throughput: a login is rotated when its 2-s access token expires (never "
        "twice within a minute otherwise), and by runners whose clock is ahead.",
        "Read while the rotation was in flight: a job that restored the login between another runner's POST and "
        "that runner's store write (the store still held the spent refresh token) and found it fresh by its own "
        "clock, so kept it: the rotating runner judged it due before the reader did (their clocks disagreed). Such "
        "a job holds a valid access token but a spent refresh token, like a job whose login is superseded during "
        "use; it is counted, not failed. A job holding a login spent before it started is failed only when the "
        "store already held the next one when the job read it.",
    ]
    return Outcome("fleet_sim", HOW, rows, data, notes, passed=passed)
