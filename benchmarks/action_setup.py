"""action_setup: what the GitHub Action costs a job before the job's own work, and the old installs beside it.

The composite action runs under tests/actionrunner.py as tests/test_action.py runs it: from a copy of what git
would commit (as the runner downloads ``org/codex-auth-action@v1``), against the tests' strict token server. Mode:
a file store holding a stale login, so every run restores it, rotates it once (one POST) and exports CODEX_HOME;
the persist action follows. The action installs codex-ci afresh in every job (no cache of installed code, not even
uv's): uv unpacked from its hash-pinned wheel (action/get-uv.py), the store's hash-locked requirements, codex-ci
built from the checkout and installed with --no-deps. Cold: a new runner machine, every cache empty, everything
from the index. Local wheels: a machine that installs from a local directory of the locked wheels, as
tests/test_action.py does (tests/actionrunner.py's WheelIndex: uv's wheel through a loopback index page, the rest
through ``UV_FIND_LINKS``; every archive hashed on every install), as a self-hosted runner can keep them (or a
mirror). In the same run: the install this action did before (uv bootstrapped into a venv by pip) and the pip
install it did before that, each on a copy of the same checkout.

The install step is traced (``set -x`` with a timestamp in ``PS4``, switched on through ``BASH_ENV`` for
action/install.sh only) to say where its time goes.
"""

from __future__ import annotations

import importlib
import json
import re
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

