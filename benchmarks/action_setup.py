"""action_setup: what the GitHub Action costs a job before the job's own work, and the old pip install beside it.

The composite action runs under tests/actionrunner.py as tests/test_action.py runs it: from a copy of what git
would commit (as the runner downloads ``org/codex-auth-action@v1``), against the tests' strict token server. Mode:
a file store holding a stale login, so every run restores it, rotates it once (one POST) and exports CODEX_HOME;
the persist action follows. The action installs codex-ci afresh in every job (no cache of installed code): uv from
a hash-pinned requirement, the store's hash-locked requirements, codex-ci from the checkout with --no-deps.
Cold: a new runner machine and an empty uv download cache; warm-download: the same machine, uv's download cache
filled (a self-hosted runner keeps it). The old path (``python -m venv`` + ``pip install`` of the checkout, pip's
cache disabled), which the action used before, is timed in the same run on the same copy.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from benchmarks.common import ROOT, clean_env, median, ms
from benchmarks.report import Outcome, Row
from codex_ci.stores.file import FileStore
from testing.tokenserver import TokenServer, make_login

# tests/actionrunner.py (not type-checked) and PyYAML (no type information): imported as modules of unknown shape
harness: Any = importlib.import_module("tests.actionrunner")
yaml: Any = importlib.import_module("yaml")
Job: TypeAlias = Any
Result: TypeAlias = Any
Runner: TypeAlias = Any

COLD_RUNS = 2
WARM_RUNS = 2
INSTALL = "install"
RUN = "run"  # the step that seeds or restores, then refreshes: the action's own work, not setup
TOKEN = "bench-rt-0"
HOW = (
    "the composite action (action.yml) run by tests/actionrunner.py as tests/test_action.py runs it: from a copy "
    "of the files git would commit, with the strict loopback token server. Mode: `store: file://...` holding a "
    "stale login, so each run restores it, rotates it once and exports CODEX_HOME; then the persist action. Every "
    "run installs codex-ci afresh (uv, hash-locked requirements, codex-ci from the checkout with --no-deps; no "
    f"cache of installed code). Cold: a new runner machine with an empty uv download cache, {COLD_RUNS} runs; "
    f"then {WARM_RUNS} runs on the same machine with uv's download cache filled. The old install path (`python -m "
    "venv` plus `pip install` of the checkout, pip's cache disabled) is timed in the same run, once after each "
    "cold run. Each step is timed from its start to its end as the harness runs it; setup = the whole action less "
    "its `run` step."
)


def _action_copy(target: Path) -> Path:
    """The repository as the runner downloads it: the files git would commit (tests/test_action.py does this)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for name in listed:
        if name and (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def _step_names(action_file: Path) -> list[str]:
    steps = yaml.safe_load(action_file.read_text())["runs"]["steps"]
    return [str(step.get("id") or step.get("name")) for step in steps]


@dataclass
class Timed:
    """One run of an action: the seconds of each step that ran (by id or name), and of the whole."""

    total: float
    steps: dict[str, float]
    skipped: list[str]
    outputs: dict[str, str]
    cache_hit: bool = False
    posts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _timed_run(job: Job, action: Path, inputs: dict[str, str]) -> tuple[Result, Timed]:
    """Run the action, timing each step: the harness's step runners are wrapped on this job only."""
    spans: list[float] = []

    def timing(method: Callable[..., tuple[int, dict[str, str]]]) -> Callable[..., tuple[int, dict[str, str]]]:
        def timed(*args: Any, **kwargs: Any) -> tuple[int, dict[str, str]]:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spans.append(time.perf_counter() - started)

        return timed

    job._run_step = timing(job._run_step)
    job._uses = timing(job._uses)
    started = time.perf_counter()
    result = job.run(action, inputs)
    total = time.perf_counter() - started
    if result.status != 0 or result.leaks:
        raise RuntimeError(f"the action failed ({result.status}) or leaked {result.leaks}:\n" + "\n".join(result.log))
    ran = [name for name in _step_names(action / "action.yml") if result.steps[name]["outcome"] != "skipped"]
    if len(ran) != len(spans):
        raise RuntimeError(f"timed {len(spans)} steps but {len(ran)} ran")
    skipped = [name for name in result.steps if result.steps[name]["outcome"] == "skipped"]
    return result, Timed(total, dict(zip(ran, spans, strict=True)), skipped, dict(result.outputs))


def _stale(path: Path) -> None:
    """The file store holds a stale login (access token expired) whose refresh token is the server's first."""
    store = FileStore(path)
    data = json.dumps(make_login(access_exp=int(time.time()) - 600, refresh_token=TOKEN), indent=2).encode()
    current = store.read()
    store.write(data, None if current is None else current.version)


def _job(machine: Runner, action: Path, store: Path) -> tuple[Timed, Timed]:
    """One job: the action, then the persist action, against a new strict token server."""
    _stale(store)
    with TokenServer(initial_refresh_token=TOKEN, access_ttl=86400) as server:
        job = machine.job({"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url})
        result, auth = _timed_run(job, action, {"store": f"file://{store}"})
        auth.posts = server.posts
        home = Path(result.outputs["codex-home"])
        live = json.loads((home / "auth.json").read_text())["tokens"]["refresh_token"]
        stored = FileStore(store).read()
        assert stored is not None
        venv = Path(result.exported_env.get("CODEX_CI_VENV", ""))
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) \
            if venv.name else 0
        auth.extra = {"venv_bytes": size, "refreshed": result.outputs.get("refreshed"), "reused": server.reused,
                      "home_current": live == server.current_refresh_token,
                      "store_current": json.loads(stored.value)["tokens"]["refresh_token"] == live}
        _, persisted = _timed_run(job, action / "persist", {})
        return auth, persisted


def run() -> Outcome:
    with tempfile.TemporaryDirectory(prefix="codex-ci-bench-action-") as tmp:
        work = Path(tmp)
        action = _action_copy(work / "_actions" / "org" / "codex-auth-action" / "v1")
        store = work / "store" / "codex.json"
        cold, pip_old = [], []
        for n in range(COLD_RUNS):
            # a new machine: no uv download cache, no pip cache (pip only bootstraps uv here)
            base = clean_env(PIP_NO_CACHE_DIR="1", UV_CACHE_DIR=str(work / f"uv-cache-{n}"))
            machine = harness.Runner(work / f"runner-{n}", base_env=base)
            print(f"action_setup: cold run {n + 1} of {COLD_RUNS} (uv, locked)", file=sys.stderr, flush=True)
            cold.append(_job(machine, action, store))
            print(f"action_setup: old pip install {n + 1} of {COLD_RUNS}", file=sys.stderr, flush=True)
            pip_old.append(_old_pip_install(action, work / f"old-venv-{n}"))
        print(f"action_setup: {WARM_RUNS} runs with uv's download cache filled", file=sys.stderr, flush=True)
        warm = [_job(machine, action, store) for _ in range(WARM_RUNS)]  # the last machine: its uv cache is full
        names = _step_names(action / "action.yml")
        venv_s = _venv_seconds(work / "venv-probe")
    return _outcome(cold, warm, pip_old, names, venv_s)


def _old_pip_install(action: Path, venv: Path) -> float:
    """The install the action did before: ``python -m venv`` then ``pip install`` of its checkout (build isolation,
    dependencies resolved by pip, no hashes), pip's cache disabled as on a fresh runner."""
    python = Path(sys.base_prefix) / "bin" / "python3"
    env = clean_env(PIP_NO_CACHE_DIR="1")
    started = time.perf_counter()
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True, timeout=600, stdin=subprocess.DEVNULL,
                   capture_output=True, env=env)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                    "--quiet", str(action)], check=True, timeout=600, stdin=subprocess.DEVNULL, capture_output=True,
                   env=env)
    seconds = time.perf_counter() - started
    subprocess.run([str(venv / "bin" / "codex-ci"), "--version"], check=True, timeout=60, capture_output=True)
    return seconds


