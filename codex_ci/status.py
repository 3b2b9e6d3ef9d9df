"""Health of one CODEX_HOME, as plain data with no secret in it."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from codex_ci.authfile import AuthFile, format_time, utcnow
from codex_ci.errors import ExitCode, FileSystemError, InvalidAuthError
from codex_ci.files import mode_of
from codex_ci.home import Home
from codex_ci.seed import environment_notes, mode_note

if TYPE_CHECKING:
    from codex_ci.stores import Store

log = logging.getLogger("codex_ci")

HEALTH_CODES = {
    "healthy": ExitCode.OK,
    "expiring": ExitCode.EXPIRING,
    "expired": ExitCode.EXPIRED,
    "missing": ExitCode.MISSING,
    "invalid": ExitCode.INVALID,
    "unusable": ExitCode.FILESYSTEM,
}


@dataclass
class StoreView:
    """The stored copy, as ``status --store`` shows it."""

    url: str
    version: str | None = None
    last_refresh_age_seconds: int | None = None
    in_sync: bool = False


@dataclass
class Status:
    health: str
    codex_home: str
    auth_file: str
    mode: str | None = None
    account_id: str | None = None
    email: str | None = None
    plan: str | None = None
    last_refresh: str | None = None
    last_refresh_age_seconds: int | None = None
    access_expires_at: str | None = None
    access_expires_in_seconds: int | None = None
    refresh_token_present: bool = False
    access_only: bool = False
    note: str | None = None  # what kind of login, when codex-ci does not rotate it here
    file_mode: str | None = None
    dir_mode: str | None = None
    credentials_store: str | None = None
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)
    store: StoreView | None = None

    @property
    def exit_code(self) -> int:
        return HEALTH_CODES[self.health]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mask_email(email: str | None) -> str | None:
    if not email:
        return None
    user, _, domain = email.partition("@")
    return f"{user[:1]}***@{domain}" if domain else f"{user[:1]}***"


def mask_id(value: str | None) -> str | None:
    if not value:
        return None
    return f"{value[:4]}...{value[-4:]}" if len(value) > 12 else f"{value[:2]}..."


def _octal(mode: int | None) -> str | None:
    return None if mode is None else f"{mode:04o}"


def read_status(home: Home, *, min_ttl: timedelta, lock_timeout: float, now: datetime | None = None) -> Status:
    """Read auth.json (under the shared lock when the directory allows it) and judge its health."""
    now = now or utcnow()
    path = home.auth_path
    status = Status("missing", str(home), str(path))
    status.dir_mode = _octal(mode_of(home.path))
    if status.dir_mode is None:
        status.health, status.problem = "unusable", f"CODEX_HOME {home} does not exist"
        return status
    if not home.path.is_dir():
        status.health, status.problem = "unusable", f"CODEX_HOME {home} is not a directory"
        return status
    status.file_mode = _octal(mode_of(path))
    try:
        status.credentials_store = home.credentials_store()
        raw = home.read_shared(lock_timeout, status.warnings)
    except FileSystemError as exc:
        status.health, status.problem = "unusable", exc.message
        return status
    if raw is None:
        status.problem = f"{path} does not exist"
        return status
    try:
        auth = AuthFile.parse(raw, str(path))
    except InvalidAuthError as exc:
        status.health, status.problem = "invalid", exc.message
        return status
    _describe(status, auth, now, min_ttl)
    _warn(status)
    status.warnings += environment_notes(os.environ)
    return status


def _describe(status: Status, auth: AuthFile, now: datetime, min_ttl: timedelta) -> None:
    ident = auth.identity
    status.mode = auth.mode
    status.account_id = mask_id(ident.account_id)
    status.email = mask_email(ident.email)
    status.plan = ident.plan
    status.access_only = auth.is_access_only
    status.refresh_token_present = auth.refresh_token is not None and not auth.is_access_only
    status.note = mode_note(auth)
    if auth.last_refresh is not None:
        status.last_refresh = format_time(auth.last_refresh)
        status.last_refresh_age_seconds = int((now - auth.last_refresh).total_seconds())
    status.health = "healthy"
    if ident.access_expires is not None:
        left = ident.access_expires - now
        status.access_expires_at = format_time(ident.access_expires)
        status.access_expires_in_seconds = int(left.total_seconds())
        if left <= timedelta(0):
            status.health = "expired"
        elif left <= min_ttl:
            status.health = "expiring"
    if auth.is_chatgpt and not status.refresh_token_present and not auth.is_access_only:
        status.health, status.problem = "invalid", "no refresh token"


def _warn(status: Status) -> None:
    if status.file_mode not in (None, "0600"):
        status.warnings.append(f"auth.json is {status.file_mode}; expected 0600")
    if status.dir_mode is not None and int(status.dir_mode, 8) & 0o077:
        status.warnings.append(f"CODEX_HOME is {status.dir_mode}; expected 0700")
    if status.credentials_store in ("keyring", "auto"):
        setting = status.credentials_store
        status.warnings.append(f'config.toml sets cli_auth_credentials_store = "{setting}"; use "file"')
    elif status.credentials_store == "invalid":
        status.warnings.append("config.toml is not valid TOML")


def store_view(store: Store, home: Home, now: datetime | None = None) -> StoreView:
    """What status --store adds: the store's version, its login's age, whether the local copy matches."""
    view = StoreView(store.url)
    stored = store.read()
    if stored is None:
        log.warning("%s holds no login: put one there with `codex-ci persist --to URL`", store.url)
        return view
    remote = AuthFile.parse_stored(stored.value, store.url)
    view.version = stored.version
    if remote.last_refresh is not None:
        view.last_refresh_age_seconds = int(((now or utcnow()) - remote.last_refresh).total_seconds())
    local = home.read()
    view.in_sync = local is not None and local in (stored.value.encode("utf-8", "surrogateescape"), remote.to_bytes())
    return view


def render(status: Status) -> str:
    """The human table."""
    def age(seconds: int | None, suffix: str) -> str:
        if seconds is None:
            return ""
        days, rest = divmod(abs(seconds), 86400)
        text = f"{days}d{rest // 3600}h" if days else f"{rest // 3600}h{rest % 3600 // 60:02d}m"
        return f" ({text} {suffix})" if seconds >= 0 or suffix == "ago" else f" (expired {text} ago)"

    rows = [
        ("health", status.health + (f": {status.problem}" if status.problem else "")),
        ("auth file", status.auth_file),
        ("mode", status.mode),
        ("account", status.account_id),
        ("email", status.email),
        ("plan", status.plan),
        ("last refresh", (status.last_refresh or "") + age(status.last_refresh_age_seconds, "ago")),
        ("access expires", (status.access_expires_at or "") + age(status.access_expires_in_seconds, "left")),
        ("refresh token", "placeholder (access-only copy)" if status.access_only
         else "present" if status.refresh_token_present else "absent"),
        ("note", status.note),
        ("permissions", f"file {status.file_mode or '-'}, directory {status.dir_mode or '-'}"),
        ("credentials store", status.credentials_store or "(not set)"),
    ]
    if status.store is not None:
        view = status.store
        rows += [
            ("store", view.url),
            ("store version", view.version or "(no login stored)"),
            ("store refreshed", age(view.last_refresh_age_seconds, "ago").strip(" ()")),
            ("in sync", "yes" if view.in_sync else "no"),
        ]
    lines = [f"{key:<18} {value}" for key, value in rows if value]
    lines += [f"{'warning':<18} {warning}" for warning in status.warnings]
    return "\n".join(lines)
