"""The composite actions end to end, run by tests/actionrunner.py the way the GitHub runner runs them.

One simulated runner machine serves the whole module. Every job installs codex-ci afresh, as on a hosted runner:
from the action's checkout with ``--no-deps`` plus the store's hash-locked requirements, by uv (whose download
cache, checked against those hashes, is the only thing shared between jobs). The action runs from a snapshot of
the repository, as the runner runs ``org/codex-auth-action@v1`` from its download.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from actionrunner import Job, Result, Runner
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


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory.mktemp("runner"))


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
    vault_target.open().write(json.dumps(stored, indent=2).encode(), None)
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
    assert_clean(result, *tokens_of(seed))


def test_no_installed_code_comes_from_a_cache(machine: Runner, action: Path, token_server: TokenServer) -> None:
    """Neither action restores a cache, and a venv left at the action's path is replaced, never trusted."""
    for action_file in (action / "action.yml", action / "persist" / "action.yml"):
        for step in yaml.safe_load(action_file.read_text())["runs"]["steps"]:
            assert "cache" not in str(step.get("uses", "")), (action_file, step["uses"])
            assert not {k for k in step.get("with") or {} if "cache" in k}, (action_file, step["with"])
    job = machine.job()
    planted = machine.temp / "codex-ci-venv-core" / "bin" / "codex-ci"
    planted.parent.mkdir(parents=True)
    planted.write_text("#!/bin/sh\necho PLANTED-CODE-RAN\n")
    planted.chmod(0o755)
    result = run_auth(job, action, **{"auth-json": json.dumps(stale_login()), "refresh": "never"})
    assert result.steps[INSTALL]["outcome"] == "success"
    assert result.steps[INSTALL]["outputs"]["venv"] == str(planted.parent.parent)
    assert "PLANTED-CODE-RAN" not in "\n".join(result.log) and "PLANTED" not in planted.read_text()
    assert Path(result.exported_env["CODEX_CI_VENV"], "bin", "codex-ci").exists()


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
    FileStore(store).write(json.dumps(full).encode(), None)
    handout = tmp_path / "store" / "handout.json"
    FileStore(handout).write(json.dumps(login(expires_in=7200, refresh_token=ACCESS_ONLY_TOKEN)).encode(), None)
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
