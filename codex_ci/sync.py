"""Local auth.json ⇄ secret store: restore, persist, and the distributed refresh that rotates a login once
for any number of runners. Returns values or raises; never prints.

Logins are ordered by store history, not by clocks (see state.py): a local file unchanged since the store version
it came from (its base) loses to any newer store version; a changed one is written back only onto that same base
and only if it is not older than the login stored there; when both sides changed nothing is overwritten. Only a
home with no base (a new login on a trusted machine) is ordered by time, and then by the token endpoint's own
``iat`` before any runner's ``last_refresh`` (see authfile.Stamp).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from codex_ci import interrupts
from codex_ci.authfile import AuthFile, Stamp, utcnow
from codex_ci.errors import (
    AccessOnlyError,
    ConfigError,
    ConflictError,
    FileSystemError,
    InvalidAuthError,
    LockTimeoutError,
    MissingAuthError,
    StoreError,
    SupersededError,
)
from codex_ci.files import AUTH_NAME, AuthLock, ensure_home, is_regular_file, read_file, write_atomic
from codex_ci.lease import Lease, check_ttl, new_holder_id
from codex_ci.local import LoginHook, _ignore, access_only_check, ensure_config, refresh_home
from codex_ci.state import STATE_NAME, read_state, save_state
from codex_ci.stores import Store, StoreConflict, Versioned

if TYPE_CHECKING:
    from codex_ci.refresh import Policy, TokenClient
    from codex_ci.status import StoreView

log = logging.getLogger("codex_ci")

LEASE_MARGIN = 5.0  # seconds of the lease kept free at its end (a quarter of a short lease), to write back
PERSIST_ATTEMPTS = 5

Action = Literal["restored", "kept-local", "unchanged", "written", "created", "superseded", "skipped"]


@dataclass(frozen=True)
class SyncResult:
    action: Action
    version: str | None
    auth: AuthFile
    reason: str


def _parse_stored(stored: Versioned, store: Store) -> AuthFile:
    try:
        return AuthFile.parse(stored.value, store.url)
    except InvalidAuthError as exc:
        raise InvalidAuthError(
            exc.message, hint=f"The stored value is damaged or is not a codex-ci login. From a runner or a trusted "
            f"machine holding a good login, `codex-ci persist --force --to {store.url}` rewrites it.") from None


def _stamp(raw: bytes, name: str, now: datetime) -> Stamp:
    """The stamp of a stored value; an unreadable one is older than any login."""
    try:
        return AuthFile.parse(raw, name).stamp(now)
    except InvalidAuthError:
        return Stamp(None, None)


def restore(
    home: Path, store: Store, *, lock_timeout: float, on_login: LoginHook = _ignore, force: bool = False,
    access_only: bool = False, min_ttl: timedelta | None = None,
) -> SyncResult:
    """Bring the store's login to auth.json unless the local one is a newer login of this home's own (see the
    module's ordering rule); record the store version. ``force`` takes the store's login whatever the local is.

    ``access_only`` (or a store holding an access-only copy, a handout) writes the copy whose refresh token is a
    placeholder; with ``min_ttl`` such a copy is refused when its access token would not outlast it."""
    if home.exists() and not home.is_dir():  # an unusable CODEX_HOME fails before the store is read
        raise FileSystemError(f"CODEX_HOME {home} is not a directory")
    stored = store.read()
    if stored is None:
        raise MissingAuthError(
            f"{store.url} holds no login",
            hint=getattr(store, "missing_hint", None)  # a write-only store (github) says how to pass it in
            or "Put one there first: `codex-ci seed` on a runner, then `codex-ci persist --to URL`.",
        )
    remote = _parse_stored(stored, store)
    on_login(remote)
    if access_only or remote.is_access_only:
        remote = remote.access_only()
        _check_covers(remote, store, min_ttl)
    ensure_home(home, create=True)
    with AuthLock(home, lock_timeout):
        ensure_config(home)
        if remote.is_access_only:
            return _restore_access_only(home, store, stored, remote, on_login, force)
        return _restore_locked(home, store, stored, remote, on_login, force)


def _check_covers(copy: AuthFile, store: Store, min_ttl: timedelta | None) -> None:
    """An access-only copy cannot be refreshed by the job: refuse one whose access token would die mid-job."""
    expires, now = copy.identity.access_expires, utcnow()
    if min_ttl is None or expires is None or expires - now > min_ttl:
        return
    when = "has expired" if expires <= now else f"expires in {max(0, int((expires - now).total_seconds()))}s"
    raise AccessOnlyError(f"the access token of the login in {store.url} {when}, within --min-ttl: an access-only "
                          "copy of it would stop working mid-job")


def _restore_access_only(
    home: Path, store: Store, stored: Versioned, copy: AuthFile, on_login: LoginHook, force: bool,
) -> SyncResult:
    path = home / AUTH_NAME
    local_raw = read_file(path)
    state = read_state(home)
    data = copy.to_bytes()
    if local_raw == data:
        return SyncResult("unchanged", stored.version, copy, "already up to date (an access-only copy)")
    if local_raw is not None and not force:
        try:
            local = AuthFile.parse(local_raw, str(path))
        except InvalidAuthError:
            local = None
        if local is not None and local.is_chatgpt and not local.is_access_only and (
                state.base_for(store.url) is None or state.changed_since_base(local_raw)):
            raise ConflictError(
                f"{path} holds a full login that may not be saved anywhere; an access-only copy would replace it",
                hint="Persist it first (`codex-ci persist --to URL`), or use another CODEX_HOME for the job, or "
                "pass --force to replace it.")
    is_regular_file(home / STATE_NAME)
    write_atomic(path, data)
    now = utcnow()
    save_state(home, replace(state.with_base(store.url, stored.version, data, copy.stamp(now)), access_only="yes"))
    return SyncResult("restored", stored.version, copy,
                      f"restored an access-only copy to {path} from {store.url} (version {stored.version})")


def _restore_locked(
    home: Path, store: Store, stored: Versioned, remote: AuthFile, on_login: LoginHook, force: bool,
) -> SyncResult:
    path = home / AUTH_NAME
    now = utcnow()
    local_raw = read_file(path)
    local: AuthFile | None = None
    if local_raw is not None:
        try:
            local = AuthFile.parse(local_raw, str(path))
            on_login(local)
        except InvalidAuthError as exc:
            log.warning("replacing an unusable local auth.json (%s)", exc.message)
    is_regular_file(home / STATE_NAME)  # refuse a symlinked state file before auth.json changes, not after
    state = read_state(home)
    data = remote.to_bytes()
    if local_raw is not None and local is not None and not force:
        if local_raw in (stored.value, data):
            save_state(home, state.with_base(store.url, stored.version, local_raw, remote.stamp(now)))
            return SyncResult("unchanged", stored.version, local, "already up to date")
        base = state.base_for(store.url)
        if base is not None and state.changed_since_base(local_raw):
            if base != stored.version:
                raise ConflictError(
                    f"{path} changed since it was restored from {store.url} (version {base}), and the store has "
                    f"moved on to version {stored.version}: both changed, so neither was overwritten",
                    hint="To keep this runner's login run `codex-ci persist --force --to URL`; to take the store's "
                    "run `codex-ci restore --force --from URL`.",
                )
            if not Stamp.decode(state.base_stamp).newer_than(local.stamp(now)):
                return SyncResult("kept-local", stored.version, local,
                                  f"{path} changed since version {base} of {store.url}; kept it (persist writes it)")
        elif (base is not None and base != stored.version and not getattr(store, "compare_and_set", True)
              and local.stamp(now).newer_than(remote.stamp(now))):
            # a write-only store (github) has no history to order by: the value passed in is older than the login
            # this home last wrote or restored there (a run started from an older secret): never go back to it
            log.warning("%s passed in an older login than the one this home last wrote there (version %s); kept "
                        "the newer local one", store.url, base)
            save_state(home, state.with_base(store.url, stored.version, stored.value, remote.stamp(now)))
            return SyncResult("kept-local", stored.version, local, f"{path} is newer than {store.url}; kept it")
        elif base is None and local.stamp(now).newer_than(remote.stamp(now)):
            # the store's version is this copy's base now, and the digest of its value, so that persist sees a change
            save_state(home, state.with_base(store.url, stored.version, stored.value, remote.stamp(now)))
            return SyncResult("kept-local", stored.version, local, f"{path} is newer than {store.url}; kept it")
    write_atomic(path, data)
    save_state(home, state.with_base(store.url, stored.version, data, remote.stamp(now)))
    reason = f"restored {path} from {store.url} (version {stored.version})"
    return SyncResult("restored", stored.version, remote, reason)


def persist(
    home: Path, store: Store, *, lock_timeout: float, on_login: LoginHook = _ignore, force: bool = False,
) -> SyncResult:
    """Write auth.json to the store if it changed since its base, by compare-and-set onto that base; never over a
    newer login, never when both sides changed. ``force``: compare-and-set against the version just read, whatever
    it holds (the recovery after a new login on a trusted machine)."""
    with AuthLock(home, lock_timeout):
        raw = read_file(home / AUTH_NAME)
        if raw is None:
            raise MissingAuthError(f"{home / AUTH_NAME} does not exist")
        local = AuthFile.parse(raw, str(home / AUTH_NAME))
        on_login(local)
        state = read_state(home)
    if local.is_access_only:
        return SyncResult("skipped", state.base_for(store.url), local,
                          "an access-only copy is never persisted (its login is rotated elsewhere)")
    writer = _Writer(home, store, raw, local, lock_timeout)
    base = state.base_for(store.url)
    if force:
        return writer.force()
    if base is None:
        return writer.newest(store.read())
    if not state.changed_since_base(raw):
        return SyncResult("unchanged", base, local, "auth.json has not changed since it was last restored or persisted")
    if state.own_rotation(raw):  # the live head of its login: onto the base, else over anything older
        return writer.onto(base, fallback=writer.newest)
    if Stamp.decode(state.base_stamp).newer_than(local.stamp(utcnow())):
        return writer.superseded(base, f"auth.json is older than the login it was restored from ({store.url} "
                                       f"version {base}): an older login is never written over a newer one")
    return writer.onto(base)


class _Writer:
    """persist's writes, each recording the new base in the state file."""

    def __init__(self, home: Path, store: Store, raw: bytes, local: AuthFile, lock_timeout: float) -> None:
        self.home, self.store, self.raw, self.local, self.lock_timeout = home, store, raw, local, lock_timeout

    def _record(self, version: str, stored: bytes) -> None:
        with AuthLock(self.home, self.lock_timeout):
            state = read_state(self.home)
            save_state(self.home, state.with_base(self.store.url, version, self.raw, _stamp(stored, "", utcnow())))

    def _done(self, action: Action, version: str) -> SyncResult:
        self._record(version, self.raw)
        return SyncResult(action, version, self.local, f"wrote {self.store.url} (version {version})")

    def unchanged(self, current: Versioned) -> SyncResult:
        self._record(current.version, current.value)
        return SyncResult("unchanged", current.version, self.local, f"{self.store.url} already holds this login")

    def superseded(self, version: str, reason: str) -> SyncResult:
        return SyncResult("superseded", version, self.local, reason)

    def onto(self, base: str, fallback: Callable[[Versioned | None], SyncResult] | None = None) -> SyncResult:
        """Write onto the base version. If the store moved, both sides changed: write nothing, or (for this home's
        own rotation) hand over to ``fallback`` with what the store holds now."""
        try:
            return self._done("written", self.store.write(self.raw, base))
        except StoreConflict:
            current = self.store.read()
        if current is not None and current.value == self.raw:
            return self.unchanged(current)
        if fallback is not None:
            log.info("%s moved on from version %s; ordering by when each login was issued", self.store.url, base)
            return fallback(current)
        version = current.version if current is not None else "none"
        return self.superseded(version, f"{self.store.url} moved on from version {base} (now {version}) while "
                                        "auth.json changed too: both changed, so the store was not overwritten")

    def newest(self, current: Versioned | None) -> SyncResult:
        """No base: write if the secret is absent or holds an older login (ordered by Stamp)."""
        for attempt in range(PERSIST_ATTEMPTS):
            if current is not None:
                if current.value == self.raw:
                    return self.unchanged(current)
                now = utcnow()
                if not self.local.stamp(now).newer_than(_stamp(current.value, self.store.url, now)):
                    return self.superseded(current.version, f"{self.store.url} holds a newer login (version "
                                                            f"{current.version}): this copy is superseded")
            expected = current.version if current is not None else None
            if attempt:
                log.info("%s moved; ours is newer, retrying (attempt %d)", self.store.url, attempt + 1)
            try:
                return self._done("written" if expected else "created", self.store.write(self.raw, expected))
            except StoreConflict:
                current = self.store.read()
        raise ConflictError(f"{self.store.url} kept changing; gave up after {PERSIST_ATTEMPTS} attempts")

    def force(self) -> SyncResult:
        current = self.store.read()
        if current is not None and current.value == self.raw:
            return self.unchanged(current)
        expected = current.version if current is not None else None
        try:
            return self._done("written" if expected else "created", self.store.write(self.raw, expected))
        except StoreConflict:
            raise ConflictError(f"{self.store.url} changed while persist --force was writing; nothing was written",
                                hint="Run it again.") from None


def check_persisted(result: SyncResult) -> SyncResult:
    """A persist the user asked for that wrote nothing because the store won: an error, with the way out."""
    if result.action == "superseded":
        raise SupersededError(result.reason)
    return result


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
    client: TokenClient | None = None, on_login: LoginHook = _ignore, rotator: bool = False,
    handout: Store | None = None,
) -> DistributedResult:
    """Restore, and if the login needs a refresh, rotate it once for all runners under a lease in the store.

    A runner that finds the stored login rotated since it started never rotates it again, whatever the new token's
    lifetime: "refreshed since" is told by the refresh token, not by any clock.

    A store without compare-and-set (github) can hold no lease: refused, except for the rotator (``keepalive``),
    which rotates serialized by its workflow instead (see serialized_refresh)."""
    if not getattr(store, "compare_and_set", True):
        if not rotator:
            raise ConfigError(
                f"{store.url} has no compare-and-set, so runners cannot share a refresh lease on it",
                hint="Run one serialized rotator instead (`concurrency:` in its workflow): `codex-ci keepalive "
                "--store URL --handout HANDOUT`, and let jobs restore the handout; or keep the full login in a "
                "store with compare-and-set (vault, aws, gcp, file).")
        return serialized_refresh(home, store, policy, lock_timeout=lock_timeout, client=client,
                                  on_login=on_login, handout=handout)
    check_ttl(lease_ttl)
    first, done = _start(home, store, policy, lock_timeout, on_login)
    if done is not None:
        return done
    started_with = first.auth.refresh_token

    def rotated(login: AuthFile) -> bool:
        return login.refresh_token != started_with

    lease = Lease(store.sibling("lease"), new_holder_id(), lease_ttl)
    try:  # whatever stops this (a signal included) releases a lease taken, unless a rotation is unsaved
        waited = _wait_for_lease(home, store, lease, lease_wait, rotated, lock_timeout, on_login)
        result = waited or _refresh_under_lease(home, store, policy, rotated, lock_timeout, client, on_login, lease)
    except BaseException:
        if not lease.keep:  # kept while a rotation is unsaved: the store still holds the spent refresh token
            _release(lease)
        raise
    _release(lease)
    return result


