"""The composite actions end to end, run by tests/actionrunner.py the way the GitHub runner runs them.

One simulated runner machine serves most of the module. Every job installs codex-ci afresh, as on a hosted
runner: from the action's checkout with ``--no-deps`` plus the store's hash-locked requirements, by a uv taken from
its hash-pinned wheel. The locked wheels are downloaded once per session into a local directory: the machine's uv
installs from it (``UV_FIND_LINKS``, offline) and the action reads uv's own wheel from it through a loopback index
(``PIP_INDEX_URL``). Every archive is hashed against the lock on every install, so sharing it across jobs
restores nothing unchecked. uv's own cache is not shared: it keeps unpacked files and does not hash them again on
reuse, so the action gives each install an empty one (a test below poisons one to show it). One test installs cold
from the public index with every cache empty. The action runs from a snapshot of the repository, as the runner
runs ``org/codex-auth-action@v1`` from its download.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from actionrunner import Job, Result, Runner, WheelIndex, download_wheels
from conftest import ROOT, assert_no_secrets, login

from codex_ci.errors import ExitCode
from testing.targets import StoreTarget
from testing.tokenserver import TokenServer

INSTALL = "install"
CODEX_BIN = os.environ.get("CODEX_CI_CODEX_BIN") or str(ROOT / ".cache" / "codex" / "node_modules" / ".bin" / "codex")
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def action(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as the runner downloads it for ``org/codex-auth-action@v1``: a copy of what git would commit,
    so pip's build never touches (or races with) the work tree."""
    target = tmp_path_factory.mktemp("_actions") / "org" / "codex-auth-action" / "v1"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for name in listed:
        if name and (ROOT / name).is_file():  # a tracked file deleted in the work tree is listed too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The locked wheels the jobs here install (core, vault, setuptools, uv), downloaded once by pip, which checks
    each against its hash."""
    target = tmp_path_factory.mktemp("wheelhouse")
    download_wheels(target, [ROOT / "action" / f"requirements-{name}.txt" for name in ("core", "vault", "build", "uv")])
    return target


@pytest.fixture(scope="session")
def wheel_index(wheelhouse: Path) -> Iterator[WheelIndex]:
    with WheelIndex(wheelhouse) as index:
        yield index


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory, wheel_index: WheelIndex) -> Runner:
    """A runner machine that installs from the local wheels only (see WheelIndex)."""
    return Runner(tmp_path_factory.mktemp("runner"), machine_env=wheel_index.env)


def locked(*names: str) -> dict[str, str]:
    """name -> version of every entry of action/requirements-NAME.txt whose marker holds on this machine."""
    from packaging.markers import Marker

    pins = {}
    for name in names:
        text = (ROOT / "action" / f"requirements-{name}.txt").read_text()
        for entry in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)(?: ; ([^\\\n]+?))? \\$", text, re.MULTILINE):
            if not entry[2] or Marker(entry[2]).evaluate():
                pins[normal(entry[0])] = entry[1]
    return pins


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(venv: Path) -> dict[str, str]:
    """name -> version of every distribution in ``venv``."""
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", "import importlib.metadata as m, json; "
         "print(json.dumps([(d.metadata['Name'], d.version) for d in m.distributions()]))"],
        capture_output=True, text=True, check=True, timeout=60)
    return {normal(name): version for name, version in json.loads(listing.stdout)}


def uv_of(machine: Runner) -> Path:
    return machine.temp / "codex-ci-uv" / "uv"


def assert_pinned_uv(machine: Runner) -> None:
    """The uv the action ran is the one requirements-uv.txt pins (its hash was checked when it was unpacked)."""
    version = subprocess.run([str(uv_of(machine)), "--version"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.split()
    assert version[:2] == ["uv", locked("uv")["uv"]], version


def stale_login(refresh_token: str = "CANARY-rt-0") -> dict[str, Any]:
    """Expires within the default min-ttl (1h), last refreshed long ago: the action must refresh it."""
    return login(expires_in=600, refresh_token=refresh_token, last_refresh="2024-01-01T00:00:00.000000Z")


def tokens_of(data: dict[str, Any]) -> list[str]:
    return [v for k, v in data["tokens"].items() if k != "account_id"]


def auth_json(home: str | Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(home) / "auth.json").read_text())
    return data


def assert_clean(result: Result, *tokens: str) -> None:
    """Nothing leaked: not in the log before its mask, not in a summary, not in an output."""
    assert result.leaks == [], result.leaks
    for value in result.outputs.values():
        assert not any(token in value for token in tokens)
    assert_no_secrets(*result.log, *result.summaries, *result.outputs.values(),
                      *(a.message for a in result.annotations))
    assert "Traceback" not in "\n".join(result.log)


def assert_time(text: str, near: datetime, slack: timedelta) -> None:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert abs(when - near) < slack, (text, near)


def run_auth(job: Job, action: Path, **inputs: str) -> Result:
    result = job.run(action, inputs)
    assert result.status == 0, "\n".join(result.log)
    return result


def test_two_jobs_share_one_rotating_login_through_vault(
    machine: Runner, action: Path, token_server: TokenServer, vault_target: StoreTarget
) -> None:
    stored = stale_login()
    vault_target.open().write(json.dumps(stored, indent=2), None)
    workflow_env = {"VAULT_TOKEN": vault_target.env["VAULT_TOKEN"]}
    canaries = [*tokens_of(stored), vault_target.env["VAULT_TOKEN"]]
    inputs = {"store": vault_target.url, "vault-addr": vault_target.env["VAULT_ADDR"]}

    # Job 1: restore the stale login, rotate it once, run Codex, persist.
    job1 = machine.job(workflow_env, canaries=canaries)
    first = run_auth(job1, action, **inputs)
    home = first.outputs["codex-home"]
    assert home == str(machine.temp / "codex-home")
    assert first.exported_env["CODEX_HOME"] == home and job1.env["CODEX_HOME"] == home
    assert first.exported_env["CODEX_CI_STORE_URL"] == vault_target.url
    assert first.exported_env["VAULT_ADDR"] == vault_target.env["VAULT_ADDR"]
    assert "VAULT_TOKEN" not in first.exported_env
    now = datetime.now(UTC)
    assert first.outputs["auth-mode"] == "chatgpt" and first.outputs["refreshed"] == "true"
    assert_time(first.outputs["expires-at"], now + timedelta(days=10), timedelta(minutes=2))
    assert_time(first.outputs["last-refresh"], now, timedelta(minutes=2))
    current = vault_target.open().read()
    assert current is not None and first.outputs["store-version"] == current.version
    rotated = auth_json(home)
    assert rotated["tokens"]["refresh_token"] == token_server.current_refresh_token != "CANARY-rt-0"
    assert json.loads(current.value)["tokens"] == rotated["tokens"]
    summary = "".join(first.summaries)
    for line in ("### codex-ci restore", "### codex-ci refresh", "| auth-mode | chatgpt |", "| refreshed | true |",
                 f"| store-version | {current.version} |"):
        assert line in summary
    assert_clean(first, *canaries, *tokens_of(rotated))
    assert set(tokens_of(stored) + tokens_of(rotated)) <= job1.masks  # each token masked, not merely unprinted
    if os.access(CODEX_BIN, os.X_OK):  # the job's Codex step (scripts/test installs the pinned Codex CLI)
        codex = subprocess.run(
            [CODEX_BIN, "login", "status"], env={"PATH": os.environ["PATH"], "HOME": str(machine.temp),
                                                 "CODEX_HOME": home}, capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert codex.returncode == 0 and "Logged in using ChatGPT" in codex.stderr, codex.stderr
    persisted = run_auth(job1, action / "persist")  # store and CODEX_HOME come from the auth step's exports
    assert persisted.outputs == {"persisted": "unchanged", "store-version": current.version}
    assert persisted.steps["python"]["outcome"] == "skipped"  # the auth step's venv is reused
    assert_clean(persisted, *canaries, *tokens_of(rotated))

    # Job 2, a fresh machine state: it starts from job 1's rotated login and has nothing to refresh.
    job2 = machine.job(workflow_env, canaries=canaries)
    assert not Path(home).exists()
    second = run_auth(job2, action, **inputs)
    assert second.steps[INSTALL]["outcome"] == "success"  # installed again: nothing is restored from a cache
    assert second.outputs["refreshed"] == "false"
    assert second.outputs["store-version"] == current.version
    assert second.outputs["expires-at"] == first.outputs["expires-at"]
    assert auth_json(second.outputs["codex-home"])["tokens"]["refresh_token"] == token_server.current_refresh_token
    assert (token_server.posts, token_server.reused) == (1, 0)
    assert [r["outcome"] for r in token_server.requests] == ["rotated"]
    assert "| refreshed | false |" in "".join(second.summaries)
    assert_clean(second, *canaries, *tokens_of(rotated))


def test_an_empty_store_is_seeded_from_auth_json(
    machine: Runner, action: Path, token_server: TokenServer, vault_target: StoreTarget
) -> None:
    seed = stale_login()
    job = machine.job({"VAULT_TOKEN": vault_target.env["VAULT_TOKEN"]}, canaries=tokens_of(seed))
    result = run_auth(job, action, **{"auth-json": json.dumps(seed), "store": vault_target.url,
                                      "vault-addr": vault_target.env["VAULT_ADDR"]})
    assert [a.kind for a in result.annotations] == ["notice"]
    assert "seeding it from auth-json" in result.annotations[0].message
    current = vault_target.open().read()
    assert current is not None and result.outputs["store-version"] == current.version
    assert result.outputs["refreshed"] == "true" and token_server.posts == 1
    assert json.loads(current.value)["tokens"]["refresh_token"] == token_server.current_refresh_token
    assert_clean(result, *tokens_of(seed))


@pytest.mark.parametrize("refresh", ["auto", "never"])
def test_seed_only(machine: Runner, action: Path, token_server: TokenServer, refresh: str) -> None:
    seed = stale_login()
    job = machine.job(canaries=tokens_of(seed))
    result = run_auth(job, action, **{"auth-json": json.dumps(seed), "refresh": refresh})
    assert set(tokens_of(seed)) <= job.masks
    home = result.outputs["codex-home"]
    assert job.env["CODEX_HOME"] == home and "CODEX_CI_STORE_URL" not in job.env
    assert result.outputs["auth-mode"] == "chatgpt" and result.outputs["store-version"] == ""
    tokens = auth_json(home)["tokens"]
    if refresh == "never":
        assert result.outputs["refreshed"] == "false" and token_server.posts == 0
        assert tokens["refresh_token"] == "CANARY-rt-0"
        assert "### codex-ci refresh" not in "".join(result.summaries)
    else:
        assert result.outputs["refreshed"] == "true" and token_server.posts == 1
        assert tokens["refresh_token"] == token_server.current_refresh_token
    assert "| seeded | true |" in "".join(result.summaries)
    assert not [line for line in result.log if "pip will download" in line]  # uv's wheel from the loopback index
    assert_clean(result, *tokens_of(seed))


def test_cold_install_from_the_index_is_exactly_the_lock_and_the_checkout(tmp_path: Path, action: Path,
                                                                        token_server: TokenServer) -> None:
    """A new machine with every cache empty and no local wheels: uv comes from its pinned wheel and the store's
    locked requirements from the index, nothing else is installed, and codex-ci is the checkout's code."""
    cold = Runner(tmp_path / "cold", machine_env={"PIP_NO_CACHE_DIR": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    result = run_auth(cold.job(), action, **{"auth-json": json.dumps(stale_login()), "refresh": "never"})
    assert result.steps[INSTALL]["outcome"] == "success"
    assert not [line for line in result.log if "pip will download" in line]  # uv fetched directly, no pip
    assert_pinned_uv(cold)
    venv = Path(result.steps[INSTALL]["outputs"]["venv"])
    version = re.search(r'__version__ = "(.+)"', (action / "codex_ci" / "__init__.py").read_text())
    assert version and f"codex-ci {version.group(1)}" in result.log
    assert installed(venv) == {**locked("core"), "codex-ci": version.group(1)}  # setuptools only built the wheel
    check = subprocess.run([str(uv_of(cold)), "pip", "check", "--python", str(venv / "bin" / "python")],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr  # --no-deps left nothing out: the lock is complete
    package = Path(subprocess.run([str(venv / "bin" / "python"), "-I", "-c", "import codex_ci; print(codex_ci.__file__)"
                                   ], capture_output=True, text=True, check=True, timeout=60).stdout.strip()).parent
    ours = {p.relative_to(action / "codex_ci") for p in (action / "codex_ci").rglob("*") if p.is_file()}
    theirs = {p.relative_to(package) for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert theirs == ours
    assert all((package / name).read_bytes() == (action / "codex_ci" / name).read_bytes() for name in ours)
    assert not (tmp_path / "xdg").exists()  # nothing written to the machine's caches


def test_no_installed_code_comes_from_a_cache(machine: Runner, action: Path, token_server: TokenServer,
                                              wheelhouse: Path, tmp_path: Path) -> None:
    """Neither action restores a cache; a venv or a uv left at the action's paths is replaced, never trusted; and a
    poisoned uv cache, which a plain ``uv pip install --require-hashes`` would install from, is not used."""
    for action_file in (action / "action.yml", action / "persist" / "action.yml"):
        for step in yaml.safe_load(action_file.read_text())["runs"]["steps"]:
            assert "cache" not in str(step.get("uses", "")), (action_file, step["uses"])
            assert not {k for k in step.get("with") or {} if "cache" in k}, (action_file, step["with"])
    # A uv cache whose unpacked typer prints a marker: uv records the archive's hash, not the files' content.
    uv = Path(sys.executable).parent / "uv"
    poisoned = tmp_path / "xdg" / "uv"
    env = {**os.environ, "UV_CACHE_DIR": str(poisoned), "UV_FIND_LINKS": str(wheelhouse), "UV_OFFLINE": "1"}
    lock = ["-r", str(ROOT / "action" / "requirements-core.txt")]
    for venv in (tmp_path / "filler", tmp_path / "control"):
        subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], env=env, check=True,
                       timeout=120, cwd=tmp_path)
        subprocess.run([str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--no-deps",
                        "--require-hashes", "--only-binary", ":all:", *lock], env=env, check=True, timeout=300,
                       cwd=tmp_path)
        for module in poisoned.glob("archive-v0/*/typer/__init__.py"):
            module.write_text(module.read_text() + '\nprint("PLANTED-CODE-RAN")\n')
    control = subprocess.run([str(tmp_path / "control" / "bin" / "python"), "-I", "-c", "import typer"],
                             capture_output=True, text=True, check=True, timeout=60)
    assert "PLANTED-CODE-RAN" in control.stdout  # the poison works on a plain uv install

    job = machine.job({"UV_CACHE_DIR": str(poisoned), "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    planted = machine.temp / "codex-ci-venv-core" / "bin" / "codex-ci"
    planted_uv = uv_of(machine)
    for path in (planted, planted_uv):
        path.parent.mkdir(parents=True)
        path.write_text("#!/bin/sh\necho PLANTED-CODE-RAN\n")
        path.chmod(0o755)
    result = run_auth(job, action, **{"auth-json": json.dumps(stale_login()), "refresh": "never"})
    assert result.steps[INSTALL]["outcome"] == "success"
    assert result.steps[INSTALL]["outputs"]["venv"] == str(planted.parent.parent)
    assert "PLANTED-CODE-RAN" not in "\n".join(result.log) and "PLANTED" not in planted.read_text()
    assert "PLANTED" not in planted_uv.read_bytes().decode("latin-1")
    assert_pinned_uv(machine)
    assert Path(result.exported_env["CODEX_CI_VENV"], "bin", "codex-ci").exists()
    typer = next(Path(result.exported_env["CODEX_CI_VENV"]).glob("lib/python*/site-packages/typer/__init__.py"))
    assert "PLANTED" not in typer.read_text()


def test_the_workspace_cannot_change_the_install(machine: Runner, action: Path, token_server: TokenServer) -> None:
    """The job's working directory (a checkout of anyone's code) holds modules named like the ones the install
    runs and a uv.toml: no Python call imports from it and uv reads no configuration from it."""
    job = machine.job()
    marker = 'print("PLANTED-CODE-RAN")\n'
    for name in ("venv.py", "re.py", "hashlib.py", "zipfile.py", "shutil.py", "platform.py", "pip/__init__.py",
                 "pip/__main__.py", "setuptools/__init__.py"):
        (machine.workspace / name).parent.mkdir(exist_ok=True)
        (machine.workspace / name).write_text(marker)
    (machine.workspace / "uv.toml").write_text("not = valid = toml\n")
    shown = subprocess.run([sys.executable, "-c", "import venv, zipfile, hashlib"], cwd=machine.workspace,
                           capture_output=True, text=True, timeout=60)
    assert "PLANTED-CODE-RAN" in shown.stdout  # without -I, these modules would be imported
    uv_reads_it = subprocess.run([str(Path(sys.executable).parent / "uv"), "pip", "list", "--python",
                                  sys.executable], cwd=machine.workspace, capture_output=True, text=True, timeout=60)
    assert uv_reads_it.returncode != 0 and "uv.toml" in uv_reads_it.stderr  # uv reads the cwd's uv.toml
    result = run_auth(job, action, **{"auth-json": json.dumps(stale_login()), "refresh": "never"})
    assert result.steps[INSTALL]["outcome"] == "success"
    assert "PLANTED-CODE-RAN" not in "\n".join(result.log)
    assert_pinned_uv(machine)


def test_a_runner_python_without_pip_gets_uv_through_a_throwaway_venv(
    machine: Runner, action: Path, token_server: TokenServer, tmp_path: Path
) -> None:
    """Debian's python3 without python3-pip: the action makes a venv with pip only to download uv."""
    bare = tmp_path / "python-without-pip"
    subprocess.run([str(Path(sys.base_prefix) / "bin" / "python3"), "-m", "venv", "--without-pip", str(bare)],
                   check=True, timeout=300, capture_output=True)
    assert subprocess.run([str(bare / "bin" / "python3"), "-I", "-c", "import pip"], capture_output=True,
                          timeout=60).returncode != 0
    job = machine.job({"PATH": f"{bare / 'bin'}:{os.environ['PATH']}", "PIP_NO_INDEX": "1"})  # pip, not get-uv.py
    result = run_auth(job, action, **{"auth-json": json.dumps(stale_login()), "refresh": "never"})
    assert result.steps["find"]["outputs"]["python-path"] == str(bare / "bin" / "python3")
    assert result.steps[INSTALL]["outcome"] == "success"
    assert (machine.temp / "codex-ci-uv" / "pip-venv" / "bin" / "pip").exists()
    assert [line for line in result.log if "pip will download" in line]
    assert_pinned_uv(machine)


def get_uv() -> ModuleType:
    spec = importlib.util.spec_from_file_location("get_uv", ROOT / "action" / "get-uv.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_get_uv_takes_the_wheel_that_fits_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    module = get_uv()
    monkeypatch.setattr(module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(module.os, "confstr", lambda name: "glibc 2.31")
    rank = module.platform_rank
    assert rank("manylinux_2_17_x86_64.manylinux2014_x86_64") == (2, 17)
    assert rank("manylinux2014_x86_64") == (2, 17)
    assert rank("manylinux_2_28_x86_64") == (2, 28)
    assert rank("manylinux_2_34_x86_64") is None  # needs a newer glibc
    assert rank("musllinux_1_1_x86_64") is None
    assert rank("manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64") is None
    assert rank("macosx_11_0_x86_64") is None and rank("win_amd64") is None
    monkeypatch.setattr(module.os, "confstr", lambda name: None)  # musl: left to pip
    assert rank("manylinux_2_17_x86_64.manylinux2014_x86_64") is None


class _Index(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        self.requests.append(self.path)


def test_get_uv_reads_the_index_page_and_checks_the_hash(tmp_path: Path, wheelhouse: Path) -> None:
    """A PEP 503 page on a loopback index: the wheel for this machine whose hash the lock pins is the one taken
    (not another version, not a musl build); a wheel whose bytes do not match its pinned hash is refused and
    nothing is left behind; PIP_NO_INDEX leaves it to pip without a request."""
    [wheel] = wheelhouse.glob("uv-*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest in (ROOT / "action" / "requirements-uv.txt").read_text()
    root = tmp_path / "index"
    (root / "simple" / "uv").mkdir(parents=True)
    (root / "files").mkdir()
    shutil.copy(wheel, root / "files" / wheel.name)
    musl = wheel.name.replace(wheel.name.split("-")[-1], "musllinux_1_1_x86_64.whl")
    older = wheel.name.replace(locked("uv")["uv"], "0.0.1")
    links = [(older, "0" * 64), (musl, digest), (wheel.name, digest)]
    (root / "simple" / "uv" / "index.html").write_text("<html><body>\n" + "".join(
        f'<a href="../../files/{name}#sha256={sha}" data-requires-python="&gt;=3.8">{name}</a><br/>\n'
        for name, sha in links) + "</body></html>\n")
    handler = type("Index", (_Index,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {**os.environ, "PIP_INDEX_URL": f"http://127.0.0.1:{server.server_address[1]}/simple",
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    env.pop("PIP_NO_INDEX", None)

    def run(out: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        out.mkdir()
        return subprocess.run([sys.executable, "-I", str(ROOT / "action" / "get-uv.py"),
                               str(ROOT / "action" / "requirements-uv.txt"), str(out)], env={**env, **extra},
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    try:
        good = run(tmp_path / "good")
        assert good.returncode == 0, good.stderr
        assert [p.name for p in (tmp_path / "good" / "wheel").iterdir()] == [wheel.name]
        version = subprocess.run([str(tmp_path / "good" / "uv"), "--version"], capture_output=True, text=True,
                                 check=True, timeout=60).stdout.split()
        assert version[:2] == ["uv", locked("uv")["uv"]]
        assert handler.requests == ["/simple/uv/", f"/files/{wheel.name}"]

        (root / "files" / wheel.name).write_bytes(wheel.read_bytes() + b"tampered")
        bad = run(tmp_path / "bad")
        assert bad.returncode == 3 and "does not pin" in bad.stderr, bad.stderr
        assert list((tmp_path / "bad").iterdir()) == []

        handler.requests.clear()
        off = run(tmp_path / "off", PIP_NO_INDEX="1")
        assert off.returncode == 3 and "PIP_NO_INDEX" in off.stderr
        assert handler.requests == [] and list((tmp_path / "off").iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()


def test_the_runner_python_is_used_when_it_matches(machine: Runner, action: Path, token_server: TokenServer
                                                   ) -> None:
    """A Python >= 3.11 on PATH is used as is; a range nothing on the runner meets falls back to setup-python."""
    inputs = {"auth-json": json.dumps(stale_login()), "refresh": "never"}
    found = run_auth(machine.job(), action, **inputs)
    assert found.steps["find"]["outputs"]["python-path"] != ""
    assert found.steps["python"]["outcome"] == "skipped"
    fallback = run_auth(machine.job(), action, **inputs, **{"python-version": ">=3.11,<3.11"})
    assert fallback.steps["find"]["outputs"]["python-path"] == ""
    assert fallback.steps["python"]["outcome"] == "success"
    assert fallback.steps[INSTALL]["outcome"] == "success"


@pytest.mark.parametrize("bad", ["3.12; rm -rf /", "pypy3.10", "3.11\n::error::injected"])
def test_python_version_is_checked(machine: Runner, action: Path, bad: str) -> None:
    result = machine.job().run(action, {"auth-json": "{}", "python-version": bad})
    assert result.status == ExitCode.USAGE
    assert result.steps[INSTALL]["outcome"] == "skipped"
    assert len(result.errors) == 1 and "python-version" in result.errors[0].message
    assert "injected" not in "\n".join(result.log)


def test_windows_fails_fast_with_one_error(tmp_path: Path, action: Path) -> None:
    windows = Runner(tmp_path / "windows", os_name="Windows")
    result = windows.job().run(action, {"auth-json": "{}"})
    assert result.status != 0
    assert [e.message for e in result.errors] == ["codex-ci runs on Linux and macOS runners only, not on Windows"]
    assert [name for name, step in result.steps.items() if step["outcome"] != "skipped"] == ["find"]


def test_bad_auth_json_fails_with_an_annotation(machine: Runner, action: Path, token_server: TokenServer) -> None:
    bad = stale_login()
    bad["tokens"]["id_token"] = "CANARY-not-a-jwt"
    job = machine.job(canaries=tokens_of(bad))
    result = job.run(action, {"auth-json": json.dumps(bad)})
    assert result.status == ExitCode.INVALID
    assert result.steps["run"]["outcome"] == "failure"
    [error] = result.errors
    assert "id_token" in error.message
    assert not (Path(result.outputs["codex-home"]) / "auth.json").exists()
    assert token_server.posts == 0
    assert_clean(result, *tokens_of(bad))


def test_persist_without_a_login_is_skipped(machine: Runner, action: Path, tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store.json'}"
    result = run_auth(machine.job(), action / "persist", store=store, **{"codex-home": str(tmp_path / "empty")})
    assert result.outputs["persisted"] == "skipped"
    assert [a.kind for a in result.annotations] == ["warning"]
    assert not (tmp_path / "store.json").exists()
    assert_clean(result)


def test_persist_alone_installs_codex_ci_itself(machine: Runner, action: Path, tmp_path: Path) -> None:
    """The persist action in a job without the auth step: it finds a Python and installs codex-ci on its own."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "auth.json").write_text(json.dumps(login(refresh_token="CANARY-rt-persist")))
    (home / "auth.json").chmod(0o600)
    store = tmp_path / "store.json"
    job = machine.job(canaries=["CANARY-rt-persist"])
    result = run_auth(job, action / "persist", store=f"file://{store}", **{"codex-home": str(home)})
    assert result.steps["find"]["outcome"] == "success" and result.steps["persist"]["outcome"] == "success"
    assert (machine.temp / "codex-ci-venv-persist" / "bin" / "codex-ci").exists()
    assert_pinned_uv(machine)
    from codex_ci.stores.file import FileStore

    saved = FileStore(store).read()
    assert saved is not None and json.loads(saved.value)["tokens"]["refresh_token"] == "CANARY-rt-persist"
    assert result.outputs == {"persisted": "created", "store-version": saved.version}
    assert_clean(result, "CANARY-rt-persist")


def test_refresh_input_is_checked(machine: Runner, action: Path) -> None:
    seed = stale_login()
    result = machine.job().run(action, {"auth-json": json.dumps(seed), "refresh": "sometimes"})
    assert result.status == ExitCode.USAGE
    assert [e.message for e in result.errors] == ["refresh must be auto, always or never"]
    assert_clean(result, *tokens_of(seed))



def test_access_only_jobs_get_a_copy_that_can_rotate_nothing(machine: Runner, action: Path, token_server: TokenServer,
                                                             tmp_path: Path) -> None:
    """access-only: true on a store holding the full login, and a handout without the input: the job's auth.json
    holds the placeholder, nothing is sent to the token endpoint, and persist writes nothing."""
    from codex_ci.authfile import ACCESS_ONLY_TOKEN
    from codex_ci.stores.file import FileStore

    full = login(expires_in=7200, refresh_token="CANARY-rt-full")
    store = tmp_path / "store" / "auth.json"
    FileStore(store).write(json.dumps(full), None)
    handout = tmp_path / "store" / "handout.json"
    FileStore(handout).write(json.dumps(login(expires_in=7200, refresh_token=ACCESS_ONLY_TOKEN)), None)
    for inputs in ({"store": f"file://{store}", "access-only": "true"}, {"store": f"file://{handout}"}):
        job = machine.job(canaries=tokens_of(full))
        result = run_auth(job, action, **inputs)
        home = result.outputs["codex-home"]
        assert auth_json(home)["tokens"]["refresh_token"] == ACCESS_ONLY_TOKEN, "\n".join(result.log)
        assert "CANARY-rt-full" not in (Path(home) / "auth.json").read_text()
        persisted = run_auth(job, action / "persist")
        assert persisted.outputs["persisted"] == "skipped"
        assert_clean(result, *tokens_of(full))
    assert token_server.posts == 0
    assert json.loads(FileStore(store).read().value)["tokens"]["refresh_token"] == "CANARY-rt-full"  # type: ignore[union-attr]
    bad = machine.job().run(action, {"store": f"file://{store}", "access-only": "yes"})
    assert bad.status == 2
