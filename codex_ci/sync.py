"""Local auth.json ⇄ secret store: restore, persist, and the distributed refresh that rotates a login once
for any number of runners. Returns values or raises; never prints.

A small state file in CODEX_HOME (0600, no secret) records which store version the local file came from and
digests of both, so ``persist`` writes only what changed, by compare-and-set against that version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from codex_ci.authfile import AuthFile, utcnow
from codex_ci.errors import ConflictError, InvalidAuthError, LockTimeoutError, MissingAuthError, StoreError
from codex_ci.files import AUTH_NAME, AuthLock, ensure_home, is_regular_file, read_file, write_atomic
from codex_ci.lease import Lease, new_holder_id
from codex_ci.local import LoginHook, _ignore, ensure_config, refresh_home
from codex_ci.stores import Store, StoreConflict, Versioned

if TYPE_CHECKING:
    from codex_ci.refresh import Policy, TokenClient
    from codex_ci.status import StoreView

log = logging.getLogger("codex_ci")

STATE_NAME = "codex-ci-state.json"
LEASE_MARGIN = 5.0  # seconds of the lease kept free at its end (a quarter of a short lease), to write back
PERSIST_ATTEMPTS = 5


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class State:
    store: str
    version: str
    stored_digest: str
    local_digest: str


@dataclass(frozen=True)
class SyncResult:
    action: str  # restore: restored/kept-local/unchanged; persist: written/created/unchanged/superseded
    version: str | None
    auth: AuthFile
    reason: str


def read_state(home: Path) -> State | None:
    raw = read_file(home / STATE_NAME)
    if raw is None:
        return None
    try:
        return State(**{k: str(v) for k, v in json.loads(raw).items() if k in State.__dataclass_fields__})
    except (ValueError, TypeError, AttributeError, RecursionError):
        log.warning("ignoring an unreadable %s", home / STATE_NAME)
        return None


def _save_state(home: Path, state: State) -> None:
    """Write the state file (the caller holds the AuthLock)."""
    write_atomic(home / STATE_NAME, json.dumps(state.__dict__, indent=2).encode())


Record = Callable[[State], None]


def is_newer(mine: AuthFile, theirs: AuthFile) -> bool:
    """True when ``mine`` was refreshed later than ``theirs`` (a login without a time is the oldest)."""
    if mine.last_refresh is None:
        return False
    return theirs.last_refresh is None or mine.last_refresh > theirs.last_refresh


def _parse_stored(stored: Versioned, store: Store) -> AuthFile:
    return AuthFile.parse(stored.value, store.url)


def restore(home: Path, store: Store, *, lock_timeout: float, on_login: LoginHook = _ignore) -> SyncResult:
    """Bring the store's login to auth.json unless the local one is newer; record the store version."""
    stored = store.read()
    if stored is None:
        raise MissingAuthError(
            f"{store.url} holds no login",
            hint="Put one there first: `codex-ci seed` on a runner, then `codex-ci persist --to URL`.",
        )
    remote = _parse_stored(stored, store)
    on_login(remote)
    ensure_home(home, create=True)
    with AuthLock(home, lock_timeout):
        ensure_config(home)
        return _restore_locked(home, store, stored, remote, on_login)


def _restore_locked(home: Path, store: Store, stored: Versioned, remote: AuthFile, on_login: LoginHook) -> SyncResult:
    path = home / AUTH_NAME
    local_raw = read_file(path)
    local: AuthFile | None = None
    if local_raw is not None:
        try:
            local = AuthFile.parse(local_raw, str(path))
            on_login(local)
        except InvalidAuthError as exc:
            log.warning("replacing an unusable local auth.json (%s)", exc.message)
    is_regular_file(home / STATE_NAME)  # refuse a symlinked state file before auth.json changes, not after
    state = State(store.url, stored.version, digest(stored.value), "")
    data = remote.to_bytes()
    if local_raw is not None and local is not None:
        if local_raw in (stored.value, data):
            _save_state(home, replace(state, local_digest=digest(local_raw)))
            return SyncResult("unchanged", stored.version, local, "already up to date")
        if is_newer(local, remote):  # the digest of the store's copy, so that persist sees the change
            _save_state(home, replace(state, local_digest=digest(stored.value)))
            return SyncResult("kept-local", stored.version, local, f"{path} is newer than {store.url}; kept it")
    write_atomic(path, data)
    _save_state(home, replace(state, local_digest=digest(data)))
    reason = f"restored {path} from {store.url} (version {stored.version})"
    return SyncResult("restored", stored.version, remote, reason)


