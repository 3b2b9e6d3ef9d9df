"""The distributed refresh lease: a record next to the login in the same store, taken by compare-and-set.

No clock of another machine decides anything. The record names its holder and its TTL; a waiter judges it expired
only when the same record version has stood unchanged for that TTL by the waiter's *own* monotonic clock, counted
from when the waiter first saw it. The holder counts its own TTL from just before it wrote the record, so its
lease always ends (by its clock) before any waiter can take it over (by theirs), whatever their wall clocks say.
The TTL is capped at MAX_TTL; a record claiming more is treated as expired.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from datetime import timedelta
from typing import Any

from codex_ci import github, interrupts
from codex_ci.claims import format_time, utcnow
from codex_ci.errors import ConfigError, StoreConflict, StoredValueError, StoreError
from codex_ci.stores import Store

log = logging.getLogger("codex_ci")

MAX_TTL = timedelta(minutes=15)


def new_holder_id() -> str:
    """Who holds the lease, for people reading the record: host, GitHub run (if any) and a random part."""
    run = github.run_id()
    where = f"{socket.gethostname()}" + (f"/run-{run}" if run else "")
    return f"{where}/{uuid.uuid4().hex[:12]}"


def check_ttl(ttl: timedelta) -> None:
    if not timedelta(0) < ttl <= MAX_TTL:
        raise ConfigError(f"--lease-ttl must be more than 0 and at most {int(MAX_TTL.total_seconds() // 60)}m")


class Lease:
    def __init__(self, store: Store, holder: str, ttl: timedelta) -> None:
        check_ttl(ttl)
        self.store = store
        self.holder = holder
        self.ttl = ttl
        self.version: str | None = None
        self.deadline = 0.0  # time.monotonic() when the lease taken ends (measured before taking it)
        self._seen: tuple[str, float] | None = None  # another holder's record version, and when we first saw it
        self.other: str | None = None  # the other holder we are waiting for, if any
        self.keep = False  # set while a rotation made under this lease is not yet in the store: never release then

    def _read(self) -> tuple[str | None, dict[str, Any]]:
        """(version of the record, its content; {} when absent or unreadable)."""
        try:
            record = self.store.read()
        except StoredValueError:
            raise StoreError(
                f"the refresh lease record {self.store.url} is damaged",
                hint="Delete it: it holds no secret, and the next refresh writes a new one.",
            ) from None
        if record is None:
            return None, {}
        try:
            data = json.loads(record.value)
        except (ValueError, RecursionError):
            return record.version, {}
        return record.version, data if isinstance(data, dict) else {}

    def _their_ttl(self, data: dict[str, Any]) -> float:
        value = data.get("ttl_seconds")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return self.ttl.total_seconds()  # a record of an older codex-ci: judged by our own TTL
        if not 0 < value <= MAX_TTL.total_seconds():
            return 0.0  # claims more than any lease may last: expired
        return float(value)

    def waited(self) -> float:
        """How long this runner has watched the other holder's record stand unchanged."""
        return 0.0 if self._seen is None else time.monotonic() - self._seen[1]

    def try_acquire(self) -> bool:
        version, data = self._read()
        holder = data.get("holder")
        if isinstance(holder, str) and holder and holder != self.holder and version is not None:
            now = time.monotonic()
            if self._seen is None or self._seen[0] != version:
                self._seen, self.other = (version, now), holder
            ttl = self._their_ttl(data)
            if now - self._seen[1] < ttl:
                log.debug("refresh lease held by %s", holder)
                return False
            log.warning("the refresh lease on %s held by %s has not changed for %.0fs, past its TTL; taking it over",
                        self.store.url, holder, now - self._seen[1])
        ttl = self.ttl.total_seconds()
        record = {"holder": self.holder, "acquired_at": format_time(utcnow()), "ttl_seconds": ttl}
        deadline = time.monotonic() + ttl
        try:
            with interrupts.rotation():  # a signal waits until the lease taken is recorded, so it can be released
                self.version = self.store.write(json.dumps(record), version)
        except StoreConflict:
            return False
        self.deadline = deadline
        log.info("took the refresh lease on %s", self.store.url)
        return True

    def release(self) -> None:
        """Free the lease if it is still ours; losing that race only means it expires by itself."""
        if self.version is None:
            return
        record = {"holder": None, "released_at": format_time(utcnow())}
        try:
            self.store.write(json.dumps(record), self.version)
        except StoreConflict:
            log.warning("the refresh lease on %s was taken over before release", self.store.url)
        self.version = None
