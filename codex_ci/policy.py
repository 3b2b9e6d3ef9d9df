"""When a login is refreshed: the policy, Codex's rule with a CI-sized margin, and the holds that keep one login
from being rotated twice. Plain functions of a login, a time and the policy (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from codex_ci.authfile import AuthFile
from codex_ci.claims import format_time, parse_time
from codex_ci.errors import AccessOnlyError

# A login refreshed less than this long ago is never rotated again: the endpoint may reject a refresh token that
# is presented again within seconds of being issued.
MIN_INTERVAL = timedelta(minutes=1)
MAX_NOT_BEFORE = timedelta(days=1)  # an earliest_refresh_at further out than this is not honoured


@dataclass(frozen=True)
class Policy:
    """When to refresh: ``min_ttl`` before the access token expires; after ``max_age`` when its expiry cannot be
    read (Codex's rule); ``refresh_after`` (keepalive --max-age) once ``last_refresh`` is that old; or always."""

    min_ttl: timedelta
    max_age: timedelta
    force: bool = False
    refresh_after: timedelta | None = None


def in_future(auth: AuthFile, now: datetime) -> bool:
    """True when last_refresh is too far ahead of this machine's clock to be believed."""
    return auth.last_refresh is not None and auth.refreshed_at(now) is None


def too_soon(auth: AuthFile, now: datetime, not_before: datetime | None = None) -> str | None:
    """Why this login must not be rotated now, even when forced: it was rotated moments ago, or the endpoint gave
    an ``earliest_refresh_at`` still ahead. An access token that has already expired is always refreshed."""
    expires = auth.identity.access_expires
    if expires is not None and expires <= now:
        return None
    if not_before is not None and now < not_before <= now + MAX_NOT_BEFORE:
        return f"the token endpoint asked for no refresh before {format_time(not_before)}"
    last = auth.refreshed_at(now)
    if last is not None and now - last < MIN_INTERVAL:
        ago = max(0, int((now - last).total_seconds()))
        return f"it was refreshed {ago}s ago, and a login is never rotated twice within a minute"
    return None


def threshold(auth: AuthFile, min_ttl: timedelta, now: datetime) -> timedelta:
    """How close to its expiry an access token is refreshed: ``min_ttl``, but never more than half its lifetime,
    so that a token that lives shorter than ``min_ttl`` (1-hour tokens, say) is not rotated on every run."""
    expires = auth.identity.access_expires
    issued = auth.identity.access_issued or auth.refreshed_at(now)
    if expires is None or issued is None or issued >= expires:
        return min_ttl
    return min(min_ttl, (expires - issued) / 2)


def decide(auth: AuthFile, now: datetime, policy: Policy) -> str | None:
    """Why this login needs a refresh now, or None. Codex's rule with a CI-sized margin."""
    if policy.force:
        return "forced"
    last = auth.refreshed_at(now)
    if policy.refresh_after is not None and (last is None or now - last >= policy.refresh_after):
        return "last_refresh is older than --max-age" if last is not None else "last_refresh is unknown"
    expires = auth.identity.access_expires
    if expires is not None:
        if expires - now <= threshold(auth, policy.min_ttl, now):
            if expires <= now:
                return "the access token has expired"
            return "the access token expires within the minimum TTL"
        return None
    if last is None:
        return "the access token has no readable expiry and last_refresh is unknown"
    if now - last >= policy.max_age:
        return "the access token has no readable expiry and last_refresh is older than the maximum age"
    return None


def earliest_refresh_at(answer: dict[str, Any], now: datetime) -> datetime | None:
    """The ``earliest_refresh_at`` a token answer may carry (RFC 3339, or seconds since the epoch)."""
    value = answer.get("earliest_refresh_at")
    if isinstance(value, str):
        return parse_time(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e11:
        return datetime.fromtimestamp(value, now.tzinfo)
    return None


def need(auth: AuthFile, now: datetime, policy: Policy, not_before: datetime | None) -> tuple[bool, str]:
    """(True, why) when this login is to be rotated now, else (False, why not): another kind of login, an
    access-only copy that is still fresh (AccessOnlyError once it is not), fresh enough, or rotated moments ago."""
    if not auth.is_chatgpt:
        return False, f"{auth.mode} login: nothing to refresh"
    if auth.is_access_only:
        return False, access_only_check(auth, now, policy)
    why = decide(auth, now, policy)
    if why is None:
        return False, "the access token is fresh enough"
    hold = too_soon(auth, now, not_before)
    return (False, hold) if hold is not None else (True, why)


def access_only_check(auth: AuthFile, now: datetime, policy: Policy) -> str:
    """For an access-only copy, which can rotate nothing: the reason it needs no refresh, or AccessOnlyError."""
    if decide(auth, now, replace(policy, force=False)) is None:
        return "an access-only copy, fresh enough (its login is rotated elsewhere)"
    expires = auth.identity.access_expires
    when = ("has no readable expiry and is older than --max-age" if expires is None
            else "has expired" if expires <= now else "expires within --min-ttl")
    raise AccessOnlyError(f"this is an access-only copy whose access token {when}; it cannot be refreshed here")
