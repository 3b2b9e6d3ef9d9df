"""The state file: what a CODEX_HOME knows about where its auth.json came from. 0600, never a secret.

It records the store and the store version the local login is based on (its *base*), a digest of the local file
as it was then, and when the stored login was made (its ``authfile.Stamp``). That is how logins are ordered by
store history rather than by clocks: a local file unchanged since its base loses to any newer store version, and
a changed one is written back only onto that same base. It also keeps the token endpoint's last
``earliest_refresh_at``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from pathlib import Path

from codex_ci.claims import Stamp, parse_time
from codex_ci.files import read_file, write_atomic

log = logging.getLogger("codex_ci")

STATE_NAME = "codex-ci-state.json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class State:
    store: str = ""  # the store URL the base version belongs to ("" when none)
    version: str = ""  # the store version auth.json was restored from or persisted as
    local_digest: str = ""  # auth.json as it was at that version
    base_stamp: str = ""  # when the stored login at that version was made (Stamp.encode)
    not_before: str = ""  # the token endpoint's earliest_refresh_at for the current login
    rotated: str = ""  # digest of the auth.json this home's own rotation wrote (the live head of its login)
    access_only: str = ""  # "yes" when auth.json was written as an access-only copy

    def base_for(self, store: str) -> str | None:
        """The base version for ``store``, or None when this home has no base there."""
        return self.version if self.store == store and self.version else None

    @property
    def refresh_not_before(self) -> datetime | None:
        return parse_time(self.not_before) if self.not_before else None

    def with_base(self, store: str, version: str, local: bytes, stamp: Stamp) -> State:
        """Based on ``version`` of ``store``, whose login was made at ``stamp``; auth.json is now ``local``."""
        return replace(self, store=store, version=version, local_digest=digest(local), base_stamp=stamp.encode())

    def changed_since_base(self, local: bytes) -> bool:
        return digest(local) != self.local_digest

    def own_rotation(self, local: bytes) -> bool:
        """True when ``local`` is what this home's own refresh wrote: the endpoint just accepted the refresh token
        it replaced, so no other copy can hold a later login of the same family."""
        return bool(self.rotated) and digest(local) == self.rotated


def read_state(home: Path) -> State:
    """The state of ``home`` (empty when there is none or it cannot be read)."""
    raw = read_file(home / STATE_NAME)
    if raw is None:
        return State()
    names = {field.name for field in fields(State)}
    try:
        data = json.loads(raw)
        return State(**{key: str(value) for key, value in data.items() if key in names and value is not None})
    except (ValueError, TypeError, AttributeError, RecursionError):
        log.warning("ignoring an unreadable %s", home / STATE_NAME)
        return State()


def save_state(home: Path, state: State) -> None:
    """Write the state file (the caller holds the AuthLock)."""
    write_atomic(home / STATE_NAME, json.dumps(asdict(state), indent=2).encode())
