"""cold_start: wall time of one codex-ci command in a fresh process, against a one-command Typer app.

Every command runs with the same interpreter, from a scratch working directory, interleaved round by round
(the order rotates each round) so that drift on a shared machine hits all of them alike.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.common import CONSOLE_SCRIPT, PYTHON, ROOT, clean_env, login_json, median, ms, p90
from benchmarks.report import Outcome, Row

MINIMAL_APP = ROOT / "benchmarks" / "minimal_typer_app.py"
ROUNDS = 40
PROFILE_RUNS = 5
TARGET = 1.15
HEAVY = ("httpx", "boto3", "hvac", "google.cloud")
ABSENT = "<fresh>"  # stands for a CODEX_HOME that does not exist yet, made anew for every run
HOW = (
    f"after one untimed warm-up run each (bytecode cached: PYTHONDONTWRITEBYTECODE unset), {ROUNDS} rounds; each "
    "round runs every command once as a new `.venv/bin/python` process (order rotated per round), timing spawn to "
    "exit; medians and p90 per command, ratio = command median / minimal-app median. "
    "`-m` means `python -m codex_ci ...`; `script` means `python .venv/bin/codex-ci ...`, launched exactly like "
    "`python benchmarks/minimal_typer_app.py`. Imports are checked by running `codex_ci.cli.main()` inside "
    f"`python -c`; the import profile is `python -X importtime`, median of {PROFILE_RUNS} runs."
)
_PROBE = """
import json, sys
sys.argv = ["codex-ci", *sys.argv[1:]]
from codex_ci.cli import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code or 0
heavy = HEAVY
print()
print(json.dumps({"exit": code, "pydantic": "pydantic" in sys.modules,
                  "loaded": [h for h in heavy if any(m == h or m.startswith(h + ".") for m in sys.modules)]}))