COLD_RUNS = 3
WARM_RUNS = 3
TARGET_S = 6.0
INSTALL = "install"
RUN = "run"  # the step that seeds or restores, then refreshes: the action's own work, not setup
TOKEN = "bench-rt-0"
LOCKS = ("core", "build", "uv")  # what a file store's job installs
# The install step's phases, by the first traced command of each (first match wins); later commands belong to the
# phase before them. "start" is the step's start until install.sh's first command (two bash processes).
PHASES = (
    ("uv: index page, wheel download, hash, unpack (get-uv.py)", re.compile(r"/get-uv\.py (?!--downloaded)")),
    ("uv through pip: is there a pip", re.compile(r"import importlib\.util, sys")),
    ("uv through pip: venv with pip (a Python without pip)", re.compile(r" -m venv ")),
    ("uv through pip: pip download", re.compile(r" -m pip download ")),
    ("uv through pip: hash, unpack", re.compile(r"/get-uv\.py --downloaded")),
    ("uv venv, twice (codex-ci's, the build's)", re.compile(r"/uv venv ")),
    ("setuptools into the build venv (locked requirements meanwhile)",
     re.compile(r"/uv pip install .*/build-env/bin/python")),
    ("build the codex-ci wheel (locked requirements meanwhile)", re.compile(r"^cp -R ")),
    ("wait for the locked requirements", re.compile(r"^wait ")),
    ("install the codex-ci wheel", re.compile(r"/uv pip install .*/codex_ci-[^ ]+\.whl")),
    ("codex-ci --version", re.compile(r"/codex-ci --version")),
)
TRACE_SETUP = """case "$0" in
  */action/install.sh) exec {trace_fd}>>"$ACTION_SETUP_TRACE"; BASH_XTRACEFD=$trace_fd; PS4='+${EPOCHREALTIME} '
    set -x ;;
esac
"""
HOW = (
    "the composite action (action.yml) run by tests/actionrunner.py as tests/test_action.py runs it: from a copy "
    "of the files git would commit, with the strict loopback token server. Mode: `store: file://...` holding a "
    "stale login, so each run restores it, rotates it once and exports CODEX_HOME; then the persist action. Every "
    "run installs codex-ci afresh: uv unpacked from its hash-pinned wheel (action/get-uv.py reads uv's index page "
    "and downloads it), the store's hash-locked requirements with --no-deps, codex-ci built from the checkout; no "
    f"cache of installed code, uv's own cache empty in every run. Cold: {COLD_RUNS} runs, each on a new runner "
    "machine with every cache empty (pip's disabled), everything downloaded from the public index. Local wheels: "
    f"{WARM_RUNS} runs on a machine that installs from a local directory of the locked wheels (uv's wheel through "
    "a loopback index page, the rest through UV_FIND_LINKS, offline; every archive hashed on every install), as "
    "tests/test_action.py runs its jobs. After each cold run, on copies of the same checkout: the install this action "
    "did before this change (a venv with pip, uv installed into it by pip from its hash-pinned requirement, `uv "
    "venv`, the locked requirements resolved again, codex-ci built by uv) and the pip install it did before that "
    "(`python -m venv` + `pip install` of the checkout, unhashed), pip's cache disabled, uv's cache empty. Each "
    "step is timed from its start to its end as the harness runs it; setup = the whole action less its `run` "
    "step. The install step's phases come from a timestamped `set -x` trace of action/install.sh."
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
    """One run of an action: the seconds of each step that ran (by id or name), of the whole, and the install
    step's phases."""

    total: float
    steps: dict[str, float]
    skipped: list[str]
    outputs: dict[str, str]
    posts: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _timed_run(job: Job, action: Path, inputs: dict[str, str]) -> tuple[Result, Timed, list[tuple[float, float]]]:
    """Run the action, timing each step: the harness's step runners are wrapped on this job only. Also returns each
    step's (start, end) wall-clock time, to place the install step's trace."""
    spans: list[float] = []
    walls: list[tuple[float, float]] = []

    def timing(method: Callable[..., tuple[int, dict[str, str]]]) -> Callable[..., tuple[int, dict[str, str]]]:
        def timed(*args: Any, **kwargs: Any) -> tuple[int, dict[str, str]]:
            started, wall = time.perf_counter(), time.time()
            try:
                return method(*args, **kwargs)
            finally:
                spans.append(time.perf_counter() - started)
                walls.append((wall, time.time()))

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
    timed = Timed(total, dict(zip(ran, spans, strict=True)), skipped, dict(result.outputs))
    return result, timed, [walls[ran.index(name)] if name in ran else (0.0, 0.0) for name in (INSTALL,)]


def _phases(trace: Path, start: float, end: float) -> dict[str, float]:
    """Seconds per phase of one traced install step that ran from ``start`` to ``end`` (wall clock)."""
    marks: list[tuple[float, str]] = [(start, "start")]
    for line in trace.read_text().splitlines():
        traced = re.match(r"^\++(\d+\.\d+) (.*)$", line)
        if not traced:
            continue  # the rest of a multi-line command
        name = next((name for name, pattern in PHASES if pattern.search(traced.group(2))), None)
        if name and name != marks[-1][1]:
            marks.append((float(traced.group(1)), name))
    phases: dict[str, float] = {}
    for (at, name), (until, _) in zip(marks, [*marks[1:], (end, "")], strict=True):
        phases[name] = phases.get(name, 0.0) + until - at
    return phases


def _stale(path: Path) -> None:
    """The file store holds a stale login (access token expired) whose refresh token is the server's first."""
    store = FileStore(path)
    data = json.dumps(make_login(access_exp=int(time.time()) - 600, refresh_token=TOKEN), indent=2)
    current = store.read()
    store.write(data, None if current is None else current.version)


def _job(root: Path, machine_env: dict[str, str], action: Path, store: Path) -> tuple[Timed, Timed]:
    """One job on a new runner machine: the action (its install step traced), then the persist action, against a
    new strict token server."""
    trace = root / "install.trace"
    trace_setup = root / "trace-setup.sh"
    root.mkdir(parents=True)
    trace_setup.write_text(TRACE_SETUP)
    base = clean_env(**machine_env, BASH_ENV=str(trace_setup), ACTION_SETUP_TRACE=str(trace))
    machine = harness.Runner(root / "runner", base_env=base)
    _stale(store)
    with TokenServer(initial_refresh_token=TOKEN, access_ttl=86400) as server:
        job = machine.job({"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url})
        result, auth, [(start, end)] = _timed_run(job, action, {"store": f"file://{store}"})
        auth.posts = server.posts
        auth.phases = _phases(trace, start, end)
        home = Path(result.outputs["codex-home"])
        live = json.loads((home / "auth.json").read_text())["tokens"]["refresh_token"]
        stored = FileStore(store).read()
        assert stored is not None
        venv = Path(result.exported_env["CODEX_CI_VENV"])
        uv_cache = machine.temp / "codex-ci-uv" / "cache"
        auth.extra = {"refreshed": result.outputs.get("refreshed"), "reused": server.reused,
                      "home_current": live == server.current_refresh_token,
                      "store_current": json.loads(stored.value)["tokens"]["refresh_token"] == live,
                      "installed": _installed(venv), "uv_cache_private": uv_cache.is_dir()}
        _, persisted, _ = _timed_run(job, action / "persist", {})
        persisted.extra = {"persisted": persisted.outputs.get("persisted")}
        auth.outputs = persisted.outputs = {}  # they hold temporary paths
        return auth, persisted


def _installed(venv: Path) -> dict[str, str]:
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", "import importlib.metadata as m, json; "
         "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"],
        capture_output=True, text=True, check=True, timeout=60)
    return dict(json.loads(listing.stdout))


def _locked() -> dict[str, str]:
    """What the file store's job must install: the core lock's pins for this machine, and codex-ci."""
    from packaging.markers import Marker

    pins = {}
    for name in ("core",):
        text = (ROOT / "action" / f"requirements-{name}.txt").read_text()
        for package, version, marker in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)(?: ; ([^\\\n]+?))? \\$", text,
                                                   re.MULTILINE):
            if not marker or Marker(marker).evaluate():
                pins[re.sub(r"[-_.]+", "-", package).lower()] = version
    version = re.search(r'__version__ = "(.+)"', (ROOT / "codex_ci" / "__init__.py").read_text())
    assert version
    return {**pins, "codex-ci": version.group(1)}


