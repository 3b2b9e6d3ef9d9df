"""Times, JWT claims and the Stamp that orders two logins: what auth.json's tokens say, read without trusting any
machine's clock further than FUTURE_SLACK."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from codex_ci.errors import InvalidAuthError

# A last_refresh further ahead of this machine's clock than this is not believed: it never makes a login "newer"
# and never holds off a refresh (it was planted, or written by a runner whose clock ran ahead).
FUTURE_SLACK = timedelta(minutes=5)
_FRACTION = re.compile(r"(\.\d{6})\d+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number is out of range")
    return value


def loads(text: str | bytes) -> Any:
    """json.loads that refuses what Codex's parser refuses: NaN, Infinity and numbers out of range."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``, as Codex (chrono) writes ``last_refresh``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime | None:
    """Parse an RFC 3339 timestamp (any number of fraction digits); None when it is not one."""
    text = _FRACTION.sub(r"\1", value.strip())
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            return None
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def decode_jwt_claims(token: str, name: str) -> dict[str, Any]:
    """The payload of a JWT (signature unchecked, as Codex does). Raises InvalidAuthError naming ``name``."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidAuthError(f"{name} is not a JWT (expected three dot-separated parts)")
    payload = parts[1]
    try:
        if not _BASE64URL.fullmatch(payload):  # unpadded base64url, as Codex decodes it
            raise ValueError
        claims = loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        json.dumps(claims, ensure_ascii=False).encode("utf-8")
    except (binascii.Error, ValueError, RecursionError, UnicodeError):
        raise InvalidAuthError(f"{name} is not a JWT (its payload does not decode to JSON)") from None
    if not isinstance(claims, dict):
        raise InvalidAuthError(f"{name} is not a JWT (its payload is not a JSON object)")
    return claims


@dataclass(frozen=True)
class Identity:
    """What the id_token and access token say about the login. Not secret, but shown masked."""

    email: str | None
    account_id: str | None
    plan: str | None
    access_expires: datetime | None
    access_issued: datetime | None = None


@dataclass(frozen=True)
class Stamp:
    """When a login was made, for ordering two of them: first the access token's ``iat`` (set by the token
    endpoint's clock), then ``last_refresh`` (the clock of whichever machine refreshed). A value more than
    FUTURE_SLACK ahead of this machine's clock is not believed (None): a planted or drifted timestamp never wins."""

    issued: datetime | None
    refreshed: datetime | None

    def newer_than(self, other: Stamp) -> bool:
        if self.issued is not None and other.issued is not None and self.issued != other.issued:
            return self.issued > other.issued
        if self.refreshed is None:
            return False
        return other.refreshed is None or self.refreshed > other.refreshed

    def encode(self) -> str:
        return ",".join(format_time(t) if t else "" for t in (self.issued, self.refreshed))

    @classmethod
    def decode(cls, text: str) -> Stamp:
        issued, _, refreshed = text.partition(",")
        return cls(parse_time(issued) if issued else None, parse_time(refreshed) if refreshed else None)


def believed(moment: datetime | None, now: datetime) -> datetime | None:
    return None if moment is not None and moment > now + FUTURE_SLACK else moment


def epoch(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