def _wait_for_lease(
    home: Path, store: Store, lease: Lease, lease_wait: float, rotated: Callable[[AuthFile], bool],
    lock_timeout: float, on_login: LoginHook,
) -> DistributedResult | None:
    """Take the lease (None), or return what another runner's rotation left in the store meanwhile."""
    deadline = time.monotonic() + lease_wait
    delay = 0.05  # a rotation takes about one token round trip: look again soon, then back off
    said = False
    while not lease.try_acquire():
        if not said and lease.other is not None and lease.waited() >= 2.0:
            log.info("waiting for the refresh lease on %s, held by %s", store.url, lease.other)
            said = True
        if time.monotonic() > deadline:
            raise LockTimeoutError(
                f"runner {lease.other or 'unknown'} has held the refresh lease on {store.url} for at least "
                f"{lease.waited():.0f}s (waited {lease_wait:g}s for it)",
                hint="A lease left by a dead runner expires after its TTL; run again, or raise --lease-wait.",
            )
        time.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
        delay = min(delay * 2, 2.0)
        current = store.read()
        if current is not None and rotated(_parse_stored(current, store)):
            again = restore(home, store, lock_timeout=lock_timeout, on_login=on_login)
            return DistributedResult(False, "another runner refreshed it", again.auth, again.version)
    return None