def _wheelhouse(target: Path) -> float:
    """Download the locked wheels a file store's job installs (pip checks each hash); returns the seconds."""
    started = time.perf_counter()
    harness.download_wheels(target, [ROOT / "action" / f"requirements-{name}.txt" for name in LOCKS],
                            env=clean_env(PIP_NO_CACHE_DIR="1"))
    return time.perf_counter() - started


def run() -> Outcome:
    with tempfile.TemporaryDirectory(prefix="codex-ci-bench-action-") as tmp:
        work = Path(tmp)
        action = _action_copy(work / "_actions" / "org" / "codex-auth-action" / "v1")
        store = work / "store" / "codex.json"
        cold, previous_uv, pip_old, fetch_uv = [], [], [], []
        for n in range(COLD_RUNS):
            print(f"action_setup: cold run {n + 1} of {COLD_RUNS}", file=sys.stderr, flush=True)
            cold.append(_job(work / f"cold-{n}", {"PIP_NO_CACHE_DIR": "1", "XDG_CACHE_HOME": str(work / f"xdg-{n}")},
                             action, store))
            print(f"action_setup: the previous uv install {n + 1} of {COLD_RUNS}", file=sys.stderr, flush=True)
            previous_uv.append(_previous_uv_install(shutil.copytree(action, work / f"checkout-uv-{n}"),
                                                    work / f"previous-{n}"))
            print(f"action_setup: the old pip install {n + 1} of {COLD_RUNS}", file=sys.stderr, flush=True)
            pip_old.append(_old_pip_install(shutil.copytree(action, work / f"checkout-pip-{n}"),
                                            work / f"old-venv-{n}"))
            fetch_uv.append(_fetch_uv(action, work / f"fetch-uv-{n}"))
        print("action_setup: downloading the locked wheels to a local directory", file=sys.stderr, flush=True)
        wheels = work / "wheels"
        wheelhouse_s = _wheelhouse(wheels)
        warm = []
        with harness.WheelIndex(wheels) as index:
            for n in range(WARM_RUNS):
                print(f"action_setup: local wheels, run {n + 1} of {WARM_RUNS}", file=sys.stderr, flush=True)
                warm.append(_job(work / f"warm-{n}", {**index.env, "PIP_NO_CACHE_DIR": "1",
                                                      "XDG_CACHE_HOME": str(work / f"xdg-warm-{n}")}, action, store))
        names = _step_names(action / "action.yml")
        venv_s = _venv_seconds(work / "venv-probe")
        caches_untouched = not any(work.glob("xdg-*/*"))
    return _outcome(cold, warm, previous_uv, pip_old, fetch_uv, names, venv_s, wheelhouse_s, caches_untouched)