def _venv_seconds(path: Path) -> float:
    """How long the install step's first command, ``python -m venv`` with the runner's Python, takes alone."""
    python = Path(sys.base_prefix) / "bin" / "python3"  # what the harness's setup-python hands the action
    started = time.perf_counter()
    subprocess.run([str(python), "-m", "venv", str(path)], check=True, timeout=300, stdin=subprocess.DEVNULL,
                   capture_output=True)
    return time.perf_counter() - started


def _outcome(cold: list[tuple[Timed, Timed]], warm: list[tuple[Timed, Timed]], pip_old: list[float],
             names: list[str], venv_s: float) -> Outcome:
    def step_ms(runs: list[tuple[Timed, Timed]], name: str) -> str:
        values = [auth.steps[name] for auth, _ in runs if name in auth.steps]
        return f"{ms(median(values))} ms" if values else "skipped"

    def setup(auth: Timed) -> float:
        return auth.total - auth.steps.get(RUN, 0.0)

    rows = []
    for prefix, runs in (("cold", cold), ("uv download cache filled", warm)):
        each = ", ".join(str(ms(a.total)) for a, _ in runs)
        whole, setup_ms = ms(median([a.total for a, _ in runs])), ms(median([setup(a) for a, _ in runs]))
        rows.append(Row(f"{prefix}: whole action", f"median {whole} ms (runs: {each})"))
        rows.append(Row(f"{prefix}: setup (all but the `{RUN}` step)", f"{setup_ms} ms"))
        for name in names:
            rows.append(Row(f"{prefix}: step `{name}`", step_ms(runs, name)))
        rows.append(Row(f"{prefix}: persist action", f"{ms(median([p.total for _, p in runs]))} ms"))
    old_each = ", ".join(str(ms(s)) for s in pip_old)
    rows.append(Row("old path, cold: venv + pip install of the checkout",
                    f"median {ms(median(pip_old))} ms (runs: {old_each})"))
    install_new = median([a.steps[INSTALL] for a, _ in cold])
    rows.append(Row("cold install: uv (locked) vs the old pip path",
                    f"{ms(install_new)} ms vs {ms(median(pip_old))} ms ({median(pip_old) / install_new:.1f}x)"))
    checks = [
        ("every run installed afresh (no installed code from a cache)",
         all(a.steps.get(INSTALL) is not None and INSTALL not in a.skipped for a, _ in cold + warm)),
        ("every run: 1 POST, refreshed, no reuse, CODEX_HOME and store hold the live token",
         all(a.posts == 1 and a.extra["refreshed"] == "true" and a.extra["reused"] == 0 and a.extra["home_current"]
             and a.extra["store_current"] for a, _ in cold + warm)),
        ("persist after the action: unchanged (the refresh already wrote the store)",
         all(p.outputs.get("persisted") == "unchanged" for _, p in cold + warm)),
    ]
    rows += [Row(label, "yes" if ok else "NO", "yes", ok) for label, ok in checks]
    notes = [
        "Measured on this machine (2 shared CPUs), not on a GitHub runner. uv downloads from the public package "
        "index; pip (the old path, and pip's bootstrap of uv) uses this machine's pip configuration, which adds "
        "local indexes on this disk next to it, so the old path is if anything favoured here. setup-python is "
        "simulated by the harness (and skipped when a runner Python matches). On a hosted runner both paths "
        "download over the network; the figures show the shape of the cost, not what a hosted runner will see.",
        f"Cold: the install step (a pip-installed uv, `uv venv`, the store's locked requirements and setuptools by "
        f"hash, codex-ci from the checkout with --no-deps) took {ms(install_new)} ms of the action's "
        f"{ms(median([a.total for a, _ in cold]))} ms; the old path (venv + pip install with build isolation, "
        f"unhashed) took {ms(median(pip_old))} ms; `python -m venv` alone takes {ms(venv_s)} ms here. With uv's "
        f"download cache filled (hash-checked on use, as a self-hosted runner would keep it) the install step took "
        f"{ms(median([a.steps[INSTALL] for a, _ in warm]))} ms. The persist action reuses the action's venv.",
    ]
    data = {
        "cold_runs": COLD_RUNS, "warm_runs": WARM_RUNS, "venv_alone_ms": ms(venv_s),
        "old_pip_install_ms": [ms(s) for s in pip_old],
        "cold": [{"action": a.__dict__, "persist": p.__dict__} for a, p in cold],
        "uv_cache_filled": [{"action": a.__dict__, "persist": p.__dict__} for a, p in warm],
    }
    return Outcome("action_setup", HOW, rows, data, notes, passed=all(ok for _, ok in checks))