def _start(home: Path, store: Store, policy: Policy, lock_timeout: float, on_login: LoginHook
           ) -> tuple[SyncResult, DistributedResult | None]:
    """Restore (healing the store from an unsaved local rotation first); the result to return at once when there is
    nothing to rotate (another kind of login, an access-only copy, fresh, or rotated moments ago), else None."""
    from codex_ci.refresh import decide, too_soon

    first = restore(home, store, lock_timeout=lock_timeout, on_login=on_login)
    if first.action == "kept-local":  # an earlier persist did not land: heal the store first
        first = check_persisted(persist(home, store, lock_timeout=lock_timeout, on_login=on_login))
    auth, now = first.auth, utcnow()
    if not auth.is_chatgpt:
        why: str | None = f"{auth.mode} login: nothing to refresh"
    elif auth.is_access_only:
        why = access_only_check(auth, now, policy)
    elif decide(auth, now, policy) is None:
        why = "the access token is fresh enough"
    else:
        why = too_soon(auth, now, read_state(home).refresh_not_before)
    return first, None if why is None else DistributedResult(False, why, auth, first.version)


def _refresh_under_lease(
    home: Path, store: Store, policy: Policy, rotated: Callable[[AuthFile], bool], lock_timeout: float,
    client: TokenClient | None, on_login: LoginHook, lease: Lease,
) -> DistributedResult:
    synced = restore(home, store, lock_timeout=lock_timeout, on_login=on_login)  # another runner may have refreshed
    if rotated(synced.auth):
        return DistributedResult(False, "another runner refreshed it", synced.auth, synced.version)
    return _rotate_and_save(home, store, policy, synced, lock_timeout=lock_timeout, client=client,
                            on_login=on_login, lease=lease)


