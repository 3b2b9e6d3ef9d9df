"""The newcomer's scenarios: every message names the cause and the next step, every exit code is the documented
one for that cause, whatever the command. Real processes (``python -m codex_ci``), exact codes."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import SCRUBBED, assert_no_secrets, login, run_process, write_login

from codex_ci.errors import ExitCode


def env_with(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with no AWS, Vault or GCP settings from the developer's shell, HOME in tmp_path."""
    base = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith(("AWS_", "VAULT_"))}
    return base | {"HOME": str(tmp_path)} | extra


def one_line_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("codex-ci: error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


# -- the seed's source -----------------------------------------------------------------------------------------------

def test_an_empty_codex_auth_json_is_not_set(tmp_path: Path) -> None:
    """What GitHub gives for a secret that does not exist: an empty string."""
    run = run_process("seed", "--codex-home", str(tmp_path / "h"), env=env_with(tmp_path, CODEX_AUTH_JSON=""))
    assert run.exit_code == ExitCode.MISSING
    error = one_line_error(run.stderr)
    assert "CODEX_AUTH_JSON is empty" in error and "${{ secrets.CODEX_AUTH_JSON }}" in error
    assert not (tmp_path / "h" / "auth.json").exists()


@pytest.mark.parametrize(("value", "says", "hint"), [
    ("'{\"tokens\": {}}'", "is wrapped in quotes", "Remove the quotes"),
    (json.dumps(json.dumps(login())), "is a JSON string holding JSON", "encoded twice"),
    (json.dumps(login())[:200], "is cut short", "the value was truncated"),
    ("/home/me/.codex/auth.json", "looks like a file path", "Did you mean --from-file PATH?"),
    ("./auth.json", "looks like a file path", "Did you mean --from-file PATH?"),
])
def test_common_mistakes_in_the_seed_get_their_own_hint(tmp_path: Path, value: str, says: str, hint: str) -> None:
    run = run_process("seed", "--codex-home", str(tmp_path / "h"), env=env_with(tmp_path, CODEX_AUTH_JSON=value))
    assert run.exit_code == ExitCode.INVALID
    error = one_line_error(run.stderr)
    assert says in error and hint in error, error
    assert "Export a fresh auth.json" not in error and "log in again" not in error.lower()


def test_a_json_syntax_error_names_its_position_once(tmp_path: Path) -> None:
    run = run_process("seed", "--codex-home", str(tmp_path / "h"),
                      env=env_with(tmp_path, CODEX_AUTH_JSON='{"tokens": "a\\q", "x": 1}'))
    assert run.exit_code == ExitCode.INVALID
    error = one_line_error(run.stderr)
    assert "at at" not in error and "line 1, column" in error, error


# -- CODEX_HOME --------------------------------------------------------------------------------------------------------

COMMANDS = [
    ["seed"], ["refresh"], ["status"], ["restore", "--from", "file://{store}"], ["persist", "--to", "file://{store}"],
]


def fill(args: list[str], tmp_path: Path) -> list[str]:
    return [arg.format(store=tmp_path / "store.json") for arg in args]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_literal_tilde_in_codex_home_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    env = env_with(tmp_path, CODEX_HOME="~/codex-home", CODEX_AUTH_JSON=json.dumps(login()))
    run = run_process(*fill(command, tmp_path), env=env)
    assert run.exit_code == ExitCode.USAGE, run.stderr
    assert "literal ~" in one_line_error(run.stderr) and "Codex would not expand it either" in run.stderr
    assert not (tmp_path / "codex-home").exists() and not (tmp_path / "~").exists()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] != "seed"], ids=lambda c: c[0])
def test_codex_home_that_is_a_file_is_exit_8_from_every_command(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "store.json").write_text("")
    home = tmp_path / "file-home"
    home.write_text("not a directory")
    run = run_process(*fill(command, tmp_path), "--codex-home", str(home), env=env_with(tmp_path))
    assert run.exit_code == ExitCode.FILESYSTEM, run.stdout + run.stderr


def test_status_of_a_missing_codex_home_is_exit_8(tmp_path: Path) -> None:
    run = run_process("status", "--json", "--codex-home", str(tmp_path / "nowhere"), env=env_with(tmp_path))
    assert run.exit_code == ExitCode.FILESYSTEM
    assert json.loads(run.stdout)["health"] == "unusable"


@pytest.mark.parametrize("command", ["status", "refresh", "persist"])
def test_a_symlinked_auth_json_is_exit_8(tmp_path: Path, command: str) -> None:
    home = tmp_path / "h"
    real = write_login(tmp_path / "elsewhere", login())
    home.mkdir(mode=0o700)
    (home / "auth.json").symlink_to(real)
    args = [command] + (["--to", f"file://{tmp_path / 'store.json'}"] if command == "persist" else [])
    run = run_process(*args, "--codex-home", str(home), env=env_with(tmp_path))
    assert run.exit_code == ExitCode.FILESYSTEM, run.stdout + run.stderr