def _fetch_uv(action: Path, work: Path) -> tuple[float, float]:
    """Seconds to get uv's wheel for this machine from the public index, cold: get-uv.py alone (page, download,
    hash, unpack), then ``pip download`` alone (what the action falls back to)."""
    env = clean_env(PIP_NO_CACHE_DIR="1")
    lock = action / "action" / "requirements-uv.txt"
    (work / "direct").mkdir(parents=True)
    started = time.perf_counter()
    _quiet([str(_python()), "-I", str(action / "action" / "get-uv.py"), str(lock), str(work / "direct")], env)
    direct = time.perf_counter() - started
    started = time.perf_counter()
    _quiet([str(_python()), "-I", "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--quiet",
            "--no-deps", "--only-binary", ":all:", "--require-hashes", "--dest", str(work / "pip"), "-r", str(lock)],
           env)
    return direct, time.perf_counter() - started


def _python() -> Path:
    return Path(sys.base_prefix) / "bin" / "python3"  # what the harness's setup-python hands the action


def _old_pip_install(checkout: Path, venv: Path) -> float:
    """The install the action did first: ``python -m venv`` then ``pip install`` of its checkout (build isolation,
    dependencies resolved by pip, no hashes), pip's cache disabled as on a fresh runner."""
    env = clean_env(PIP_NO_CACHE_DIR="1")
    started = time.perf_counter()
    _quiet([str(_python()), "-m", "venv", str(venv)], env)
    _quiet([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
            "--quiet", str(checkout)], env)
    seconds = time.perf_counter() - started
    _quiet([str(venv / "bin" / "codex-ci"), "--version"], env)
    return seconds