def _rotate_and_save(
    home: Path, store: Store, policy: Policy, synced: SyncResult, *, lock_timeout: float,
    client: TokenClient | None, on_login: LoginHook, lease: Lease | None,
) -> DistributedResult:
    """Rotate the login restored as ``synced`` and save it to the store, SIGINT and SIGTERM deferred from before the
    POST until it is saved. No POST outlives ``lease``; a rotation that cannot be saved raises UnsavedRotation and
    keeps the lease, so that no other runner presents the spent refresh token meanwhile."""
    from codex_ci.refresh import decide

    why = decide(synced.auth, utcnow(), policy) or "forced"
    deadline = None if lease is None else lease.deadline - min(LEASE_MARGIN, lease.ttl.total_seconds() / 4)
    with interrupts.rotation():
        result = refresh_home(home, replace(policy, force=True), lock_timeout=lock_timeout, client=client,
                              on_login=on_login, deadline=deadline, expected=synced.auth.refresh_token)
        if not result.refreshed:
            return DistributedResult(False, result.reason, result.auth, synced.version)
        if lease is not None:
            lease.keep = True  # until the new login is in the store, whatever stops this
        try:
            saved = check_persisted(persist(home, store, lock_timeout=lock_timeout, on_login=on_login))
        except (StoreError, ConflictError) as exc:
            raise UnsavedRotation(
                f"refreshed locally but could not save to {store.url}: {exc.message}",
                hint="Run `codex-ci persist --to URL` before this runner goes away, or the new login is lost.",
            ) from None
        if lease is not None:
            lease.keep = False
    return DistributedResult(True, why, result.auth, saved.version)


