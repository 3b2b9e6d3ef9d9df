"""The file store's own behaviour beyond the shared contract (tests/test_store_contract.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codex_ci.errors import ConfigError, ExitCode, StoredValueError, StoreError
from codex_ci.stores.file import FileStore, open_store


def test_a_missing_directory_holds_no_login_yet(tmp_path: Path) -> None:
    assert FileStore(tmp_path / "not-yet" / "store.json").read() is None


def test_a_directory_that_is_a_file_fails_reads_and_writes(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("")
    store = FileStore(tmp_path / "blocked" / "store.json")
    for action in (store.read, lambda: store.write("{}", None)):
        with pytest.raises(StoreError) as caught:
            action()
        assert caught.value.exit_code == ExitCode.STORE and store.url in caught.value.message


def test_a_damaged_document_is_not_a_login(tmp_path: Path) -> None:
    (tmp_path / "store.json").write_text('{"format": 1, "version": "2", "value": "x"}')
    with pytest.raises(StoredValueError) as caught:
        FileStore(tmp_path / "store.json").read()
    assert caught.value.exit_code == ExitCode.INVALID
    assert caught.value.message == f"file://{tmp_path}/store.json is not a codex-ci file store (or it is damaged)"


def test_the_key_is_the_real_path_and_the_sibling_sits_next_to_it(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    via_link = open_store(f"{tmp_path}/link/store.json", {})
    assert via_link.url == f"file://{tmp_path}/link/store.json"
    assert via_link.key == open_store(f"{tmp_path}/real/store.json", {}).key == f"file://{tmp_path}/real/store.json"
    assert via_link.sibling("lease").url == f"file://{tmp_path}/link/store.json.lease"


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        open_store(f"{tmp_path}/", {})
