"""The auth.json model: parse, validate, read JWT claims, serialize the way Codex does.

An :class:`AuthFile` keeps the whole JSON object, unknown keys included, so nothing a newer Codex wrote is lost.
Its ``repr`` shows no token. Error messages name keys and positions, never values.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any

from codex_ci.claims import (
    FUTURE_SLACK,
    Identity,
    Stamp,
    believed,
    decode_jwt_claims,
    epoch,
    format_time,
    loads,
    parse_time,
    text_or_none,
    utcnow,
)
from codex_ci.errors import InvalidAuthError
from codex_ci.secret import Secret

__all__ = ["ACCESS_ONLY_TOKEN", "FUTURE_SLACK", "AuthFile", "Identity", "Stamp", "decode_jwt_claims", "format_time",
           "loads", "parse_time", "utcnow"]

MAX_BYTES = 1024 * 1024
AUTH_CLAIMS = "https://api.openai.com/auth"
# The order Codex writes its top-level keys in; unknown keys follow in their original order.
KEY_ORDER = (
    "auth_mode",
    "OPENAI_API_KEY",
    "tokens",
    "last_refresh",
    "agent_identity",
    "personal_access_token",
    "bedrock_api_key",
)
TOKEN_ORDER = ("id_token", "access_token", "refresh_token", "account_id")
# Keys whose values are not secret (everything else in the file is masked on CI, wherever it sits).
PLAIN_KEYS = frozenset({"auth_mode", "account_id", "last_refresh", "chatgpt_account_id", "chatgpt_plan_type",
                        "chatgpt_user_id", "email", "expires_at", "created_at", "issued_at", "region", "type"})
MIN_MASKED = 8  # shorter strings are not secrets, and masking them would blank common words in the log
# The refresh token of an access-only copy. Codex (0.120 to 0.171, measured) accepts it and, while the access
# token is valid, sends no token request; once it has expired, Codex presents this (harmless to the real login),
# fails with "log in again" and leaves auth.json untouched. Not a secret.
ACCESS_ONLY_TOKEN = "codex-ci-access-only"

# The auth modes Codex knows: any other value makes Codex reject the whole file.
MODES = ("chatgpt", "apikey", "chatgptAuthTokens", "agentIdentity", "personalAccessToken", "bedrockApiKey")


class AuthFile:
    """A validated auth.json. Build with :meth:`parse`; serialize with :meth:`to_bytes`."""

    __slots__ = ("_data", "mode", "identity")

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self.mode = _resolve_mode(data)
        self.identity = _validate(data, self.mode)

    def __repr__(self) -> str:
        return f"AuthFile(mode={self.mode!r}, [secure])"

    # -- parsing -------------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, raw: bytes | str, source: str) -> AuthFile:
        """Parse auth.json bytes (or text). ``source`` names where they came from, for messages."""
        if isinstance(raw, str):
            try:
                raw = raw.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidAuthError(f"{source} is not valid UTF-8") from None
        if len(raw) > MAX_BYTES:
            raise InvalidAuthError(f"{source} is too large ({len(raw)} bytes; the limit is {MAX_BYTES})")
        if b"\x00" in raw:
            raise InvalidAuthError(f"{source} contains NUL bytes")
        if not raw.strip():
            raise InvalidAuthError(f"{source} is empty")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidAuthError(f"{source} is not valid UTF-8") from None
        try:
            data = loads(text)
        except json.JSONDecodeError as exc:
            if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
                raise InvalidAuthError(
                    f"{source} is cut short: its JSON ends before the login does",
                    hint=f"Copy the whole auth.json into {source}: the value was truncated.") from None
            raise InvalidAuthError(
                f"{source} is not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno})"
            ) from None
        except ValueError as exc:  # NaN, Infinity, an integer too long to convert
            raise InvalidAuthError(f"{source} is not valid JSON ({str(exc).split(':')[0]})") from None
        except RecursionError:
            raise InvalidAuthError(f"{source} is nested too deeply") from None
        if isinstance(data, str) and data.lstrip().startswith("{"):
            raise InvalidAuthError(f"{source} is a JSON string holding JSON, not the JSON object itself",
                                   hint="It was encoded twice: store the content of auth.json as it is.")
        if not isinstance(data, dict):
            raise InvalidAuthError(f"{source} must be a JSON object, not {_json_kind(data)}")
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidAuthError(f"{source} contains invalid unicode escapes") from None
        try:
            return cls(data)
        except InvalidAuthError as exc:
            raise InvalidAuthError(f"{source}: {exc.message}") from None

    @classmethod
    def parse_stored(cls, text: str, url: str) -> AuthFile:
        """The login a store at ``url`` holds; a damaged one is an InvalidAuthError saying how to rewrite it."""
        try:
            return cls.parse(_as_bytes(text, url), url)
        except InvalidAuthError as exc:
            raise InvalidAuthError(
                exc.message, hint=f"The stored value is damaged or is not a codex-ci login. From a runner or a "
                f"trusted machine holding a good login, `codex-ci persist --force --to {url}` rewrites it.") from None

    @classmethod
    def parse_seed(cls, raw: bytes | str, source: str) -> tuple[AuthFile, str]:
        """Parse a seed that is JSON or base64 of JSON. Returns the file and "json" or "base64"."""
        data = _as_bytes(raw, source)
        if len(data) > MAX_BYTES * 2:
            raise InvalidAuthError(f"{source} is too large ({len(data)} bytes; the limit is {MAX_BYTES})")
        stripped = data.strip()
        if stripped[:1] in (b"'", b"`") or (stripped[:1] == b'"' and stripped[1:2] == b"{" and
                                            not stripped.endswith(b'"')):
            raise InvalidAuthError(f"{source} is wrapped in quotes",
                                   hint="Remove the quotes around it: it must hold the JSON itself, or its base64.")
        if stripped[:1] in (b"/", b"~") or stripped[:2] == b"./" or stripped.endswith(b".json"):
            raise InvalidAuthError(f"{source} looks like a file path, not a login",
                                   hint="Did you mean --from-file PATH? It must hold the content of auth.json.")
        if not stripped or stripped[:1] in (b"{", b"[", b'"') or b"\x00" in stripped:
            return cls.parse(data, source), "json"
        compact = re.sub(rb"\s+", b"", stripped)
        try:
            decoded = base64.b64decode(compact + b"=" * (-len(compact) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if not decoded.lstrip().startswith(b"{"):
            try:
                json.loads(stripped)
            except (ValueError, RecursionError):
                raise InvalidAuthError(f"{source} is neither JSON nor base64-encoded JSON") from None
            return cls.parse(data, source), "json"
        return cls.parse(decoded, f"{source} (base64-decoded)"), "base64"

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def is_chatgpt(self) -> bool:
        return self.mode == "chatgpt"

    @property
    def tokens(self) -> dict[str, Any]:
        tokens = self._data.get("tokens")
        return tokens if isinstance(tokens, dict) else {}

    @property
    def refresh_token(self) -> Secret | None:
        value = self.tokens.get("refresh_token")
        return Secret(value) if isinstance(value, str) and value else None

    @property
    def last_refresh(self) -> datetime | None:
        value = self._data.get("last_refresh")
        return parse_time(value) if isinstance(value, str) else None

    def refreshed_at(self, now: datetime) -> datetime | None:
        """``last_refresh``, unless it is more than FUTURE_SLACK ahead of ``now``."""
        return believed(self.last_refresh, now)

    def stamp(self, now: datetime) -> Stamp:
        return Stamp(believed(self.identity.access_issued, now), self.refreshed_at(now))

    @property
    def is_access_only(self) -> bool:
        """An access-only copy: a ChatGPT login whose refresh token is the placeholder, so it can rotate nothing."""
        return self.is_chatgpt and self.tokens.get("refresh_token") == ACCESS_ONLY_TOKEN

    def access_only(self) -> AuthFile:
        """This login with its refresh token replaced by the placeholder (for jobs that must not rotate it)."""
        if not self.is_chatgpt:
            raise InvalidAuthError(f"an access-only copy needs a ChatGPT login, not a {self.mode} one")
        data = json.loads(json.dumps(self._data))
        data["tokens"]["refresh_token"] = ACCESS_ONLY_TOKEN
        return AuthFile(data)

    def secret_values(self) -> list[Secret]:
        """Every secret value in the file, wherever it sits (nested records, unknown keys): the ones a CI log must
        mask. Only the values of PLAIN_KEYS, short strings and the access-only placeholder are left out."""
        found: list[str] = []

        def walk(value: Any, key: str) -> None:
            if isinstance(value, dict):
                for name, item in value.items():
                    walk(item, str(name))
            elif isinstance(value, list):
                for item in value:
                    walk(item, key)
            elif (isinstance(value, str) and len(value) >= MIN_MASKED and key not in PLAIN_KEYS
                  and value != ACCESS_ONLY_TOKEN and value not in found):
                found.append(value)

        walk(self._data, "")
        return [Secret(value) for value in found]

    # -- changing ------------------------------------------------------------------------------------------
    def normalized_for_seed(self, now: datetime) -> AuthFile:
        """Fill what Codex needs for its own refresh: ``tokens.account_id`` and ``last_refresh``."""
        data = json.loads(json.dumps(self._data))
        if self.is_chatgpt and not text_or_none(self.tokens.get("account_id")):
            if not self.identity.account_id:
                raise InvalidAuthError(
                    "tokens.account_id is missing and the id_token has no chatgpt_account_id claim"
                )
            data["tokens"]["account_id"] = self.identity.account_id
        if self.last_refresh is None:
            data["last_refresh"] = format_time(now)
        return AuthFile(data)

    def with_refresh(self, response: dict[str, Any], now: datetime) -> AuthFile:
        """Apply a token-endpoint answer: take the tokens it gives, keep the ones it omits, stamp the time."""
        data = json.loads(json.dumps(self._data))
        for key in ("id_token", "access_token", "refresh_token"):
            value = response.get(key)
            if isinstance(value, str) and value:
                data["tokens"][key] = value
        data["last_refresh"] = format_time(now)
        refreshed = AuthFile(data)
        if not text_or_none(refreshed.tokens.get("account_id")) and refreshed.identity.account_id:
            data["tokens"]["account_id"] = refreshed.identity.account_id
            refreshed = AuthFile(data)
        return refreshed

    def to_bytes(self) -> bytes:
        """Pretty JSON, two-space indent, Codex's key order, unknown keys kept after the known ones."""
        ordered = {key: self._data[key] for key in KEY_ORDER if key in self._data}
        if self.mode in ("chatgpt", "apikey") or "OPENAI_API_KEY" in self._data:
            ordered.setdefault("OPENAI_API_KEY", None)
            ordered = {key: ordered[key] for key in KEY_ORDER if key in ordered}
        if isinstance(ordered.get("tokens"), dict):
            tokens = ordered["tokens"]
            first = {key: tokens[key] for key in TOKEN_ORDER if key in tokens}
            ordered["tokens"] = first | {k: v for k, v in tokens.items() if k not in first}
        ordered |= {k: v for k, v in self._data.items() if k not in ordered}
        return json.dumps(ordered, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _as_bytes(raw: bytes | str, source: str) -> bytes:
    """Text as the bytes it came from (surrogateescape round-trips any bytes); a lone surrogate cannot have come
    from bytes at all (a JSON escape can carry one): not UTF-8."""
    if isinstance(raw, bytes):
        return raw
    try:
        return raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise InvalidAuthError(f"{source} is not valid UTF-8") from None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"


def _resolve_mode(data: dict[str, Any]) -> str:
    mode = data.get("auth_mode")
    if mode is None:
        key = data.get("OPENAI_API_KEY")
        if isinstance(key, str) and key:
            return "apikey"
        if data.get("tokens") is None:  # a file Codex wrote for another kind of login (no auth_mode, no tokens)
            for field, kind in (("personal_access_token", "personalAccessToken"), ("agent_identity", "agentIdentity"),
                                ("bedrock_api_key", "bedrockApiKey")):
                if data.get(field):
                    return kind
        return "chatgpt"
    if mode not in MODES:
        raise InvalidAuthError(f"auth_mode must be one of {', '.join(MODES)}")
    return str(mode)


def _validate(data: dict[str, Any], mode: str) -> Identity:
    if data.get("tokens") is not None and not isinstance(data["tokens"], dict):
        raise InvalidAuthError("tokens must be an object or null")
    key = data.get("OPENAI_API_KEY")
    if key is not None and not isinstance(key, str):
        raise InvalidAuthError("OPENAI_API_KEY must be a string or null")
    last_refresh = data.get("last_refresh")
    if last_refresh is not None and (not isinstance(last_refresh, str) or parse_time(last_refresh) is None):
        raise InvalidAuthError("last_refresh is not an RFC 3339 timestamp")
    if mode == "apikey":
        if not key:
            raise InvalidAuthError("auth_mode is apikey but OPENAI_API_KEY is empty")
        return Identity(None, None, None, None)
    tokens = data.get("tokens")
    if tokens is None:
        if mode == "chatgpt":
            raise InvalidAuthError("tokens is missing (a ChatGPT login needs tokens)")
        return Identity(None, None, None, None)
    for name in ("id_token", "access_token", "refresh_token"):
        value = tokens.get(name)
        if not isinstance(value, str) or not value:
            what = "is missing" if value is None else "must be a non-empty string"
            raise InvalidAuthError(f"tokens.{name} {what}")
    account = tokens.get("account_id")
    if account is not None and not isinstance(account, str):
        raise InvalidAuthError("tokens.account_id must be a string or null")
    id_claims = decode_jwt_claims(tokens["id_token"], "tokens.id_token")
    access_claims = decode_jwt_claims(tokens["access_token"], "tokens.access_token")
    auth = id_claims.get(AUTH_CLAIMS)
    auth = auth if isinstance(auth, dict) else {}
    return Identity(
        email=text_or_none(id_claims.get("email")),
        account_id=text_or_none(account) or text_or_none(auth.get("chatgpt_account_id")),
        plan=text_or_none(auth.get("chatgpt_plan_type")),
        access_expires=epoch(access_claims.get("exp")),
        access_issued=epoch(access_claims.get("iat")),
    )