def serialized_refresh(
    home: Path, store: Store, policy: Policy, *, lock_timeout: float, client: TokenClient | None = None,
    on_login: LoginHook = _ignore, handout: Store | None = None,
) -> DistributedResult:
    """The rotator on a store without compare-and-set: restore, rotate locally under Codex's locks (no lease: the
    workflow's ``concurrency:`` keeps one rotator at a time), then write the full login (last writer wins).

    Before anything is restored or sent, every write-only target proves its write credential (``check_writable``),
    so that a rotation is never made that could not be saved."""
    for target in (store, handout):
        check = getattr(target, "check_writable", None)
        if check is not None:
            check()
    first, done = _start(home, store, policy, lock_timeout, on_login)
    if done is not None:
        return done
    return _rotate_and_save(home, store, policy, first, lock_timeout=lock_timeout, client=client,
                            on_login=on_login, lease=None)


def write_handout(auth: AuthFile, handout: Store, store: Store) -> SyncResult:
    """Write the access-only copy of ``auth`` (the full login, already saved to ``store``) to ``handout`` by
    compare-and-set, unless it already holds that copy or a newer one. Jobs restore the handout: they need read
    access to it only and never see the refresh token."""
    if handout.url == store.url:
        raise ConfigError("--handout must name another secret than --store: the access-only copy would replace the "
                          "login itself")
    copy = auth.access_only()
    data = copy.to_bytes()
    for _ in range(PERSIST_ATTEMPTS):
        current = handout.read()
        if current is not None:
            if current.value == data:
                return SyncResult("unchanged", current.version, copy, f"{handout.url} already holds this copy")
            now = utcnow()
            if _stamp(current.value, handout.url, now).newer_than(copy.stamp(now)):
                return SyncResult("superseded", current.version, copy,
                                  f"{handout.url} holds a newer access-only copy (version {current.version})")
        expected = current.version if current is not None else None
        try:
            version = handout.write(data, expected)
        except StoreConflict:
            continue
        return SyncResult("written" if expected else "created", version, copy,
                          f"wrote the access-only copy to {handout.url} (version {version})")
    raise ConflictError(f"{handout.url} kept changing; gave up after {PERSIST_ATTEMPTS} attempts")


def store_view(store: Store, home: Path, now: datetime | None = None) -> StoreView:
    """What status --store adds: the store's version, its login's age, whether the local copy matches."""
    from codex_ci.status import StoreView

    view = StoreView(store.url)
    stored = store.read()
    if stored is None:
        log.warning("%s holds no login: put one there with `codex-ci persist --to URL`", store.url)
        return view
    remote = _parse_stored(stored, store)
    view.version = stored.version
    if remote.last_refresh is not None:
        view.last_refresh_age_seconds = int(((now or utcnow()) - remote.last_refresh).total_seconds())
    local = read_file(home / AUTH_NAME)
    view.in_sync = local is not None and local in (stored.value, remote.to_bytes())
    return view
