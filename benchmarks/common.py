"""Shared pieces: paths, the interpreter, a clean environment, logins, statistics, machine facts and the release
of forked workers at one instant."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, TypeVar

from testing.tokenserver import TokenServer, make_login

R = TypeVar("R")

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
CONSOLE_SCRIPT = ROOT / ".venv" / "bin" / "codex-ci"
RESULTS = ROOT / "benchmarks" / "results"
LOOPBACK = "127.0.0.1,localhost"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without CODEX_* and GITHUB_* (they change what codex-ci does), plus ``extra``.

    PYTHONDONTWRITEBYTECODE is dropped so that, as in an installed package, bytecode is cached after the first
    run instead of every run compiling edited sources. NO_PROXY keeps loopback requests away from any proxy.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CODEX_", "GITHUB_")) and k != "PYTHONDONTWRITEBYTECODE"}
    env["NO_PROXY"] = env["no_proxy"] = LOOPBACK
    env.update(extra)
    return env


def login_json(*, expires_in: int, refresh_token: str) -> str:
    """An auth.json document for a ChatGPT login whose access token expires ``expires_in`` seconds from now."""
    return json.dumps(make_login(access_exp=int(time.time()) + expires_in, refresh_token=refresh_token), indent=2)


def write_login(home: Path, *, expires_in: int, refresh_token: str) -> None:
    """Create ``home`` (0700) holding an auth.json (0600) as Codex would leave it."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / "auth.json"
    path.write_text(login_json(expires_in=expires_in, refresh_token=refresh_token))
    path.chmod(0o600)


def ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded to 0.1 ms for reports."""
    return round(seconds * 1000, 1)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def p90(values: Sequence[float]) -> float:
    """The 90th percentile (inclusive method); the value itself for a single sample."""
    if len(values) < 2:
        return float(values[0])
    return float(statistics.quantiles(values, n=10, method="inclusive")[-1])


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPUs, Python, OS, and how busy the (shared) machine was at the start."""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables of this process for a while (forked children inherit them)."""
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


def release_workers(workers: Sequence[BaseProcess], barrier: Barrier, reports: Queue[R], server: TokenServer,
                    timeout: float) -> tuple[float, list[R]]:
    """Start the forked ``workers``, then ``server`` (forked before its thread starts, the children hold no
    thread), wait until every worker waits at ``barrier``, release them together; the moment of the release and
    one report per worker. Every worker is joined, or killed when it hangs."""
    count = len(workers)
    for worker in workers:
        worker.start()
    server.start()
    deadline = time.monotonic() + timeout
    while barrier.n_waiting < count and time.monotonic() < deadline:
        time.sleep(0.002)
    released = time.monotonic()
    barrier.wait(timeout)
    try:
        return released, [reports.get(timeout=timeout) for _ in range(count)]
    finally:
        for worker in workers:
            worker.join(timeout)
            if worker.is_alive():
                worker.kill()
