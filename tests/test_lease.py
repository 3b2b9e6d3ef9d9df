"""codex_ci.lease against a real FileStore: taking, releasing, waiting for another holder, and expiry judged only by
the waiter's own monotonic clock (a fake one here: nothing sleeps)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from codex_ci import lease as lease_module
from codex_ci.claims import parse_time
from codex_ci.errors import ConfigError, ExitCode, StoreError
from codex_ci.lease import MAX_TTL, Lease, check_ttl, new_holder_id
from codex_ci.stores.base import Versioned
from codex_ci.stores.file import FileStore

TTL = timedelta(seconds=60)


class Clock:
    """Stands in for the ``time`` module in codex_ci.lease: a monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(lease_module, "time", fake)
    return fake


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "login.json.lease")


def record(store: FileStore) -> dict[str, Any]:
    current = store.read()
    assert current is not None
    data: dict[str, Any] = json.loads(current.value)
    return data


def plant(store: FileStore, data: object) -> str:
    """Write a lease record as another runner (or a damaged one) would have."""
    current = store.read()
    return store.write(data if isinstance(data, str) else json.dumps(data), current.version if current else None)


# -- taking and releasing ----------------------------------------------------------------------------------------

def test_take_writes_a_record_naming_the_holder(store: FileStore, clock: Clock) -> None:
    mine = Lease(store, "runner-a", TTL)
    assert mine.try_acquire() is True
    data = record(store)
    assert data["holder"] == "runner-a"
    assert data["ttl_seconds"] == 60.0
    assert parse_time(data["acquired_at"]) is not None
    assert mine.version == "1"
    assert mine.deadline == 1060.0  # counted from before the write, by this runner's clock


def test_release_frees_it_for_the_next_holder(store: FileStore, clock: Clock) -> None:
    first, second = Lease(store, "runner-a", TTL), Lease(store, "runner-b", TTL)
    assert first.try_acquire()
    first.release()
    assert first.version is None
    data = record(store)
    assert data["holder"] is None
    assert parse_time(data["released_at"]) is not None
    assert second.try_acquire() is True
    assert second.other is None


def test_release_without_taking_writes_nothing(store: FileStore, clock: Clock) -> None:
    Lease(store, "runner-a", TTL).release()
    assert store.read() is None


def test_the_holder_may_take_it_again(store: FileStore, clock: Clock) -> None:
    mine = Lease(store, "runner-a", TTL)
    assert mine.try_acquire()
    clock.now += 30
    assert mine.try_acquire() is True
    assert mine.version == "2"
    assert mine.deadline == 1090.0


def test_a_lost_compare_and_set_is_not_taking_it(tmp_path: Path, clock: Clock) -> None:
    """Two runners read "free" at once; the one whose write comes second loses, and says so."""

    class Racing(FileStore):
        race: Callable[[], None] | None = None

        def read(self) -> Versioned | None:
            current = super().read()
            if self.race is not None:
                race, self.race = self.race, None
                race()
            return current

    store = Racing(tmp_path / "login.json.lease")
    theirs = Lease(FileStore(store.path), "runner-b", TTL)
    store.race = lambda: None if theirs.try_acquire() else pytest.fail("runner-b did not take the lease")
    mine = Lease(store, "runner-a", TTL)
    assert mine.try_acquire() is False
    assert mine.version is None
    assert record(store)["holder"] == "runner-b"


def test_release_after_a_takeover_warns_and_leaves_the_new_holder(
        store: FileStore, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    first, second = Lease(store, "runner-a", TTL), Lease(store, "runner-b", TTL)
    assert first.try_acquire()
    assert not second.try_acquire()
    clock.now += 60
    assert second.try_acquire()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="codex_ci"):
        first.release()
    assert caplog.messages == [f"the refresh lease on {store.url} was taken over before release"]
    assert first.version is None
    assert record(store)["holder"] == "runner-b"


# -- waiting -----------------------------------------------------------------------------------------------------

def test_a_second_holder_waits_for_the_ttl_by_its_own_clock(
        store: FileStore, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    first = Lease(store, "runner-a", TTL)
    second = Lease(store, "runner-b", timedelta(minutes=10))  # its own TTL does not matter: the record's does
    assert first.try_acquire()
    assert second.try_acquire() is False
    assert second.other == "runner-a"
    assert second.waited() == 0.0
    clock.now += 59.999
    assert second.try_acquire() is False
    assert second.waited() == pytest.approx(59.999)
    clock.now += 0.001
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="codex_ci"):
        assert second.try_acquire() is True
    assert caplog.messages == [f"the refresh lease on {store.url} held by runner-a has not changed for 60s, past "
                               "its TTL; taking it over"]
    assert record(store)["holder"] == "runner-b"


