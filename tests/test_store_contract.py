"""One contract every store must keep, run against each with a real server on loopback."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import login
from storetargets import StoreTarget

from codex_ci.errors import ExitCode, InvalidAuthError, StoreError
from codex_ci.stores import StoreConflict


def payload(refresh_token: str = "CANARY-rt-0") -> bytes:
    return json.dumps(login(refresh_token=refresh_token), indent=2).encode()


def test_missing_secret_reads_as_none(store_target: StoreTarget) -> None:
    assert store_target.open().read() is None


def test_round_trip(store_target: StoreTarget) -> None:
    store = store_target.open()
    value = payload()
    version = store.write(value, None)
    got = store.read()
    assert got is not None
    assert got.value == value and got.version == version
    assert "CANARY" not in repr(got) and "CANARY" not in repr(store)


def test_create_if_absent_only_once(store_target: StoreTarget) -> None:
    store = store_target.open()
    store.write(payload("CANARY-rt-a"), None)
    with pytest.raises(StoreConflict):
        store.write(payload("CANARY-rt-b"), None)
    got = store.read()
    assert got is not None and b"CANARY-rt-a" in got.value


def test_compare_and_set(store_target: StoreTarget) -> None:
    store = store_target.open()
    v1 = store.write(payload("CANARY-rt-1"), None)
    v2 = store.write(payload("CANARY-rt-2"), v1)
    assert v2 != v1
    with pytest.raises(StoreConflict) as caught:
        store.write(payload("CANARY-rt-3"), v1)
    assert caught.value.exit_code == ExitCode.CONFLICT
    assert "CANARY" not in str(caught.value)
    got = store.read()
    assert got is not None and b"CANARY-rt-2" in got.value and got.version == v2


def test_concurrent_writers_on_one_version_one_wins(store_target: StoreTarget) -> None:
    base = store_target.open().write(payload("CANARY-rt-base"), None)

    def attempt(i: int) -> str:
        try:
            store_target.open().write(payload(f"CANARY-rt-w{i}"), base)
            return f"won{i}"
        except StoreConflict:
            return "lost"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, range(4)))
    winners = [r for r in results if r != "lost"]
    assert len(winners) == 1, results
    got = store_target.open().read()
    assert got is not None and f"CANARY-rt-w{winners[0][3:]}".encode() in got.value


def test_large_and_unicode_values(store_target: StoreTarget) -> None:
    data = login()
    data["note"] = "ünïcødé ✓ 雪 " + "x" * 40_000
    value = json.dumps(data, ensure_ascii=False).encode()
    store = store_target.open()
    store.write(value, None)
    got = store.read()
    assert got is not None and got.value == value


def test_sibling_is_independent(store_target: StoreTarget) -> None:
    store = store_target.open()
    lease = store.sibling("lease")
    assert lease.url != store.url
    lease.write(b'{"holder": null}', None)
    assert store.read() is None
    store.write(payload(), None)
    got = lease.read()
    assert got is not None and got.value == b'{"holder": null}'


def test_foreign_payload_is_invalid(store_target: StoreTarget) -> None:
    store_target.put_foreign()
    with pytest.raises(InvalidAuthError) as caught:
        store_target.open().read()
    assert caught.value.exit_code == ExitCode.INVALID


def test_permission_denied(store_target: StoreTarget) -> None:
    if store_target.denied_env is None:
        pytest.skip(f"{store_target.kind}: no way to deny a permission on this machine")
    store = store_target.open(store_target.denied_env)
    for action in (store.read, lambda: store.write(payload(), None)):
        with pytest.raises(StoreError) as caught:
            action()
        assert caught.value.exit_code == ExitCode.STORE
        assert "permission denied" in str(caught.value).lower()
        assert caught.value.hint


def test_unreachable_server_fails_fast(store_target: StoreTarget) -> None:
    if store_target.kind == "file":
        pytest.skip("a file store has no server")
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store_target.open(store_target.unreachable_env).read()
    assert time.monotonic() - started < 30
    assert caught.value.exit_code == ExitCode.STORE
    assert "\n" not in str(caught.value)
