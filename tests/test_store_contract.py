"""One contract every store must keep, run against each with a real server on loopback. The github store (no
compare-and-set) runs its own part: what it keeps, and that what it cannot do is refused cleanly."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import login

from codex_ci.errors import ConfigError, ExitCode, StoredValueError, StoreError
from codex_ci.stores import STORES, StoreConflict
from testing.fake_github import BODY_MARKER, FakeGitHub
from testing.targets import StoreTarget


def payload(refresh_token: str = "CANARY-rt-0") -> str:
    return json.dumps(login(refresh_token=refresh_token), indent=2)


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


def test_the_registry_says_what_the_store_can_do(store_target: StoreTarget) -> None:
    """The registry's compare-and-set is the store's; its key is stable and is not its sibling's."""
    store, again = store_target.open(), store_target.open()
    assert STORES[store_target.kind].compare_and_set is store.compare_and_set is (store_target.kind != "github")
    assert store.key == again.key and store.url == store_target.url
    if store.compare_and_set:
        assert store.sibling("lease").key != store.key
        store.check_writable()  # a no-op where compare-and-set guards every write


def test_create_if_absent_only_once(store_target: StoreTarget) -> None:
    store = store_target.open()
    store.write(payload("CANARY-rt-a"), None)
    with pytest.raises(StoreConflict):
        store.write(payload("CANARY-rt-b"), None)
    got = store.read()
    assert got is not None and "CANARY-rt-a" in got.value


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
    assert got is not None and "CANARY-rt-2" in got.value and got.version == v2


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
    assert got is not None and f"CANARY-rt-w{winners[0][3:]}" in got.value


def test_large_and_unicode_values(store_target: StoreTarget) -> None:
    data = login()
    data["note"] = "ünïcødé ✓ 雪 " + "x" * 40_000
    value = json.dumps(data, ensure_ascii=False)
    store = store_target.open()
    store.write(value, None)
    got = store.read()
    assert got is not None and got.value == value


def test_sibling_is_independent(store_target: StoreTarget) -> None:
    store = store_target.open()
    lease = store.sibling("lease")
    assert lease.url != store.url
    lease.write('{"holder": null}', None)
    assert store.read() is None
    store.write(payload(), None)
    got = lease.read()
    assert got is not None and got.value == '{"holder": null}'


def test_foreign_payload_is_invalid(store_target: StoreTarget) -> None:
    store_target.put_foreign()
    with pytest.raises(StoredValueError) as caught:
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


def test_compare_and_set_is_declared(store_target: StoreTarget) -> None:
    assert store_target.open().compare_and_set is True


# -- the github store: what a write-only store without compare-and-set keeps, and what it refuses ----------------------

def server_of(target: StoreTarget) -> FakeGitHub:
    server = target.extra["server"]
    assert isinstance(server, FakeGitHub)
    return server


def in_env(target: StoreTarget, value: str) -> dict[str, str]:
    """The target's environment plus the secret as the workflow passes it (``NAME: ${{ secrets.NAME }}``)."""
    return target.env | {str(target.extra["name"]): value}


def test_github_missing_secret_reads_as_none(github_target: StoreTarget) -> None:
    assert github_target.open().read() is None
    assert github_target.open(in_env(github_target, "  \n")).read() is None  # an empty variable: no secret
    assert server_of(github_target).requests == []  # a read never calls the API


def test_github_round_trip_through_the_environment(github_target: StoreTarget) -> None:
    store, server = github_target.open(), server_of(github_target)
    value = payload()
    version = store.write(value, None)
    assert server.value(str(github_target.extra["scope"]), str(github_target.extra["name"])) == value.encode()
    got = github_target.open(in_env(github_target, value)).read()
    assert got is not None
    assert got.value == value and got.version == version and version.startswith("sha256:")
    assert "CANARY" not in repr(got) and "CANARY" not in repr(store)


def test_github_has_no_compare_and_set_and_the_last_writer_wins(github_target: StoreTarget) -> None:
    store, server = github_target.open(), server_of(github_target)
    assert store.compare_and_set is False
    v1 = store.write(payload("CANARY-rt-1"), None)
    store.write(payload("CANARY-rt-2"), None)  # "only if absent" cannot be honoured: it writes
    last = payload("CANARY-rt-3")  # made once: a login's times come from the clock
    store.write(last, v1)  # a stale version neither
    assert [s for (m, _), s in zip(server.requests, server.statuses, strict=True) if m == "PUT"] == [201, 204, 204]
    scope, name = str(github_target.extra["scope"]), str(github_target.extra["name"])
    assert server.value(scope, name) == last.encode()


def test_github_large_and_unicode_values(github_target: StoreTarget) -> None:
    data = login()
    data["note"] = "ünïcødé ✓ 雪 " + "x" * 40_000
    value = json.dumps(data, ensure_ascii=False)
    github_target.open().write(value, None)
    assert server_of(github_target).value(str(github_target.extra["scope"]),
                                          str(github_target.extra["name"])) == value.encode()
    got = github_target.open(in_env(github_target, value)).read()
    assert got is not None and got.value == value


def test_github_refuses_the_lease_and_the_distributed_refresh(github_target: StoreTarget, home: Path) -> None:
    from codex_ci.distributed import distributed_refresh
    from codex_ci.home import Home
    from codex_ci.policy import Policy

    store = github_target.open(in_env(github_target, payload()))
    with pytest.raises(ConfigError) as caught:
        store.sibling("lease")
    assert caught.value.exit_code == ExitCode.USAGE and "compare-and-set" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        distributed_refresh(Home(home), store, Policy(timedelta(hours=1), timedelta(days=8), force=True),
                            lock_timeout=5, lease_ttl=timedelta(minutes=2), lease_wait=5)
    assert caught.value.exit_code == ExitCode.USAGE and caught.value.hint and "keepalive" in caught.value.hint
    assert server_of(github_target).requests == [] and not home.exists()  # nothing read, sent or written


def test_github_permission_denied(github_target: StoreTarget) -> None:
    store = github_target.open(github_target.denied_env)
    with pytest.raises(StoreError) as caught:
        store.write(payload(), None)
    assert caught.value.exit_code == ExitCode.STORE
    assert "permission denied" in str(caught.value).lower() and caught.value.hint
    assert BODY_MARKER not in str(caught.value) + caught.value.hint and "CANARY" not in str(caught.value)
    assert server_of(github_target).puts == []


def test_github_unreachable_server_is_a_store_error(github_target: StoreTarget) -> None:
    with pytest.raises(StoreError) as caught:
        github_target.open(github_target.unreachable_env).write(payload(), None)
    assert caught.value.exit_code == ExitCode.STORE
    assert "\n" not in str(caught.value)
