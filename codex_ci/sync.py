"""Local auth.json ⇄ secret store: restore, persist, and the access-only copy (the handout). Returns values or
raises; never prints. The distributed refresh built on these is in :mod:`codex_ci.distributed`.

Logins are ordered by store history, not by clocks (see state.py): a local file unchanged since the store version
it came from (its base) loses to any newer store version; a changed one is written back only onto that same base
and only if it is not older than the login stored there; when both sides changed nothing is overwritten. Only a
home with no base (a new login on a trusted machine) is ordered by time, and then by the token endpoint's own
``iat`` before any runner's ``last_refresh`` (see claims.Stamp).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from codex_ci.authfile import AuthFile, Stamp, utcnow
from codex_ci.errors import (
    AccessOnlyError,
    ConfigError,
    ConflictError,
    FileSystemError,
    InvalidAuthError,
    MissingAuthError,
    StoreConflict,
    SupersededError,
)
from codex_ci.home import Home
from codex_ci.result import Action, LoginHook, Result, ignore
from codex_ci.stores import Store, Versioned

log = logging.getLogger("codex_ci")

PERSIST_ATTEMPTS = 5


def encoded(text: str) -> bytes:
    """A stored value as the bytes of a file (stores hold text; any str round-trips)."""
    return text.encode("utf-8", "surrogateescape")


def stamp_of(value: str | bytes, now: datetime) -> Stamp:
    """When a stored login was made; an unreadable one is older than any login."""
    try:
        return AuthFile.parse(value, "the store").stamp(now)
    except InvalidAuthError:
        return Stamp(None, None)


def restore(
    home: Home, store: Store, *, lock_timeout: float, on_login: LoginHook = ignore, force: bool = False,
    access_only: bool = False, min_ttl: timedelta | None = None,
) -> Result:
    """Bring the store's login to auth.json unless the local one is a newer login of this home's own (see the
    module's ordering rule); record the store version. ``force`` takes the store's login whatever the local is.

    ``access_only`` (or a store holding an access-only copy, a handout) writes the copy whose refresh token is a
    placeholder; with ``min_ttl`` such a copy is refused when its access token would not outlast it."""
    if home.path.exists() and not home.path.is_dir():  # an unusable CODEX_HOME fails before the store is read
        raise FileSystemError(f"CODEX_HOME {home} is not a directory")
    stored = store.read()
    if stored is None:
        raise MissingAuthError(f"{store.url} holds no login", hint=store.missing_hint or
                               "Put one there first: `codex-ci seed` on a runner, then `codex-ci persist --to URL`.")
    remote = AuthFile.parse_stored(stored.value, store.url)
    on_login(remote)
    if access_only or remote.is_access_only:
        remote = remote.access_only()
        _check_covers(remote, store, min_ttl)
    home.ensure(create=True)
    with home.lock(lock_timeout):
        home.ensure_config()
        if remote.is_access_only:
            return _restore_access_only(home, store, stored, remote, force)
        return _restore_locked(home, store, stored, remote, on_login, force)


def _check_covers(copy: AuthFile, store: Store, min_ttl: timedelta | None) -> None:
    """An access-only copy cannot be refreshed by the job: refuse one whose access token would die mid-job."""
    expires, now = copy.identity.access_expires, utcnow()
    if min_ttl is None or expires is None or expires - now > min_ttl:
        return
    when = "has expired" if expires <= now else f"expires in {max(0, int((expires - now).total_seconds()))}s"
    raise AccessOnlyError(f"the access token of the login in {store.url} {when}, within --min-ttl: an access-only "
                          "copy of it would stop working mid-job")


def _restore_access_only(home: Home, store: Store, stored: Versioned, copy: AuthFile, force: bool) -> Result:
    local_raw = home.read()
    state = home.state()
    data = copy.to_bytes()
    if local_raw == data:
        return Result("unchanged", copy, "already up to date (an access-only copy)", stored.version)
    local = None if local_raw is None else home.parse_or_none(local_raw)
    if local is not None and local_raw is not None and not force and local.is_chatgpt and not local.is_access_only \
            and (state.base_for(store.key) is None or state.changed_since_base(local_raw)):
        raise ConflictError(
            f"{home.auth_path} holds a full login that may not be saved anywhere; an access-only copy would replace "
            "it", hint="Persist it first (`codex-ci persist --to URL`), or use another CODEX_HOME for the job, or "
            "pass --force to replace it.")
    home.check_state_file()
    home.write(data)
    home.save_state(replace(state.with_base(store.key, stored.version, data, copy.stamp(utcnow())), access_only="yes"))
    return Result("restored", copy, f"restored an access-only copy to {home.auth_path} from {store.url} (version "
                  f"{stored.version})", stored.version)


def _restore_locked(
    home: Home, store: Store, stored: Versioned, remote: AuthFile, on_login: LoginHook, force: bool,
) -> Result:
    now = utcnow()
    local_raw = home.read()
    local: AuthFile | None = None
    if local_raw is not None:
        try:
            local = AuthFile.parse(local_raw, str(home.auth_path))
            on_login(local)
        except InvalidAuthError as exc:
            log.warning("replacing an unusable local auth.json (%s)", exc.message)
    home.check_state_file()
    state = home.state()
    data, stored_raw = remote.to_bytes(), encoded(stored.value)

    def kept(local: AuthFile, reason: str) -> Result:
        """Keep the newer local login; the store's version is its base now, and the digest of the store's value,
        so that persist sees a change."""
        home.save_state(state.with_base(store.key, stored.version, stored_raw, remote.stamp(now)))
        return Result("kept-local", local, reason, stored.version)

    if local_raw is not None and local is not None and not force:
        if local_raw in (stored_raw, data):
            home.save_state(state.with_base(store.key, stored.version, local_raw, remote.stamp(now)))
            return Result("unchanged", local, "already up to date", stored.version)
        base = state.base_for(store.key)
        if base is not None and state.changed_since_base(local_raw):
            if base != stored.version:
                raise ConflictError(
                    f"{home.auth_path} changed since it was restored from {store.url} (version {base}), and the "
                    f"store has moved on to version {stored.version}: both changed, so neither was overwritten",
                    hint="To keep this runner's login run `codex-ci persist --force --to URL`; to take the store's "
                    "run `codex-ci restore --force --from URL`.",
                )
            if not Stamp.decode(state.base_stamp).newer_than(local.stamp(now)):
                return Result("kept-local", local, f"{home.auth_path} changed since version {base} of {store.url}; "
                              "kept it (persist writes it)", stored.version)
        elif base is not None and base != stored.version and not store.compare_and_set \
                and local.stamp(now).newer_than(remote.stamp(now)):
            # a write-only store (github) has no history to order by: the value passed in is older than the login
            # this home last wrote or restored there (a run started from an older secret): never go back to it
            log.warning("%s passed in an older login than the one this home last wrote there (version %s); kept "
                        "the newer local one", store.url, base)
            return kept(local, f"{home.auth_path} is newer than {store.url}; kept it")
        elif base is None and local.stamp(now).newer_than(remote.stamp(now)):
            return kept(local, f"{home.auth_path} is newer than {store.url}; kept it")
    home.write(data)
    home.save_state(state.with_base(store.key, stored.version, data, remote.stamp(now)))
    return Result("restored", remote, f"restored {home.auth_path} from {store.url} (version {stored.version})",
                  stored.version)


def persist(
    home: Home, store: Store, *, lock_timeout: float, on_login: LoginHook = ignore, force: bool = False,
) -> Result:
    """Write auth.json to the store if it changed since its base, by compare-and-set onto that base; never over a
    newer login, never when both sides changed. ``force``: compare-and-set against the version just read, whatever
    it holds (the recovery after a new login on a trusted machine)."""
    with home.lock(lock_timeout):
        local, raw = home.load()
        on_login(local)
        state = home.state()
    base = state.base_for(store.key)
    if local.is_access_only:
        return Result("skipped", local, "an access-only copy is never persisted (its login is rotated elsewhere)",
                      base)
    writer = _Writer(home, store, raw, local, lock_timeout)
    if force:
        return writer.force()
    if base is None:
        return writer.newest(store.read())
    if not state.changed_since_base(raw):
        return Result("unchanged", local, "auth.json has not changed since it was last restored or persisted", base)
    if state.own_rotation(raw):  # the live head of its login: onto the base, else over anything older
        return writer.onto(base, fallback=writer.newest)
    if Stamp.decode(state.base_stamp).newer_than(local.stamp(utcnow())):
        return writer.superseded(base, f"auth.json is older than the login it was restored from ({store.url} "
                                       f"version {base}): an older login is never written over a newer one")
    return writer.onto(base)


class _Writer:
    """persist's writes, each recording the new base in the state file."""

    def __init__(self, home: Home, store: Store, raw: bytes, local: AuthFile, lock_timeout: float) -> None:
        self.home, self.store, self.raw, self.local, self.lock_timeout = home, store, raw, local, lock_timeout
        self.text = raw.decode("utf-8", "surrogateescape")

    def _record(self, version: str, stored: str | bytes) -> None:
        with self.home.lock(self.lock_timeout):
            state = self.home.state()
            self.home.save_state(state.with_base(self.store.key, version, self.raw, stamp_of(stored, utcnow())))

    def _done(self, action: Action, version: str) -> Result:
        self._record(version, self.raw)
        return Result(action, self.local, f"wrote {self.store.url} (version {version})", version)

    def unchanged(self, current: Versioned) -> Result:
        self._record(current.version, current.value)
        return Result("unchanged", self.local, f"{self.store.url} already holds this login", current.version)

    def superseded(self, version: str, reason: str) -> Result:
        return Result("superseded", self.local, reason, version)

    def onto(self, base: str, fallback: Callable[[Versioned | None], Result] | None = None) -> Result:
        """Write onto the base version. If the store moved, both sides changed: write nothing, or (for this home's
        own rotation) hand over to ``fallback`` with what the store holds now."""
        try:
            return self._done("written", self.store.write(self.text, base))
        except StoreConflict:
            current = self.store.read()
        if current is not None and current.value == self.text:
            return self.unchanged(current)
        if fallback is not None:
            log.info("%s moved on from version %s; ordering by when each login was issued", self.store.url, base)
            return fallback(current)
        version = current.version if current is not None else "none"
        return self.superseded(version, f"{self.store.url} moved on from version {base} (now {version}) while "
                                        "auth.json changed too: both changed, so the store was not overwritten")

    def newest(self, current: Versioned | None) -> Result:
        """No base: write if the secret is absent or holds an older login (ordered by Stamp)."""
        for attempt in range(PERSIST_ATTEMPTS):
            if current is not None:
                if current.value == self.text:
                    return self.unchanged(current)
                now = utcnow()
                if not self.local.stamp(now).newer_than(stamp_of(current.value, now)):
                    return self.superseded(current.version, f"{self.store.url} holds a newer login (version "
                                                            f"{current.version}): this copy is superseded")
            expected = current.version if current is not None else None
            if attempt:
                log.info("%s moved; ours is newer, retrying (attempt %d)", self.store.url, attempt + 1)
            try:
                return self._done("written" if expected else "created", self.store.write(self.text, expected))
            except StoreConflict:
                current = self.store.read()
        raise ConflictError(f"{self.store.url} kept changing; gave up after {PERSIST_ATTEMPTS} attempts")

    def force(self) -> Result:
        current = self.store.read()
        if current is not None and current.value == self.text:
            return self.unchanged(current)
        expected = current.version if current is not None else None
        try:
            return self._done("written" if expected else "created", self.store.write(self.text, expected))
        except StoreConflict:
            raise ConflictError(f"{self.store.url} changed while persist --force was writing; nothing was written",
                                hint="Run it again.") from None


def check_persisted(result: Result) -> Result:
    """A persist the user asked for that wrote nothing because the store won: an error, with the way out."""
    if result.action == "superseded":
        raise SupersededError(result.reason)
    return result


def write_handout(auth: AuthFile, handout: Store, store: Store) -> Result:
    """Write the access-only copy of ``auth`` (the full login, already saved to ``store``) to ``handout`` by
    compare-and-set, unless it already holds that copy or a newer one. Jobs restore the handout: they need read
    access to it only and never see the refresh token."""
    if handout.key == store.key:
        raise ConfigError("--handout must name another secret than --store: the access-only copy would replace the "
                          "login itself")
    copy = auth.access_only()
    text = copy.to_bytes().decode("utf-8")
    for _ in range(PERSIST_ATTEMPTS):
        current = handout.read()
        if current is not None:
            if current.value == text:
                return Result("unchanged", copy, f"{handout.url} already holds this copy", current.version)
            now = utcnow()
            if stamp_of(current.value, now).newer_than(copy.stamp(now)):
                return Result("superseded", copy, f"{handout.url} holds a newer access-only copy (version "
                              f"{current.version})", current.version)
        expected = current.version if current is not None else None
        try:
            version = handout.write(text, expected)
        except StoreConflict:
            continue
        return Result("written" if expected else "created", copy,
                      f"wrote the access-only copy to {handout.url} (version {version})", version)
    raise ConflictError(f"{handout.url} kept changing; gave up after {PERSIST_ATTEMPTS} attempts")
