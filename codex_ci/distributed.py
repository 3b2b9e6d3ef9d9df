"""The distributed refresh: any number of runners sharing one login in a store rotate it once per need.

Each runner restores; one that finds a refresh needed takes the lease (a record next to the login, written by the
store's compare-and-set: see lease.py), restores again, rotates under Codex's locks and writes the new login back
before it lets the lease go. Everyone else waits for the lease or for the stored login to change, and takes the new
one. "Rotated since we started" is told by the refresh token, never by a clock. A store without compare-and-set
(github) holds no lease: only the rotator (keepalive) may rotate there, serialized by its workflow.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from codex_ci import interrupts
from codex_ci.authfile import AuthFile, utcnow
from codex_ci.errors import ConfigError, ConflictError, LockTimeoutError, StoreError, UnsavedRotation
from codex_ci.home import Home
from codex_ci.lease import Lease, check_ttl, new_holder_id
from codex_ci.policy import Policy, decide, need
from codex_ci.result import LoginHook, Result, ignore
from codex_ci.rotate import refresh_home
from codex_ci.stores import Store
from codex_ci.sync import check_persisted, persist, restore

if TYPE_CHECKING:
    from codex_ci.refresh import TokenClient

log = logging.getLogger("codex_ci")

LEASE_MARGIN = 5.0  # seconds of the lease kept free at its end (a quarter of a short lease), to write back
SAY_WAITING = 2.0  # a lease wait longer than this is said once

ROTATOR_HINT = (
    "Run one serialized rotator instead (`concurrency:` in its workflow): `codex-ci keepalive --store URL "
    "--handout HANDOUT`, and let jobs restore the handout; or keep the full login in a store with compare-and-set "
    "(vault, aws, gcp, file).")


@dataclass(frozen=True)
class Refresher:
    """One runner's part in a distributed refresh: where, how, and with what to rotate."""

    home: Home
    store: Store
    policy: Policy
    lock_timeout: float
    client: TokenClient | None = None
    on_login: LoginHook = ignore

    def restore(self) -> Result:
        return restore(self.home, self.store, lock_timeout=self.lock_timeout, on_login=self.on_login)

    def persist(self) -> Result:
        return check_persisted(persist(self.home, self.store, lock_timeout=self.lock_timeout, on_login=self.on_login))


def distributed_refresh(
    home: Home, store: Store, policy: Policy, *, lock_timeout: float, lease_ttl: timedelta, lease_wait: float,
    client: TokenClient | None = None, on_login: LoginHook = ignore, rotator: bool = False,
    handout: Store | None = None,
) -> Result:
    """Restore, and if the login needs a refresh, rotate it once for all runners under a lease in the store.

    A runner that finds the stored login rotated since it started never rotates it again, whatever the new token's
    lifetime. On a store without compare-and-set only the rotator (``keepalive``) rotates: see serialized_refresh."""
    run = Refresher(home, store, policy, lock_timeout, client, on_login)
    if not store.compare_and_set:
        if not rotator:
            raise ConfigError(f"{store.url} has no compare-and-set, so runners cannot share a refresh lease on it",
                              hint=ROTATOR_HINT)
        return serialized_refresh(run, *([handout] if handout is not None else []))
    check_ttl(lease_ttl)
    first, done = _start(run)
    if done is not None:
        return done
    started_with = first.auth.refresh_token

    def rotated(login: AuthFile) -> bool:
        return login.refresh_token != started_with

    lease = Lease(store.sibling("lease"), new_holder_id(), lease_ttl)
    try:  # whatever stops this (a signal included) releases a lease taken, unless a rotation is unsaved
        result = _wait_for_lease(run, lease, lease_wait, rotated) or _refresh_under_lease(run, lease, rotated)
    except BaseException:
        if not lease.keep:  # kept while a rotation is unsaved: the store still holds the spent refresh token
            _release(lease)
        raise
    _release(lease)
    return result


