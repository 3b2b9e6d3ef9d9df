"""codex_ci.distributed: the distributed refresh in process, on a FileStore and the strict loopback token endpoint —
one POST for a stale login, no lease for a login with nothing to rotate, the lease waited for or left standing
when a rotation is unsaved, and on a store without compare-and-set only the rotator (a small typed fake here)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import login

from codex_ci.authfile import ACCESS_ONLY_TOKEN
from codex_ci.distributed import ROTATOR_HINT, distributed_refresh
from codex_ci.errors import (
    AccessOnlyError,
    ConfigError,
    ExitCode,
    LockTimeoutError,
    StoreError,
    UnsavedRotation,
)
from codex_ci.home import Home
from codex_ci.policy import Policy
from codex_ci.stores import Store, Versioned
from codex_ci.stores.file import FileStore
from testing.tokenserver import TokenServer, rfc3339

POLICY = Policy(min_ttl=timedelta(minutes=10), max_age=timedelta(days=8))
LEASE_TTL = timedelta(minutes=2)
STALE_REASON = "the access token expires within the minimum TTL"


def text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def token_of(value: str | bytes) -> str:
    found: str = json.loads(value)["tokens"]["refresh_token"]
    return found


def refresh(home: Path, store: Store, *, lease_wait: float = 30, rotator: bool = False,
            handout: Store | None = None, lease_ttl: timedelta = LEASE_TTL) -> Any:
    return distributed_refresh(Home(home), store, POLICY, lock_timeout=5, lease_ttl=lease_ttl,
                               lease_wait=lease_wait, rotator=rotator, handout=handout)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store" / "login.json")


def lease_path(store: FileStore) -> Path:
    return store.path.with_name("login.json.lease")


def lease_record(store: FileStore) -> dict[str, Any]:
    current = store.sibling("lease").read()
    assert current is not None
    data: dict[str, Any] = json.loads(current.value)
    return data


# -- a compare-and-set store -------------------------------------------------------------------------------------

def test_a_stale_login_is_rotated_once_and_saved_under_a_released_lease(home: Path, store: FileStore,
                                                                        token_server: TokenServer) -> None:
    assert store.write(text(login(expires_in=60)), None) == "1"
    result = refresh(home, store)
    assert (result.action, result.reason, result.version) == ("refreshed", STALE_REASON, "2")
    assert token_server.posts == 1
    saved = store.read()
    assert saved is not None and saved.version == "2"
    assert token_of(saved.value) == token_server.current_refresh_token != "CANARY-rt-0"
    assert saved.value.encode() == (home / "auth.json").read_bytes()
    record = lease_record(store)
    assert record["holder"] is None and set(record) == {"holder", "released_at"}


@pytest.mark.parametrize(("stored", "reason"), [
    (login(expires_in=7200), "the access token is fresh enough"),
    ({"OPENAI_API_KEY": "sk-CANARY-key-0123456789"}, "apikey login: nothing to refresh"),
    (login(expires_in=7200, refresh_token=ACCESS_ONLY_TOKEN),
     "an access-only copy, fresh enough (its login is rotated elsewhere)"),
], ids=["fresh", "apikey", "access-only"])
def test_nothing_to_rotate_takes_no_lease(home: Path, store: FileStore, token_server: TokenServer,
                                          stored: dict[str, Any], reason: str) -> None:
    store.write(text(stored), None)
    result = refresh(home, store)
    assert (result.action, result.reason, result.version) == ("not-refreshed", reason, "1")
    assert token_server.posts == 0
    assert not lease_path(store).exists()
    assert (home / "auth.json").exists()  # restored all the same


def test_a_spent_access_only_copy_takes_no_lease(home: Path, store: FileStore, token_server: TokenServer) -> None:
    store.write(text(login(expires_in=60, refresh_token=ACCESS_ONLY_TOKEN)), None)
    with pytest.raises(AccessOnlyError) as caught:
        refresh(home, store)
    assert caught.value.exit_code == ExitCode.ACCESS_ONLY
    assert token_server.posts == 0
    assert not lease_path(store).exists()


def test_a_lease_ttl_over_the_cap_is_refused_before_the_store_is_read(home: Path, store: FileStore,
                                                                      token_server: TokenServer) -> None:
    with pytest.raises(ConfigError) as caught:
        refresh(home, store, lease_ttl=timedelta(minutes=16))
    assert caught.value.message == "--lease-ttl must be more than 0 and at most 15m"
    assert not home.exists()


def test_a_lease_held_by_another_runner_is_waited_for_then_exit_7(home: Path, store: FileStore,
                                                                 token_server: TokenServer) -> None:
    store.write(text(login(expires_in=60)), None)
    other = {"holder": "runner-b", "acquired_at": rfc3339(0), "ttl_seconds": 60}
    store.sibling("lease").write(json.dumps(other), None)
    with pytest.raises(LockTimeoutError) as caught:
        refresh(home, store, lease_wait=0)
    assert re.fullmatch(rf"runner runner-b has held the refresh lease on {re.escape(store.url)} for at least \d+s "
                        r"\(waited 0s for it\)", caught.value.message), caught.value.message
    assert caught.value.exit_code == ExitCode.LOCK_TIMEOUT
    assert token_server.posts == 0
    assert lease_record(store) == other  # never ours, so never released


class RotatedElsewhere(FileStore):
    """A store whose login another runner rotates just before this runner's second read of it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0

    def read(self) -> Versioned | None:
        self.reads += 1
        if self.reads == 2:
            current = super().read()
            assert current is not None
            super().write(text(login(expires_in=7200, refresh_token="CANARY-rt-by-b")), current.version)
        return super().read()


