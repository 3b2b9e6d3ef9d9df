"""The store registry (codex_ci.stores): one list from which schemes, extras, messages, --help and the action's
lock files follow, and a Protocol that mypy enforces on every store."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from typer.testing import CliRunner

from codex_ci.cli import app
from codex_ci.errors import ConfigError
from codex_ci.stores import STORES, open_store, parse_url, url_forms


def test_every_scheme_is_named_in_the_url_error_and_the_help() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_url("ftp://somewhere")
    help_text = " ".join(CliRunner().invoke(app, ["refresh", "--help"], terminal_width=400).output.split())
    for spec in STORES.values():
        assert f"{spec.scheme}://" in caught.value.message
        assert spec.form.split(" ")[0] in help_text
    assert url_forms().endswith("or file://PATH")


def test_pyproject_extras_are_the_registry_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for spec in STORES.values():
        if spec.extra is None:
            continue
        assert spec.package is not None
        assert [dep for dep in extras[spec.extra] if dep.startswith(spec.package)], spec.scheme
    wanted = sorted(spec.extra for spec in STORES.values() if spec.extra)
    assert extras["all"] == [f"codex-ci[{','.join(wanted)}]"] or sorted(
        re.findall(r"\w+", extras["all"][0].split("[", 1)[1])) == wanted


def test_the_action_installs_each_store_from_its_lock_file() -> None:
    """action/lib.sh picks the lock file by scheme: the mapping it spells out is the registry's."""
    lib = (ROOT / "action" / "lib.sh").read_text()
    mapping = dict(re.findall(r"^\s+(\w+)\*\) echo (\w+) ;;$", lib, re.M))
    assert mapping == {scheme: spec.extra for scheme, spec in STORES.items() if spec.extra}
    for spec in STORES.values():
        assert (ROOT / "action" / spec.requirements).is_file(), spec.requirements


def test_the_sdk_of_a_store_is_imported_only_when_it_is_opened(tmp_path: Path) -> None:
    code = ("import sys; from codex_ci.stores import open_store; "
            f"open_store('file://{tmp_path}/s.json', {{}}); "
            "print(sorted(m for m in ('hvac', 'boto3', 'google.cloud', 'nacl', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
    store = open_store(f"file://{tmp_path}/s.json", {})
    assert store.key == f"file://{tmp_path.resolve()}/s.json" and store.compare_and_set


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package with its mypy configuration, to break on purpose."""
    root = tmp_path_factory.mktemp("typed")
    shutil.copytree(ROOT / "codex_ci", root / "codex_ci", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def _mypy(root: Path) -> subprocess.CompletedProcess[str]:
    """mypy on the copy (incremental in its own cache: after the first run only the changed store is checked)."""
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(root / ".mypy_cache"), "-p", "codex_ci"],
                          cwd=root, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("store", "old", "new"), [
    ("file.py", "def sibling(self, suffix: str) -> Store:", "def sibling_of(self, suffix: str) -> Store:"),
    ("gcp.py", "def check_writable(self) -> None:", "def check_writeable(self) -> None:"),
    ("aws.py", "def write(self, value: str, expected: str | None) -> str:",
     "def write(self, value: str, expected: str | None, retries: int) -> str:"),
    ("vault.py", "    def read(self) -> Versioned | None:", "    def read(self) -> bytes | None:"),
])
def test_mypy_enforces_the_protocol_on_every_store(package_copy: Path, store: str, old: str, new: str) -> None:
    """Renaming a Protocol method in one store, or changing its shape, fails the type check."""
    path = package_copy / "codex_ci" / "stores" / store
    original = path.read_text()
    assert old in original
    path.write_text(original.replace(old, new))
    try:
        broken = _mypy(package_copy)
    finally:
        path.write_text(original)
    assert broken.returncode == 1, broken.stdout
    assert "codex_ci/stores/__init__.py" in broken.stdout and '"Store"' in broken.stdout


def test_the_copy_type_checks_once_restored(package_copy: Path) -> None:
    """The control for the test above: the same copy, unchanged, passes."""
    clean = _mypy(package_copy)
    assert clean.returncode == 0, clean.stdout