def serialized_refresh(run: Refresher, *extra: Store) -> Result:
    """The rotator on a store without compare-and-set: restore, rotate locally under Codex's locks (no lease: the
    workflow's ``concurrency:`` keeps one rotator at a time), then write the full login (last writer wins).

    Before anything is restored or sent, the store and every ``extra`` target (the handout) prove their write
    credential (``check_writable``), so that a rotation is never made that could not be saved."""
    for target in (run.store, *extra):
        target.check_writable()
    first, done = _start(run)
    if done is not None:
        return done
    return _rotate_and_save(run, first, lease=None)


def _release(lease: Lease) -> None:
    try:
        lease.release()
    except StoreError as exc:
        log.warning("could not release the refresh lease: %s", exc.message)


def _start(run: Refresher) -> tuple[Result, Result | None]:
    """Restore (healing the store from an unsaved local rotation first); the result to return at once when there is
    nothing to rotate (see policy.need), else None."""
    first = run.restore()
    if first.action == "kept-local":  # an earlier persist did not land: heal the store first
        first = run.persist()
    due, why = need(first.auth, utcnow(), run.policy, run.home.state().refresh_not_before)
    return first, None if due else Result("not-refreshed", first.auth, why, first.version)


def _wait_for_lease(run: Refresher, lease: Lease, lease_wait: float, rotated: Callable[[AuthFile], bool],
                    ) -> Result | None:
    """Take the lease (None), or return what another runner's rotation left in the store meanwhile."""
    deadline = time.monotonic() + lease_wait
    delay = 0.05  # a rotation takes about one token round trip: look again soon, then back off
    said = False
    while not lease.try_acquire():
        if not said and lease.other is not None and lease.waited() >= SAY_WAITING:
            log.info("waiting for the refresh lease on %s, held by %s", run.store.url, lease.other)
            said = True
        if time.monotonic() > deadline:
            raise LockTimeoutError(
                f"runner {lease.other or 'unknown'} has held the refresh lease on {run.store.url} for at least "
                f"{lease.waited():.0f}s (waited {lease_wait:g}s for it)",
                hint="A lease left by a dead runner expires after its TTL; run again, or raise --lease-wait.",
            )
        time.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
        delay = min(delay * 2, 2.0)
        current = run.store.read()
        if current is not None and rotated(AuthFile.parse_stored(current.value, run.store.url)):
            again = run.restore()
            return Result("not-refreshed", again.auth, "another runner refreshed it", again.version)
    return None


def _refresh_under_lease(run: Refresher, lease: Lease, rotated: Callable[[AuthFile], bool]) -> Result:
    synced = run.restore()  # another runner may have refreshed meanwhile
    if rotated(synced.auth):
        return Result("not-refreshed", synced.auth, "another runner refreshed it", synced.version)
    return _rotate_and_save(run, synced, lease=lease)


def _rotate_and_save(run: Refresher, synced: Result, *, lease: Lease | None) -> Result:
    """Rotate the login restored as ``synced`` and save it to the store, SIGINT and SIGTERM deferred from before the
    POST until it is saved. No POST outlives ``lease``; a rotation that cannot be saved raises UnsavedRotation and
    keeps the lease, so that no other runner presents the spent refresh token meanwhile."""
    why = decide(synced.auth, utcnow(), run.policy) or "forced"
    deadline = None if lease is None else lease.deadline - min(LEASE_MARGIN, lease.ttl.total_seconds() / 4)
    with interrupts.rotation():
        result = refresh_home(run.home, replace(run.policy, force=True), lock_timeout=run.lock_timeout,
                              client=run.client, on_login=run.on_login, deadline=deadline,
                              expected=synced.auth.refresh_token)
        if not result.refreshed:
            return replace(result, version=synced.version)
        if lease is not None:
            lease.keep = True  # until the new login is in the store, whatever stops this
        try:
            saved = run.persist()
        except (StoreError, ConflictError) as exc:
            raise UnsavedRotation(
                f"refreshed locally but could not save to {run.store.url}: {exc.message}",
                hint="Run `codex-ci persist --to URL` before this runner goes away, or the new login is lost.",
            ) from None
        if lease is not None:
            lease.keep = False
    return Result("refreshed", result.auth, why, saved.version)
