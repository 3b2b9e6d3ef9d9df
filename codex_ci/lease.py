"""The distributed refresh lease: a record next to the login in the same store, taken by compare-and-set.

It names its holder and an expiry, so a crashed holder blocks others for at most the lease's TTL.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta

from codex_ci.authfile import format_time, parse_time, utcnow
from codex_ci.errors import InvalidAuthError, StoreError
from codex_ci.stores import Store, StoreConflict

log = logging.getLogger("codex_ci")


def new_holder_id() -> str:
    """Who holds the lease, for people reading the record: host, GitHub run (if any) and a random part."""
    run = os.environ.get("GITHUB_RUN_ID")
    where = f"{socket.gethostname()}" + (f"/run-{run}" if run else "")
    return f"{where}/{uuid.uuid4().hex[:12]}"


class Lease:
    def __init__(self, store: Store, holder: str, ttl: timedelta) -> None:
        self.store = store
        self.holder = holder
        self.ttl = ttl
        self.version: str | None = None
        self.deadline = 0.0  # time.monotonic() when the lease taken ends (a little earlier: measured before taking it)

    def _current(self, now: datetime) -> tuple[str | None, str | None]:
        """(version of the record, its live holder or None when free, expired or unreadable)."""
        try:
            record = self.store.read()
        except InvalidAuthError:
            raise StoreError(
                f"the refresh lease record {self.store.url} is damaged",
                hint="Delete it: it holds no secret, and the next refresh writes a new one.",
            ) from None
        if record is None:
            return None, None
        try:
            data = json.loads(record.value)
            holder, expires = data.get("holder"), parse_time(str(data.get("expires_at")))
        except (ValueError, AttributeError, RecursionError):
            return record.version, None
        if not isinstance(holder, str) or expires is None or expires <= now:
            return record.version, None
        return record.version, holder

    def try_acquire(self) -> bool:
        now = utcnow()
        version, holder = self._current(now)
        if holder is not None and holder != self.holder:
            log.debug("refresh lease held by %s", holder)
            return False
        record = {"holder": self.holder, "acquired_at": format_time(now), "expires_at": format_time(now + self.ttl)}
        deadline = time.monotonic() + self.ttl.total_seconds()
        try:
            self.version = self.store.write(json.dumps(record).encode(), version)
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
            self.store.write(json.dumps(record).encode(), self.version)
        except StoreConflict:
            log.warning("the refresh lease on %s was taken over before release", self.store.url)
        self.version = None