def test_a_rotation_seen_while_waiting_for_the_lease_is_taken(home: Path, tmp_path: Path,
                                                              token_server: TokenServer) -> None:
    store = RotatedElsewhere(tmp_path / "store" / "login.json")
    store.write(text(login(expires_in=60)), None)
    other = {"holder": "runner-b", "acquired_at": rfc3339(0), "ttl_seconds": 60}
    store.sibling("lease").write(json.dumps(other), None)
    result = refresh(home, store)
    assert (result.action, result.reason, result.version) == ("not-refreshed", "another runner refreshed it", "2")
    assert token_server.posts == 0
    assert token_of((home / "auth.json").read_bytes()) == "CANARY-rt-by-b"
    assert lease_record(store) == other


def test_a_rotation_found_after_taking_the_lease_is_taken(home: Path, tmp_path: Path,
                                                          token_server: TokenServer) -> None:
    store = RotatedElsewhere(tmp_path / "store" / "login.json")
    store.write(text(login(expires_in=60)), None)
    result = refresh(home, store)
    assert (result.action, result.reason, result.version) == ("not-refreshed", "another runner refreshed it", "2")
    assert token_server.posts == 0
    assert token_of((home / "auth.json").read_bytes()) == "CANARY-rt-by-b"
    assert lease_record(store)["holder"] is None  # taken, then released


class Unwritable(FileStore):
    """A login store whose writes fail (its lease, a plain FileStore next to it, works)."""

    def write(self, value: str, expected: str | None) -> str:
        raise StoreError(f"cannot write {self.url}: disk full")


def test_an_unsaved_rotation_keeps_the_lease_and_the_next_run_heals_the_store(home: Path, tmp_path: Path,
                                                                              token_server: TokenServer) -> None:
    path = tmp_path / "store" / "login.json"
    FileStore(path).write(text(login(expires_in=60)), None)
    with pytest.raises(UnsavedRotation) as caught:
        refresh(home, Unwritable(path))
    url = f"file://{path}"
    assert caught.value.message == f"refreshed locally but could not save to {url}: cannot write {url}: disk full"
    assert caught.value.exit_code == ExitCode.STORE
    assert caught.value.hint == ("Run `codex-ci persist --to URL` before this runner goes away, or the new login is "
                                 "lost.")
    live = token_server.current_refresh_token
    assert token_of((home / "auth.json").read_bytes()) == live
    store = FileStore(path)
    holder = lease_record(store)["holder"]
    assert isinstance(holder, str) and holder  # kept: the store still holds the spent refresh token
    # the next run on this home writes the unsaved rotation first, and then has nothing to rotate
    result = refresh(home, store)
    assert (result.action, result.reason, result.version) == ("not-refreshed", "the access token is fresh enough", "2")
    saved = store.read()
    assert saved is not None and token_of(saved.value) == live
    assert token_server.posts == 1


