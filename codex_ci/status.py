"""Health of one CODEX_HOME, as plain data with no secret in it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from codex_ci.authfile import AuthFile, format_time, utcnow
from codex_ci.errors import ExitCode, FileSystemError, InvalidAuthError
from codex_ci.files import AUTH_NAME, SharedAuthLock, mode_of, read_file
from codex_ci.local import CONFIG_NAME, credentials_store, environment_notes, mode_note

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


def read_status(home: Path, *, min_ttl: timedelta, lock_timeout: float, now: datetime | None = None) -> Status:
    """Read auth.json (under the lock when the directory allows it) and judge its health."""
    now = now or utcnow()
    path = home / AUTH_NAME
    status = Status("missing", str(home), str(path))
    status.dir_mode = _octal(mode_of(home))
    if status.dir_mode is None:
        status.health, status.problem = "unusable", f"CODEX_HOME {home} does not exist"
        return status
    if not home.is_dir():
        status.health, status.problem = "unusable", f"CODEX_HOME {home} is not a directory"
        return status
    status.file_mode = _octal(mode_of(path))
    try:
        status.credentials_store = credentials_store(read_file(home / CONFIG_NAME))
        raw = _read_locked(home, lock_timeout, status.warnings)
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


def _read_locked(home: Path, lock_timeout: float, warnings: list[str]) -> bytes | None:
    try:
        lock = SharedAuthLock(home, lock_timeout).__enter__()
    except FileSystemError as exc:
        # A read-only CODEX_HOME cannot hold a lock file; then nobody can be writing auth.json either.
        warnings.append(f"read without the lock: {exc.message}")
        return read_file(home / AUTH_NAME)
    try:
        return read_file(home / AUTH_NAME)
    finally:
        lock.__exit__(None, None, None)


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