def _previous_uv_install(checkout: Path, work: Path) -> float:
    """The install the action did before this one, command for command: a venv with pip for uv, uv installed by pip
    from requirements-uv.txt, ``uv venv``, the locked requirements (resolved again) and setuptools, then codex-ci
    built by uv from the checkout (which calls setuptools twice)."""
    env = clean_env(PIP_NO_CACHE_DIR="1", UV_CACHE_DIR=str(work / "uv-cache"), UV_PYTHON_DOWNLOADS="never",
                    UV_NO_PROGRESS="1")
    tools, venv, lock = work / "uv", work / "venv", checkout / "action"
    started = time.perf_counter()
    _quiet([str(_python()), "-m", "venv", str(tools)], env)
    _quiet([str(tools / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
            "--quiet", "--require-hashes", "--only-binary", ":all:", "-r", str(lock / "requirements-uv.txt")], env)
    uv = str(tools / "bin" / "uv")
    _quiet([uv, "venv", "--quiet", "--python", str(_python()), str(venv)], env)
    _quiet([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--require-hashes",
            "--only-binary", ":all:", "-r", str(lock / "requirements-core.txt"), "-r",
            str(lock / "requirements-build.txt")], env)
    _quiet([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--no-deps",
            "--no-build-isolation", "--reinstall", str(checkout)], env)
    _quiet([str(venv / "bin" / "codex-ci"), "--version"], env)
    return time.perf_counter() - started


def _quiet(command: list[str], env: dict[str, str]) -> None:
    subprocess.run(command, check=True, timeout=600, stdin=subprocess.DEVNULL, capture_output=True, env=env)


def _venv_seconds(path: Path) -> float:
    """How long ``python -m venv`` (with pip, as both earlier installs began) takes alone."""
    started = time.perf_counter()
    subprocess.run([str(_python()), "-m", "venv", str(path)], check=True, timeout=300, stdin=subprocess.DEVNULL,
                   capture_output=True)
    return time.perf_counter() - started


def _outcome(cold: list[tuple[Timed, Timed]], warm: list[tuple[Timed, Timed]], previous_uv: list[float],
             pip_old: list[float], fetch_uv: list[tuple[float, float]], names: list[str], venv_s: float,
             wheelhouse_s: float, caches_untouched: bool) -> Outcome:
    def step_ms(runs: list[tuple[Timed, Timed]], name: str) -> str:
        values = [auth.steps[name] for auth, _ in runs if name in auth.steps]
        return f"{ms(median(values))} ms" if values else "skipped"

    def setup(auth: Timed) -> float:
        return auth.total - auth.steps.get(RUN, 0.0)

    def each(values: list[float]) -> str:
        return ", ".join(str(ms(v)) for v in values)

    rows = []
    setups: dict[str, float] = {}
    phase_names = ["start", *(name for name, _ in PHASES)]
    for prefix, runs in (("cold", cold), ("local wheels", warm)):
        setups[prefix] = median([setup(a) for a, _ in runs])
        rows.append(Row(f"{prefix}: whole action", f"median {ms(median([a.total for a, _ in runs]))} ms "
                                                   f"(runs: {each([a.total for a, _ in runs])})"))
        rows.append(Row(f"{prefix}: setup (all but the `{RUN}` step)",
                        f"median {ms(setups[prefix])} ms (runs: {each([setup(a) for a, _ in runs])})",
                        f"≤ {TARGET_S * 1000:.0f} ms" if prefix == "cold" else "",
                        setups[prefix] <= TARGET_S if prefix == "cold" else None))
        for name in names:
            rows.append(Row(f"{prefix}: step `{name}`", step_ms(runs, name)))
        for phase in phase_names:
            values = [a.phases.get(phase, 0.0) for a, _ in runs]
            if any(values):
                rows.append(Row(f"{prefix}: `{INSTALL}` phase: {phase}", f"{ms(median(values))} ms"))
        rows.append(Row(f"{prefix}: persist action", f"{ms(median([p.total for _, p in runs]))} ms"))
    install_cold = median([a.steps[INSTALL] for a, _ in cold])
    rows.append(Row("before, cold: the previous uv install (venv with pip, pip installs uv, ...)",
                    f"median {ms(median(previous_uv))} ms (runs: {each(previous_uv)})"))
    rows.append(Row("before, cold: the old pip install (venv + pip install of the checkout)",
                    f"median {ms(median(pip_old))} ms (runs: {each(pip_old)})"))
    rows.append(Row("cold install step vs the previous uv install vs the old pip install",
                    f"{ms(install_cold)} vs {ms(median(previous_uv))} vs {ms(median(pip_old))} ms "
                    f"({median(previous_uv) / install_cold:.1f}x and {median(pip_old) / install_cold:.1f}x faster)"))
    direct, by_pip = median([d for d, _ in fetch_uv]), median([p for _, p in fetch_uv])
    rows.append(Row("cold: uv's wheel from the index, get-uv.py vs `pip download`",
                    f"{ms(direct)} vs {ms(by_pip)} ms (runs: {each([d for d, _ in fetch_uv])} vs "
                    f"{each([p for _, p in fetch_uv])})"))
    expected = _locked()
    checks = [
        ("every run installed afresh (no installed code from a cache; uv's cache private to the run)",
         all(a.steps.get(INSTALL) is not None and INSTALL not in a.skipped and a.extra["uv_cache_private"]
             for a, _ in cold + warm) and caches_untouched),
        ("every run installed exactly the core lock's pins and codex-ci (setuptools only builds the wheel)",
         all(a.extra["installed"] == expected for a, _ in cold + warm)),
        ("every run: 1 POST, refreshed, no reuse, CODEX_HOME and store hold the live token",
         all(a.posts == 1 and a.extra["refreshed"] == "true" and a.extra["reused"] == 0 and a.extra["home_current"]
             and a.extra["store_current"] for a, _ in cold + warm)),
        ("persist after the action: unchanged (the refresh already wrote the store)",
         all(p.extra["persisted"] == "unchanged" for _, p in cold + warm)),
    ]
    rows += [Row(label, "yes" if ok else "NO", "yes", ok) for label, ok in checks]
    slowest = sorted(((median([a.phases.get(p, 0.0) for a, _ in cold]), p) for p in phase_names), reverse=True)[:3]
    notes = [
        "Measured on this machine (2 shared CPUs, busy with other work: see the load average above), not on a "
        "GitHub runner. uv downloads from the public package index; pip also reads this machine's configured local "
        "indexes, which hold no uv. setup-python is simulated by the harness (skipped here: a runner Python "
        "matches). The figures show the shape of the cost; a hosted runner's network and CPUs differ.",
        f"Cold, where the setup goes: the `find` step {step_ms(cold, 'find')}, the install step {ms(install_cold)} "
        f"ms, of which the three largest phases are "
        + ", ".join(f"{name} {ms(seconds)} ms" for seconds, name in slowest)
        + ". uv's wheel is 18 MB; the locked requirements are about 20 wheels, fetched in parallel by uv; the build "
        "is setuptools' start-up and one PEP 517 call (an installer would call the backend twice, for the metadata "
        "and the wheel, because the version is dynamic); `codex-ci --version` imports typer and compiles its "
        "bytecode, which the `run` step would otherwise pay.",
        f"Before this change, each install began with `python -m venv` with pip, which alone takes {ms(venv_s)} ms "
        "here (ensurepip installs and byte-compiles pip), and pip then weighed every file on uv's index page (6,000, "
        f"of every release) to pick one wheel: `pip download` of uv alone takes {ms(by_pip)} ms here, get-uv.py "
        f"(the same page, one download, the hash, the unpacking) {ms(direct)} ms. pip remains the fallback (musl, "
        "PIP_NO_INDEX, an index get-uv.py cannot read).",
        f"Local wheels: downloading the locked wheels once took {ms(wheelhouse_s)} ms (not counted in the runs). "
        "They are the only thing shared between runs: pip and uv hash every archive on every install. uv's own "
        "cache is not shared: it keeps unpacked files and does not hash them again when it reuses them, so a "
        "file changed in it is installed as it is; the action gives every install an empty cache of its own.",
        "The persist action reuses the action's venv.",
    ]
    data = {
        "cold_runs": COLD_RUNS, "warm_runs": WARM_RUNS, "venv_with_pip_alone_ms": ms(venv_s),
        "wheel_download_ms": ms(wheelhouse_s), "previous_uv_install_ms": [ms(s) for s in previous_uv],
        "uv_wheel_get_uv_vs_pip_ms": [[ms(d), ms(p)] for d, p in fetch_uv],
        "old_pip_install_ms": [ms(s) for s in pip_old],
        "cold": [{"action": a.__dict__, "persist": p.__dict__} for a, p in cold],
        "local_wheels": [{"action": a.__dict__, "persist": p.__dict__} for a, p in warm],
    }
    return Outcome("action_setup", HOW, rows, data, notes, passed=all(ok for _, ok in checks))