# -- a store without compare-and-set -------------------------------------------------------------------------------

class WriteOnly:
    """A store without compare-and-set (github's kind): last writer wins, no sibling for a lease."""

    compare_and_set = False
    missing_hint: str | None = None

    def __init__(self, name: str, calls: list[str], value: str | None = None, *, writable: bool = True) -> None:
        self.name, self.calls, self.value, self.writable = name, calls, value, writable
        self.version = 0 if value is None else 1

    @property
    def url(self) -> str:
        return f"fake://{self.name}"

    @property
    def key(self) -> str:
        return self.url

    def read(self) -> Versioned | None:
        self.calls.append(f"read {self.name}")
        return None if self.value is None else Versioned(self.value, str(self.version))

    def write(self, value: str, expected: str | None) -> str:
        self.calls.append(f"write {self.name}")
        self.value, self.version = value, self.version + 1
        return str(self.version)

    def check_writable(self) -> None:
        self.calls.append(f"check_writable {self.name}")
        if not self.writable:
            raise StoreError(f"{self.url} refuses writes")

    def sibling(self, suffix: str) -> Store:
        raise AssertionError("a store without compare-and-set holds no lease")


def test_the_fake_is_a_store() -> None:
    fake: Store = WriteOnly("login", [])  # mypy checks the fake against the Protocol here
    assert fake.compare_and_set is False


def test_without_compare_and_set_a_runner_is_refused_before_anything_is_read(home: Path,
                                                                            token_server: TokenServer) -> None:
    calls: list[str] = []
    with pytest.raises(ConfigError) as caught:
        refresh(home, WriteOnly("login", calls, text(login(expires_in=60))))
    assert caught.value.message == ("fake://login has no compare-and-set, so runners cannot share a refresh lease on "
                                    "it")
    assert (caught.value.exit_code, caught.value.hint) == (ExitCode.USAGE, ROTATOR_HINT)
    assert calls == []
    assert token_server.posts == 0
    assert not home.exists()


def test_without_compare_and_set_the_rotator_proves_every_write_then_rotates(home: Path,
                                                                            token_server: TokenServer) -> None:
    calls: list[str] = []
    store = WriteOnly("login", calls, text(login(expires_in=60)))
    handout = WriteOnly("handout", calls)
    result = refresh(home, store, rotator=True, handout=handout)
    assert (result.action, result.reason, result.version) == ("refreshed", STALE_REASON, "2")
    assert calls == ["check_writable login", "check_writable handout", "read login", "write login"]
    assert token_server.posts == 1
    assert store.value is not None and token_of(store.value) == token_server.current_refresh_token
    assert handout.value is None  # the access-only copy is the caller's to write, once the login is saved


def test_without_compare_and_set_a_write_bound_to_fail_stops_the_rotator_first(home: Path,
                                                                               token_server: TokenServer) -> None:
    calls: list[str] = []
    store = WriteOnly("login", calls, text(login(expires_in=60)))
    handout = WriteOnly("handout", calls, writable=False)
    with pytest.raises(StoreError) as caught:
        refresh(home, store, rotator=True, handout=handout)
    assert caught.value.message == "fake://handout refuses writes"
    assert calls == ["check_writable login", "check_writable handout"]
    assert token_server.posts == 0


def test_without_compare_and_set_a_fresh_login_is_left_alone(home: Path, token_server: TokenServer) -> None:
    calls: list[str] = []
    result = refresh(home, WriteOnly("login", calls, text(login(expires_in=7200))), rotator=True)
    assert (result.action, result.reason, result.version) == ("not-refreshed", "the access token is fresh enough",
                                                              "1")
    assert calls == ["check_writable login", "read login"]
    assert token_server.posts == 0