# -- configuration errors come before any network call -------------------------------------------------------------

def test_no_aws_region_is_a_usage_error(tmp_path: Path) -> None:
    write_login(tmp_path / "h", login())
    run = run_process("persist", "--to", "aws://codex/auth", "--codex-home", str(tmp_path / "h"),
                      env=env_with(tmp_path, AWS_CONFIG_FILE=str(tmp_path / "none"),
                                   AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none")))
    assert run.exit_code == ExitCode.USAGE, run.stderr
    assert "no AWS region" in one_line_error(run.stderr)


def test_a_store_sdk_that_is_not_installed_is_a_usage_error_naming_the_extra(tmp_path: Path) -> None:
    code = ("import sys\nsys.modules['hvac'] = None\nfrom codex_ci.cli import main\n"
            "sys.argv = ['codex-ci', *sys.argv[1:]]\nmain()\n")
    write_login(tmp_path / "h", login())
    proc = subprocess.run([sys.executable, "-c", code, "persist", "--to", "vault://secret/codex",
                           "--codex-home", str(tmp_path / "h")],
                          env=env_with(tmp_path, VAULT_ADDR="http://127.0.0.1:1", VAULT_TOKEN="x"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "pip install 'codex-ci[vault]'" in one_line_error(proc.stderr)


# -- the command line --------------------------------------------------------------------------------------------------

def test_global_flags_work_after_the_command(tmp_path: Path) -> None:
    env = env_with(tmp_path, CODEX_AUTH_JSON=json.dumps(login()))
    quiet = run_process("seed", "-q", "--codex-home", str(tmp_path / "h"), env=env)
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
    verbose = run_process("status", "--codex-home", str(tmp_path / "h"), "--verbose", env=env)
    assert verbose.exit_code == 0, verbose.stderr


@pytest.mark.parametrize("args", [["-h"], ["seed", "-h"], ["keepalive", "-h"]])
def test_dash_h_is_help(tmp_path: Path, args: list[str]) -> None:
    run = run_process(*args, env=env_with(tmp_path))
    assert run.exit_code == 0 and "Usage: codex-ci" in run.stdout


def test_help_texts_fit_their_options(tmp_path: Path) -> None:
    status = " ".join(run_process("status", "--help", env=env_with(tmp_path)).stdout.split())
    assert "--min-ttl DURATION Report `expiring` (exit 20) when the access token expires within this." in status
    keepalive = " ".join(run_process("keepalive", "--help", env=env_with(tmp_path)).stdout.split())
    assert "--retries N Retries when the request surely did not spend the token." in keepalive
    assert "--store URL" in keepalive and "--lease-ttl DURATION" in keepalive and "<str>" not in keepalive


# -- waits, stores -----------------------------------------------------------------------------------------------------

def test_a_long_lock_wait_is_said_once(tmp_path: Path) -> None:
    home = tmp_path / "h"
    write_login(home, login())
    fd = os.open(home / "auth.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    releaser = threading.Timer(4.0, lambda: os.close(fd))
    releaser.start()
    try:
        run = run_process("seed", "--force", "--codex-home", str(home),
                          env=env_with(tmp_path, CODEX_AUTH_JSON=json.dumps(login())))
    finally:
        releaser.join()
    assert run.exit_code == 0, run.stderr
    assert run.stderr.count("waiting for") == 1 and "auth.lock: another process holds it" in run.stderr


def test_status_of_an_empty_store_warns(tmp_path: Path) -> None:
    write_login(tmp_path / "h", login())
    run = run_process("status", "--store", f"file://{tmp_path / 'store.json'}", "--codex-home", str(tmp_path / "h"),
                      env=env_with(tmp_path))
    assert run.exit_code == 0
    assert "holds no login" in run.stderr and "persist --to" in run.stderr


def test_a_damaged_store_says_how_to_rewrite_it_not_to_log_in_again(tmp_path: Path) -> None:
    from codex_ci.stores.file import FileStore

    FileStore(tmp_path / "store.json").write('{"tokens": "CANARY-broken"}', None)
    run = run_process("restore", "--from", f"file://{tmp_path / 'store.json'}", "--codex-home",
                      str(tmp_path / "h"), env=env_with(tmp_path))
    assert run.exit_code == ExitCode.INVALID
    error = one_line_error(run.stderr)
    assert "damaged or is not a codex-ci login" in error and "persist --force" in error
    assert "Export a fresh" not in error
    assert_no_secrets(run.stderr)