def persist(home: Path, store: Store, *, lock_timeout: float, on_login: LoginHook = _ignore) -> SyncResult:
    """Write auth.json to the store if it changed since restore, by compare-and-set; never an older login."""
    with AuthLock(home, lock_timeout):
        raw = read_file(home / AUTH_NAME)
        if raw is None:
            raise MissingAuthError(f"{home / AUTH_NAME} does not exist")
        local = AuthFile.parse(raw, str(home / AUTH_NAME))
        on_login(local)
        state = read_state(home)

    def record(new: State) -> None:
        with AuthLock(home, lock_timeout):
            _save_state(home, new)

    if state is not None and state.store == store.url and digest(raw) == state.local_digest:
        reason = "auth.json has not changed since it was last restored or persisted"
        return SyncResult("unchanged", state.version, local, reason)
    expected = state.version if state is not None and state.store == store.url else None
    if expected is None:
        current = store.read()
        if current is not None:
            verdict = _compare(raw, local, current, store)
            if verdict is not None:
                return _settle(record, store, raw, local, current, verdict)
            expected = current.version
    return _write_newest(record, store, raw, local, expected)


def _compare(raw: bytes, local: AuthFile, current: Versioned, store: Store) -> str | None:
    """"unchanged" or "superseded" when the store's copy wins; None when ours is newer and should be written."""
    if current.value == raw:
        return "unchanged"
    try:
        remote = _parse_stored(current, store)
    except InvalidAuthError:
        return None  # a broken stored value is older than any valid login
    return None if is_newer(local, remote) else "superseded"


def _settle(record: Record, store: Store, raw: bytes, local: AuthFile, current: Versioned, verdict: str
            ) -> SyncResult:
    if verdict == "unchanged":
        record(State(store.url, current.version, digest(current.value), digest(raw)))
        return SyncResult("unchanged", current.version, local, f"{store.url} already holds this login")
    return SyncResult(
        "superseded", current.version, local,
        f"{store.url} holds a newer login (version {current.version}); this runner's copy was superseded",
    )


def _write_newest(record: Record, store: Store, raw: bytes, local: AuthFile, expected: str | None) -> SyncResult:
    for attempt in range(PERSIST_ATTEMPTS):
        try:
            version = store.write(raw, expected)
        except StoreConflict:
            current = store.read()
            if current is None:
                expected = None
                continue
            verdict = _compare(raw, local, current, store)
            if verdict is not None:
                return _settle(record, store, raw, local, current, verdict)
            log.info("%s moved; ours is newer, retrying (attempt %d)", store.url, attempt + 2)
            expected = current.version
            continue
        record(State(store.url, version, digest(raw), digest(raw)))
        action = "created" if expected is None else "written"
        return SyncResult(action, version, local, f"wrote {store.url} (version {version})")
    raise ConflictError(f"{store.url} kept changing; gave up after {PERSIST_ATTEMPTS} attempts")


@dataclass(frozen=True)
class DistributedResult:
    refreshed: bool
    reason: str
    auth: AuthFile
    version: str | None


class UnsavedRotation(StoreError):
    """The login was rotated but the store could not be written: the new login is only in the local auth.json."""


def _release(lease: Lease) -> None:
    try:
        lease.release()
    except StoreError as exc:
        log.warning("could not release the refresh lease: %s", exc.message)