def test_the_wait_starts_when_the_waiter_first_sees_the_record(store: FileStore, clock: Clock) -> None:
    """However old the record's own timestamp: no other machine's clock counts."""
    plant(store, {"holder": "runner-a", "acquired_at": "2001-01-01T00:00:00.000000Z", "ttl_seconds": 60})
    waiter = Lease(store, "runner-b", TTL)
    assert waiter.try_acquire() is False
    clock.now += 59
    assert waiter.try_acquire() is False
    clock.now += 1
    assert waiter.try_acquire() is True


def test_a_renewed_record_restarts_the_wait(store: FileStore, clock: Clock) -> None:
    holder, waiter = Lease(store, "runner-a", TTL), Lease(store, "runner-b", TTL)
    assert holder.try_acquire()
    assert not waiter.try_acquire()
    clock.now += 50
    assert holder.try_acquire()  # a new version of the record
    clock.now += 20
    assert waiter.try_acquire() is False  # 70 s since the first sight, but only now the new version is seen
    assert waiter.waited() == 0.0
    clock.now += 59
    assert waiter.try_acquire() is False
    clock.now += 1
    assert waiter.try_acquire() is True


@pytest.mark.parametrize(("ttl_seconds", "wait"), [
    (MAX_TTL.total_seconds() + 1, 0.0),  # claims more than any lease may last: expired at once
    (10**9, 0.0),
    (0, 0.0),
    (-5, 0.0),
    (MAX_TTL.total_seconds(), MAX_TTL.total_seconds()),
    (30, 30.0),
    (12.5, 12.5),
    ("600", 60.0),  # not a number: judged by the waiter's own TTL
    (True, 60.0),
    (None, 60.0),
])
def test_the_record_ttl_is_bounded(store: FileStore, clock: Clock, ttl_seconds: object, wait: float) -> None:
    plant(store, {"holder": "runner-a", "ttl_seconds": ttl_seconds})
    waiter = Lease(store, "runner-b", TTL)
    if wait == 0.0:
        assert waiter.try_acquire() is True
        return
    assert waiter.try_acquire() is False
    clock.now += wait - 0.5
    assert waiter.try_acquire() is False
    clock.now += 0.5
    assert waiter.try_acquire() is True


@pytest.mark.parametrize("value", ["not json", "[1, 2]", '"text"', "{}", '{"holder": ""}', '{"holder": 5}'])
def test_a_record_naming_no_holder_is_free(store: FileStore, clock: Clock, value: str) -> None:
    plant(store, value)
    mine = Lease(store, "runner-b", TTL)
    assert mine.try_acquire() is True
    assert mine.version == "2"


def test_a_damaged_record_is_a_store_error(store: FileStore, clock: Clock) -> None:
    store.path.write_text("this is not a file store")
    with pytest.raises(StoreError) as caught:
        Lease(store, "runner-a", TTL).try_acquire()
    assert type(caught.value) is StoreError
    assert caught.value.exit_code == ExitCode.STORE == 9
    assert caught.value.message == f"the refresh lease record {store.url} is damaged"
    assert caught.value.hint == "Delete it: it holds no secret, and the next refresh writes a new one."


# -- bounds and names --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ttl", [timedelta(microseconds=1), timedelta(seconds=60), MAX_TTL])
def test_check_ttl_accepts(ttl: timedelta) -> None:
    check_ttl(ttl)
    assert Lease(FileStore(Path("/nonexistent/x")), "h", ttl).ttl == ttl


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1), MAX_TTL + timedelta(microseconds=1)])
def test_check_ttl_refuses(ttl: timedelta) -> None:
    with pytest.raises(ConfigError) as caught:
        check_ttl(ttl)
    assert caught.value.message == "--lease-ttl must be more than 0 and at most 15m"
    assert caught.value.exit_code == ExitCode.USAGE
    with pytest.raises(ConfigError):
        Lease(FileStore(Path("/nonexistent/x")), "h", ttl)


def test_max_ttl() -> None:
    assert timedelta(minutes=15) == MAX_TTL


def test_holder_id_names_host_run_and_a_random_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lease_module.socket, "gethostname", lambda: "runner-host")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    first, second = new_holder_id(), new_holder_id()
    assert re.fullmatch(r"runner-host/run-4242/[0-9a-f]{12}", first)
    assert first != second
    monkeypatch.delenv("GITHUB_RUN_ID")
    assert re.fullmatch(r"runner-host/[0-9a-f]{12}", new_holder_id())