"""
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    argv: list[str]


def _cases(present: Path) -> list[Case]:
    py, home = str(PYTHON), str(present)
    m = [py, "-m", "codex_ci"]
    return [
        Case("minimal", "minimal Typer app (script)", [py, str(MINIMAL_APP)]),
        Case("seed_present", "seed, auth.json present (-m)", [*m, "seed", "--codex-home", home]),
        Case("seed_absent", "seed, fresh CODEX_HOME (-m)", [*m, "seed", "--codex-home", ABSENT]),
        Case("status", "status (-m)", [*m, "status", "--codex-home", home]),
        Case("seed_present_script", "seed, auth.json present (script)",
             [py, str(CONSOLE_SCRIPT), "seed", "--codex-home", home]),
    ]


def _run_once(argv: list[str], env: dict[str, str], work: Path) -> float:
    """Seconds from spawn to exit; a fresh home is made for ABSENT and removed afterwards (untimed)."""
    fresh = work / "absent"
    argv = [str(fresh) if a == ABSENT else a for a in argv]
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[1:]} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}")
    shutil.rmtree(fresh, ignore_errors=True)
    return elapsed


def _interleaved(cases: list[Case], env: dict[str, str], work: Path) -> dict[str, list[float]]:
    for case in cases:  # warm-up: bytecode caches and the page cache
        _run_once(case.argv, env, work)
    times: dict[str, list[float]] = defaultdict(list)
    for round_no in range(ROUNDS):
        shift = round_no % len(cases)
        for case in cases[shift:] + cases[:shift]:
            times[case.key].append(_run_once(case.argv, env, work))
    return times


def _imports(args: list[str], env: dict[str, str], work: Path) -> dict[str, Any]:
    """Run the CLI in-process in a child interpreter; report its exit code and which heavy modules it loaded."""
    probe = _PROBE.replace("HEAVY", repr(HEAVY))
    proc = subprocess.run([str(PYTHON), "-c", probe, *args], env=env, cwd=work, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"import probe for {args} failed: {proc.stderr[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@dataclass(frozen=True)
class ImportProfile:
    """``-X importtime`` over PROFILE_RUNS runs: the median total, and per module the median self and
    cumulative time (ms) and nesting depth."""

    total_ms: float
    modules: dict[str, dict[str, float]]


def _import_profile(argv: list[str], env: dict[str, str], work: Path) -> ImportProfile:
    samples: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    totals = []
    for _ in range(PROFILE_RUNS):
        proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=work,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        total = 0
        for found in _IMPORT_LINE.finditer(proc.stderr):
            own, cumulative, indent, name = found.groups()
            samples[name].append((int(own), int(cumulative), len(indent) // 2))
            total += int(cumulative) if not indent else 0
        totals.append(total / 1000)
    modules = {
        name: {"self_ms": median([s[0] for s in runs]) / 1000, "cumulative_ms": median([s[1] for s in runs]) / 1000,
               "depth": runs[0][2]}
        for name, runs in samples.items()
    }
    return ImportProfile(round(median(totals), 1), modules)


def _profile_summary(seed_profile: ImportProfile, minimal_profile: ImportProfile) -> dict[str, Any]:
    seed, minimal = seed_profile.modules, minimal_profile.modules

    def listed(names: list[str]) -> list[dict[str, Any]]:
        return [{"module": n, **{k: round(v, 1) for k, v in seed[n].items()}} for n in names]

    top = sorted(seed, key=lambda n: seed[n]["cumulative_ms"], reverse=True)[:10]
    extra = sorted(set(seed) - set(minimal), key=lambda n: seed[n]["self_ms"], reverse=True)
    return {
        "seed_total_ms": seed_profile.total_ms,
        "minimal_total_ms": minimal_profile.total_ms,
        "extra_self_ms": round(sum(seed[n]["self_ms"] for n in extra), 1),
        "top_cumulative": listed(top),
        "top_extra_self": listed(extra[:8]),
        "pydantic_in_seed": "pydantic" in seed,
        "pydantic_in_minimal": "pydantic" in minimal,
    }


def run() -> Outcome:
    env = clean_env(CODEX_AUTH_JSON=login_json(expires_in=86400, refresh_token="bench-rt-0"))
    with tempfile.TemporaryDirectory(prefix="codex-ci-bench-") as tmp:
        work = Path(tmp)
        present = work / "present"
        cases = _cases(present)
        _run_once(cases[1].argv, env, work)  # the first seed writes auth.json: from now on it is present
        print(f"cold_start: {ROUNDS} interleaved rounds of {len(cases)} commands", file=sys.stderr, flush=True)
        times = _interleaved(cases, env, work)
        print("cold_start: import checks and -X importtime profiles", file=sys.stderr, flush=True)
        imports = {
            "seed (auth.json present)": _imports(["seed", "--codex-home", str(present)], env, work),
            "seed (fresh CODEX_HOME)": _imports(["seed", "--codex-home", str(work / "probe")], env, work),
            "status": _imports(["status", "--codex-home", str(present)], env, work),
            "refresh, fresh token (control)": _imports(["refresh", "--codex-home", str(present)], env, work),
        }
        profile = _profile_summary(_import_profile(cases[1].argv, env, work), _import_profile(cases[0].argv, env, work))
    return _outcome(cases, times, imports, profile)


def _outcome(cases: list[Case], times: dict[str, list[float]], imports: dict[str, Any],
             profile: dict[str, Any]) -> Outcome:
    base = median(times["minimal"])
    stats = {c.key: {"label": c.label, "median_ms": ms(median(times[c.key])), "p90_ms": ms(p90(times[c.key])),
                     "ratio": round(median(times[c.key]) / base, 3), "runs_ms": [ms(t) for t in times[c.key]]}
             for c in cases}
    rows = []
    for c in cases:
        ratio = median(times[c.key]) / base
        value = f"median {ms(median(times[c.key]))} ms, p90 {ms(p90(times[c.key]))} ms"
        if c.key == "minimal":
            rows.append(Row(c.label, value))
        else:
            rows.append(Row(c.label, f"{value}, {ratio:.2f}x", f"<= {TARGET:.2f}x", ratio <= TARGET))
    clean = True
    for label, probe in imports.items():
        control = "control" in label
        ok = probe["exit"] == 0 and ("httpx" in probe["loaded"] if control else not probe["loaded"])
        clean = clean and ok
        rows.append(Row(f"heavy modules after {label}", ", ".join(probe["loaded"]) or "none",
                        "httpx" if control else "none", ok))
    rows.append(Row("import time, seed vs minimal app",
                    f"{profile['seed_total_ms']} ms vs {profile['minimal_total_ms']} ms "
                    f"(+{profile['extra_self_ms']} ms in modules only seed imports)"))
    top = ", ".join(f"`{t['module']}` {t['cumulative_ms']}" for t in profile["top_cumulative"])
    extra = ", ".join(f"`{t['module']}` {t['self_ms']}" for t in profile["top_extra_self"])
    notes = [
        f"Top 10 imports of `seed` by cumulative time (ms): {top}.",
        f"Largest self times among modules `seed` imports and the minimal app does not (ms): {extra}.",
        f"pydantic is imported by seed: {profile['pydantic_in_seed']}, by the minimal app: "
        f"{profile['pydantic_in_minimal']} (Typer {version('typer')} imports it in `typer._adapters` as an app runs).",
    ]
    data = {"rounds": ROUNDS, "target_ratio": TARGET, "typer": version("typer"), "commands": stats,
            "imports": imports, "profile": profile}
    return Outcome("cold_start", HOW, rows, data, notes, passed=clean)
