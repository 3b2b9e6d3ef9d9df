"""The CLI as a program: version, module entry, exit-code table, usage errors, lazy imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, login, run_process

from codex_ci import __version__
from codex_ci.errors import COMMAND_CODES, ExitCode


def test_version(cli) -> None:
    assert cli("--version").stdout.strip() == f"codex-ci {__version__}"


def test_python_dash_m(tmp_path: Path) -> None:
    run = run_process("--version")
    assert run.exit_code == 0 and run.stdout.strip() == f"codex-ci {__version__}"


def test_usage_errors_exit_2(cli) -> None:
    assert cli("seed", "--no-such-option").exit_code == ExitCode.USAGE
    assert cli("no-such-command").exit_code == ExitCode.USAGE


def test_readme_documents_every_exit_code_and_the_commands_that_return_it() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| ([a-z, ]+) \|", readme, flags=re.M)
    assert {int(code): name for code, name, _ in rows} == {code.value: code.name for code in ExitCode}
    documented = {int(code): set(COMMAND_CODES) if names == "all" else set(names.split(", "))
                  for code, _, names in rows}
    assert documented == {code.value: {c for c, codes in COMMAND_CODES.items() if code in codes} for code in ExitCode}


HEAVY = ("httpx", "boto3", "botocore", "hvac", "google.cloud", "grpc")


def _imported_after(args: list[str], env: dict[str, str]) -> list[str]:
    code = (
        "import sys\nfrom codex_ci.cli import main\nsys.argv = ['codex-ci', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_seed_and_status_import_no_network_or_store_sdk(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CODEX_AUTH_JSON": json.dumps(login()), "HOME": str(tmp_path)}
    home = str(tmp_path / "h")
    assert _imported_after(["seed", "--codex-home", home], env) == []
    assert (tmp_path / "h" / "auth.json").exists()
    assert _imported_after(["status", "--codex-home", home], env) == []
    # the check itself can fail: refresh does load httpx
    assert "httpx" in _imported_after(["refresh", "--codex-home", home], env)


def test_unexpected_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    code = (
        "import sys, codex_ci.seed as l\n"
        "def boom(*a, **k):\n    raise RuntimeError('CANARY-secret-in-message')\n"
        "l.seed = boom\nfrom codex_ci.cli import main\nsys.argv = ['codex-ci', 'seed']\nmain()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "CODEX_AUTH_JSON": json.dumps(login()), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitCode.UNEXPECTED
    expected = "codex-ci: internal error (RuntimeError). This is a bug in codex-ci; please report it."
    assert proc.stderr.strip() == expected