def distributed_refresh(
    home: Path, store: Store, policy: Policy, *, lock_timeout: float, lease_ttl: timedelta, lease_wait: float,
    client: TokenClient | None = None, on_login: LoginHook = _ignore,
) -> DistributedResult:
    """Restore, and if the login needs a refresh, rotate it once for all runners under a lease in the store."""
    from codex_ci.refresh import decide

    started = utcnow()

    def settled(auth: AuthFile) -> bool:
        """Fresh by the policy, or (when forced) refreshed by someone since we started."""
        if policy.force:
            return auth.last_refresh is not None and started <= auth.last_refresh <= utcnow()
        return decide(auth, utcnow(), policy) is None

    first = restore(home, store, lock_timeout=lock_timeout, on_login=on_login)
    if first.action == "kept-local":  # an earlier persist did not land: heal the store first
        first = persist(home, store, lock_timeout=lock_timeout, on_login=on_login)
    auth = first.auth
    if not auth.is_chatgpt:
        return DistributedResult(False, f"{auth.mode} login: nothing to refresh", auth, first.version)
    if settled(auth):
        return DistributedResult(False, "the access token is fresh enough", auth, first.version)

    lease = Lease(store.sibling("lease"), new_holder_id(), lease_ttl)
    deadline = time.monotonic() + lease_wait
    delay = 0.05  # a rotation takes about one token round trip: look again soon, then back off
    while not lease.try_acquire():
        if time.monotonic() > deadline:
            raise LockTimeoutError(
                f"another runner held the refresh lease on {store.url} for over {lease_wait:g}s",
                hint="It expires by itself after the lease TTL; run again, or raise --lease-wait.",
            )
        time.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
        delay = min(delay * 2, 2.0)
        current = store.read()
        if current is not None and settled(_parse_stored(current, store)):
            again = restore(home, store, lock_timeout=lock_timeout, on_login=on_login)
            return DistributedResult(False, "another runner refreshed it", again.auth, again.version)
    try:
        result = _refresh_under_lease(home, store, policy, settled, lock_timeout, client, on_login, lease)
    except UnsavedRotation:
        raise  # keep the lease: the store still holds the spent token; let it expire while persist saves the new one
    except Exception:
        _release(lease)
        raise
    # An interrupt (a cancelled job) also keeps the lease: the login may be rotated but not yet saved.
    _release(lease)
    return result



def _refresh_under_lease(
    home: Path, store: Store, policy: Policy, settled: Callable[[AuthFile], bool], lock_timeout: float,
    client: TokenClient | None, on_login: LoginHook, lease: Lease,
) -> DistributedResult:
    from codex_ci.refresh import decide

    synced = restore(home, store, lock_timeout=lock_timeout, on_login=on_login)  # another runner may have refreshed
    auth = synced.auth
    if settled(auth):
        return DistributedResult(False, "another runner refreshed it", auth, synced.version)
    why = decide(auth, utcnow(), policy) or "forced"
    result = refresh_home(
        home, replace(policy, force=True), lock_timeout=lock_timeout, client=client, on_login=on_login,
        deadline=lease.deadline - min(LEASE_MARGIN, lease.ttl.total_seconds() / 4),
    )
    try:
        saved = persist(home, store, lock_timeout=lock_timeout, on_login=on_login)
    except (StoreError, ConflictError) as exc:
        raise UnsavedRotation(
            f"refreshed locally but could not save to {store.url}: {exc.message}",
            hint="Run `codex-ci persist --to URL` before this runner goes away, or the new login is lost.",
        ) from None
    return DistributedResult(result.refreshed, why if result.refreshed else result.reason, result.auth, saved.version)


def store_view(store: Store, home: Path, now: datetime | None = None) -> StoreView:
    """What status --store adds: the store's version, its login's age, whether the local copy matches."""
    from codex_ci.status import StoreView

    view = StoreView(store.url)
    stored = store.read()
    if stored is None:
        return view
    remote = _parse_stored(stored, store)
    view.version = stored.version
    if remote.last_refresh is not None:
        view.last_refresh_age_seconds = int(((now or utcnow()) - remote.last_refresh).total_seconds())
    local = read_file(home / AUTH_NAME)
    view.in_sync = local is not None and local in (stored.value, remote.to_bytes())
    return view
