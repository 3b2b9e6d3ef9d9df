"""codex_ci.state: the state file of a CODEX_HOME — its base in a store (by the store's key), the digest of the local
file at that base, this home's own rotation, the endpoint's earliest_refresh_at; read tolerantly, written 0600."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from codex_ci.claims import Stamp
from codex_ci.errors import ExitCode, FileSystemError
from codex_ci.state import STATE_NAME, State, digest, read_state, save_state

ISSUED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
REFRESHED = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC)
STAMP = Stamp(ISSUED, REFRESHED)
KEY = "file:///stores/login.json"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- digest ------------------------------------------------------------------------------------------------------

def test_digest_is_a_labelled_sha256() -> None:
    assert digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert digest(b"a") != digest(b"b")


# -- the base ----------------------------------------------------------------------------------------------------

def test_an_empty_state_has_no_base_anywhere() -> None:
    state = State()
    assert state.base_for(KEY) is None
    assert state.base_for("") is None
    assert state.refresh_not_before is None


def test_with_base_records_the_store_version_digest_and_stamp() -> None:
    state = State().with_base(KEY, "7", b"local bytes", STAMP)
    assert state == State(store=KEY, version="7", local_digest=digest(b"local bytes"),
                          base_stamp="2026-01-02T03:04:05.000000Z,2026-01-02T04:00:00.000000Z")
    assert Stamp.decode(state.base_stamp) == STAMP


def test_with_base_keeps_what_is_not_about_the_base() -> None:
    before = State(store="file:///old", version="1", local_digest="sha256:old", base_stamp="x",
                   not_before="2026-01-01T00:00:00.000000Z", rotated="sha256:rot", access_only="yes")
    after = before.with_base(KEY, "2", b"new", STAMP)
    assert (after.not_before, after.rotated, after.access_only) == ("2026-01-01T00:00:00.000000Z", "sha256:rot", "yes")
    assert (after.store, after.version, after.local_digest) == (KEY, "2", digest(b"new"))
    assert before.store == "file:///old"  # frozen: with_base makes a new state


def test_base_for_is_by_key() -> None:
    state = State().with_base(KEY, "3", b"x", STAMP)
    assert state.base_for(KEY) == "3"
    assert state.base_for("file:///stores/other.json") is None
    assert state.base_for(KEY + "/") is None


def test_a_store_without_a_version_is_no_base() -> None:
    assert State(store=KEY, version="").base_for(KEY) is None


def test_changed_since_base() -> None:
    state = State().with_base(KEY, "3", b"as restored", STAMP)
    assert state.changed_since_base(b"as restored") is False
    assert state.changed_since_base(b"as restored\n") is True
    assert State().changed_since_base(b"") is True  # no base: any file is a change


def test_own_rotation() -> None:
    state = State(rotated=digest(b"what this home wrote"))
    assert state.own_rotation(b"what this home wrote") is True
    assert state.own_rotation(b"something else") is False
    assert State().own_rotation(b"") is False  # no rotation recorded: nothing is ours


def test_refresh_not_before() -> None:
    assert State(not_before="2026-03-04T05:06:07.000000Z").refresh_not_before == datetime(2026, 3, 4, 5, 6, 7,
                                                                                             tzinfo=UTC)
    assert State(not_before="not a time").refresh_not_before is None


# -- reading -----------------------------------------------------------------------------------------------------

def test_read_absent_is_empty(tmp_path: Path) -> None:
    assert read_state(tmp_path) == State()
    assert read_state(tmp_path / "no-such-home") == State()


def test_round_trip(tmp_path: Path) -> None:
    state = State(store=KEY, version="4", local_digest=digest(b"x"), base_stamp=STAMP.encode(),
                  not_before="2026-01-01T00:00:00.000000Z", rotated=digest(b"y"), access_only="yes")
    save_state(tmp_path, state)
    assert read_state(tmp_path) == state


def test_every_field_is_read_as_text_and_nulls_are_left_out(tmp_path: Path) -> None:
    (tmp_path / STATE_NAME).write_text(json.dumps({"store": KEY, "version": 12, "local_digest": None,
                                                   "access_only": True}))
    assert read_state(tmp_path) == State(store=KEY, version="12", access_only="True")


def test_unknown_keys_are_ignored_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / STATE_NAME).write_text(json.dumps({"version": "5", "stored_digest": "sha256:old", "future": [1]}))
    with caplog.at_level(logging.DEBUG, logger="codex_ci"):
        assert read_state(tmp_path) == State(version="5")
    assert caplog.records == []


@pytest.mark.parametrize("raw", [
    b"{not json", b"[1, 2]", b'"a string"', b"null", b"\xff\xfe", b"", b"[" * 100000,
], ids=["broken", "array", "string", "null", "not-utf8", "empty", "nested"])
def test_an_unreadable_state_file_is_empty_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          raw: bytes) -> None:
    (tmp_path / STATE_NAME).write_bytes(raw)
    with caplog.at_level(logging.WARNING, logger="codex_ci"):
        assert read_state(tmp_path) == State()
    assert [r.getMessage() for r in caplog.records] == [f"ignoring an unreadable {tmp_path / STATE_NAME}"]


def test_a_symlinked_state_file_is_refused_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.json").write_text(json.dumps({"version": "9"}))
    (tmp_path / STATE_NAME).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(FileSystemError) as caught:
        read_state(tmp_path)
    assert caught.value.message == f"{tmp_path / STATE_NAME} is a symlink; refusing to follow it"
    assert caught.value.exit_code == ExitCode.FILESYSTEM


# -- writing -----------------------------------------------------------------------------------------------------

def test_save_writes_indented_json_of_every_field_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_state(tmp_path, State(store=KEY, version="1"))
    finally:
        os.umask(old)
    path = tmp_path / STATE_NAME
    assert mode(path) == 0o600
    assert json.loads(path.read_text()) == {"store": KEY, "version": "1", "local_digest": "", "base_stamp": "",
                                            "not_before": "", "rotated": "", "access_only": ""}
    assert path.read_text().startswith('{\n  "store": ')
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_NAME]  # no temp file left


def test_save_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / STATE_NAME
    path.write_text(json.dumps({"version": "1"}))
    path.chmod(0o644)
    with open(path, "rb") as old:
        inode = os.fstat(old.fileno()).st_ino
        save_state(tmp_path, State(version="2"))
        assert json.loads(old.read()) == {"version": "1"}  # the old file was renamed over, not rewritten in place
    assert os.stat(path).st_ino != inode
    assert mode(path) == 0o600
    assert read_state(tmp_path) == State(version="2")


def test_save_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.json").write_text("{}")
    (tmp_path / STATE_NAME).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(FileSystemError) as caught:
        save_state(tmp_path, State(version="2"))
    assert caught.value.message == f"{tmp_path / STATE_NAME} is a symlink; refusing to follow it"
    assert (tmp_path / "elsewhere.json").read_text() == "{}"
