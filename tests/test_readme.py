"""README's recipes, run as a runner would run them: each ``<!-- recipe: NAME -->`` YAML block's ``run:`` steps
in bash, with its ``env:``, against the strict loopback token server and a real store (the file store and
OpenBao), so that the recipes cannot drift from what the code does. ``codex exec`` is replaced by a shim that
checks, as Codex would need, that CODEX_HOME holds a usable login (``codex-ci status``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, SCRUBBED, assert_no_secrets, login

from codex_ci.authfile import ACCESS_ONLY_TOKEN
from codex_ci.stores import open_store
from testing.targets import StoreTarget
from testing.tokenserver import TokenServer

RECIPE = re.compile(r"<!-- recipe: ([\w-]+) -->\n```yaml\n(.*?)```", re.S)


def recipes() -> dict[str, list[dict[str, Any]]]:
    found = {name: yaml.safe_load(body) for name, body in RECIPE.findall((ROOT / "README.md").read_text())}
    return {name: (body["steps"] if isinstance(body, dict) else body) for name, body in found.items()}


def test_readme_has_the_recipes() -> None:
    assert set(recipes()) == {"self-hosted", "store"}


@pytest.fixture
def server() -> Any:
    with TokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=10 * 86400, grace=0.0) as srv:
        yield srv


def shim(tmp_path: Path) -> Path:
    """A directory holding `codex`: exits as `codex-ci status` does on CODEX_HOME (0: a usable login)."""
    bin_dir = tmp_path / "shim-bin"
    bin_dir.mkdir()
    codex = bin_dir / "codex"
    codex.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m codex_ci status -q\n')
    codex.chmod(0o755)
    return bin_dir


def run_steps(steps: list[dict[str, Any]], tmp_path: Path, substitute: dict[str, str], env: dict[str, str]) -> None:
    """Each ``run:`` step in bash with its ``env:``, after replacing the recipe's placeholders; all must pass."""
    def fill(text: str) -> str:
        for old, new in substitute.items():
            text = text.replace(old, new)
        assert "${{" not in text, f"an expression the test does not provide: {text}"
        return text

    path = f"{shim(tmp_path) if not (tmp_path / 'shim-bin').exists() else tmp_path / 'shim-bin'}"
    for step in steps:
        step_env = env | {k: fill(str(v)) for k, v in (step.get("env") or {}).items()}
        step_env["PATH"] = f"{path}:{Path(sys.executable).parent}:{os.environ['PATH']}"
        proc = subprocess.run(["bash", "-e", "-c", fill(step["run"])], env=step_env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (step["run"], proc.stdout, proc.stderr)
        assert_no_secrets(proc.stdout, proc.stderr)


def base_env(server: TokenServer, target: StoreTarget | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("VAULT_")}
    return env | (target.env if target else {}) | {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url}


def test_the_self_hosted_recipe(tmp_path: Path, server: TokenServer) -> None:
    home = tmp_path / "srv-codex-home"
    substitute = {"/srv/codex-home": str(home),
                  "${{ secrets.CODEX_AUTH_JSON }}": json.dumps(login(expires_in=-60))}
    for _ in range(2):  # two jobs on the same runner: one rotation, the second job starts from it
        run_steps(recipes()["self-hosted"], tmp_path, substitute, base_env(server))
    assert (server.successes, server.reused) == (1, 0)
    assert json.loads((home / "auth.json").read_text())["tokens"]["refresh_token"] == server.current_refresh_token


@pytest.mark.parametrize("kind", ["file", "vault"])
def test_the_store_recipe(tmp_path: Path, server: TokenServer, request: pytest.FixtureRequest, kind: str) -> None:
    target: StoreTarget = request.getfixturevalue(f"{kind}_target")
    target.open().write(json.dumps(login(expires_in=-60)), None)  # the first upload, from the trusted machine
    env = base_env(server, target)
    substitute = {"vault://secret/codex/auth": target.url, "${{ runner.temp }}": str(tmp_path / "runner-temp"),
                  "https://vault.example.com:8200": target.env.get("VAULT_ADDR", "")}
    run_steps(recipes()["store"], tmp_path, substitute, env)
    assert (server.successes, server.reused) == (1, 0)
    stored = target.open().read()
    handout = open_store(target.url + "-handout", {**os.environ, **target.env}).read()
    assert stored is not None and json.loads(stored.value)["tokens"]["refresh_token"] == server.current_refresh_token
    assert handout is not None and json.loads(handout.value)["tokens"]["refresh_token"] == ACCESS_ONLY_TOKEN
    job = json.loads((tmp_path / "runner-temp" / "codex-home" / "auth.json").read_text())
    assert job["tokens"] == json.loads(handout.value)["tokens"]
