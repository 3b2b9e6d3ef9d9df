"""The local commands' core: seed and refresh one CODEX_HOME. Returns values or raises; never prints."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from codex_ci import interrupts
from codex_ci.authfile import FUTURE_SLACK, AuthFile, format_time, utcnow
from codex_ci.errors import AccessOnlyError, FileSystemError, InvalidAuthError, MissingAuthError
from codex_ci.files import AUTH_NAME, AuthLock, ensure_home, is_regular_file, read_file, write_atomic
from codex_ci.secret import Secret
from codex_ci.state import digest, read_state, save_state

if TYPE_CHECKING:
    from codex_ci.refresh import Policy, TokenClient

log = logging.getLogger("codex_ci")

CONFIG_NAME = "config.toml"
CONFIG_LINE = 'cli_auth_credentials_store = "file"\n'

LoginHook = Callable[[AuthFile], None]


def _ignore(auth: AuthFile) -> None:
    """The default ``on_login`` hook: every login read or made is shown to it before anything is logged."""


@dataclass(frozen=True)
class SeedResult:
    action: str  # "written", "replaced" or "kept"
    auth: AuthFile
    reason: str


@dataclass(frozen=True)
class RefreshResult:
    refreshed: bool
    reason: str
    auth: AuthFile


def read_source(from_file: str | None) -> tuple[bytes, str]:
    """The seed's bytes and a name for messages: --from-file PATH, - for stdin, else $CODEX_AUTH_JSON."""
    if from_file == "-":
        return sys.stdin.buffer.read(4 * 1024 * 1024 + 1), "standard input"
    if from_file:
        path = Path(from_file)
        try:
            with path.open("rb") as handle:
                return handle.read(4 * 1024 * 1024 + 1), str(path)
        except OSError as exc:
            raise FileSystemError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    value = os.environb.get(b"CODEX_AUTH_JSON")
    if value is None or not value.strip():
        what = "is not set" if value is None else "is empty (a secret that does not exist reads as empty)"
        raise MissingAuthError(
            f"CODEX_AUTH_JSON {what}",
            hint="Pass the secret to the step: `env: CODEX_AUTH_JSON: ${{ secrets.CODEX_AUTH_JSON }}`, or use "
            "--from-file PATH.",
        )
    return value, "CODEX_AUTH_JSON"


def load(home: Path) -> AuthFile:
    """Parse auth.json (the caller holds the lock). MissingAuthError if absent."""
    raw = read_file(home / AUTH_NAME)
    if raw is None:
        raise MissingAuthError(f"{home / AUTH_NAME} does not exist")
    return AuthFile.parse(raw, str(home / AUTH_NAME))


def environment_notes(env: Mapping[str, str]) -> list[str]:
    """What in the environment makes Codex ignore auth.json (said by seed and status)."""
    notes = []
    if env.get("CODEX_ACCESS_TOKEN"):
        notes.append("CODEX_ACCESS_TOKEN is set: Codex signs in with it and ignores auth.json")
    if env.get("OPENAI_FEDERATION_RULE_ID"):
        notes.append("OPENAI_FEDERATION_RULE_ID is set (workload identity federation): Codex signs in with the CI "
                     "identity token and ignores auth.json")
    if env.get("CODEX_API_KEY"):
        notes.append("CODEX_API_KEY is set: `codex exec` uses it (API billing) instead of auth.json")
    return notes


def mode_note(auth: AuthFile) -> str | None:
    """What kind of login this is, when it is not one codex-ci rotates."""
    if auth.is_access_only:
        return "an access-only copy: its refresh token is a placeholder, so the login is rotated elsewhere"
    if not auth.is_chatgpt:
        return f"a {auth.mode} login: it does not rotate, so it needs no refresh and no store"
    return None


def seed(
    home: Path, raw: bytes, source: str, *, force: bool, if_newer: bool, lock_timeout: float,
    now: datetime | None = None, on_login: LoginHook = _ignore, access_only: bool = False,
) -> SeedResult:
    """Write auth.json from a seed, only if absent (or --force, or --if-newer and the seed is newer).
    ``access_only``: write the login with its refresh token replaced by a placeholder (see AuthFile.access_only)."""
    now = now or utcnow()
    auth, encoding = AuthFile.parse_seed(raw, source)
    on_login(auth)
    auth = auth.normalized_for_seed(now)
    if access_only and not auth.is_access_only:
        auth = auth.access_only()
    log.info("login read from %s (%s, %s mode)", source, encoding, auth.mode)
    for note in filter(None, [mode_note(auth), *environment_notes(os.environ)]):
        log.info("%s", note)
    ensure_home(home, create=True)
    path = home / AUTH_NAME
    kept = SeedResult("kept", auth, f"{path} already exists; left unchanged")
    if not (force or if_newer) and is_regular_file(path) and is_regular_file(home / CONFIG_NAME):
        # auth.json never disappears once written (Codex rewrites it in place, codex-ci by rename): no lock needed
        warn_about_config(home)
        return kept
    with AuthLock(home, lock_timeout):
        ensure_config(home)  # under the lock, and on every path, so a seed killed before it is completed later
        existing_raw = read_file(path)
        if existing_raw is None:
            _write_seed(home, auth)
            return SeedResult("written", auth, f"wrote {path}")
        if not (force or if_newer):
            return kept
        if if_newer and not force:
            current = _existing_time(existing_raw, str(path))
            if current is not None and current > now + FUTURE_SLACK:
                log.warning("%s has a last_refresh ahead of this machine's clock; the seed replaces it", path)
                current = None
            if current is not None and (auth.last_refresh is None or auth.last_refresh <= current):
                return SeedResult("kept", auth, f"{path} is as new as the seed or newer; left unchanged")
        _write_seed(home, auth)
    return SeedResult("replaced", auth, f"replaced {path}")


def _write_seed(home: Path, auth: AuthFile) -> None:
    """Write a seeded login (the caller holds the AuthLock); an access-only one is recorded as such."""
    write_atomic(home / AUTH_NAME, auth.to_bytes())
    state = read_state(home)
    if auth.is_access_only or state.access_only:
        save_state(home, replace(state, access_only="yes" if auth.is_access_only else ""))


def _existing_time(raw: bytes, name: str) -> datetime | None:
    try:
        return AuthFile.parse(raw, name).last_refresh
    except InvalidAuthError:
        return None  # an unreadable file is older than any valid seed


def ensure_config(home: Path) -> None:
    """Create config.toml forcing file credentials (the caller holds the AuthLock); warn if it uses a keyring."""
    path = home / CONFIG_NAME
    if read_file(path) is None:
        write_atomic(path, CONFIG_LINE.encode())
        log.info('created %s with cli_auth_credentials_store = "file"', path)
        return
    warn_about_config(home)


def warn_about_config(home: Path) -> None:
    """Warn when config.toml sends the credentials to a keyring: Codex would move the login out of auth.json."""
    path = home / CONFIG_NAME
    store = credentials_store(read_file(path))
    if store in ("keyring", "auto"):
        log.warning(
            '%s sets cli_auth_credentials_store = "%s": Codex would move the login out of auth.json; set it to "file"',
            path, store,
        )


def credentials_store(config: bytes | None) -> str | None:
    """The cli_auth_credentials_store setting of a config.toml ("invalid" if it does not parse)."""
    if config is None:
        return None
    import tomllib

    try:
        value = tomllib.loads(config.decode("utf-8")).get("cli_auth_credentials_store")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return "invalid"
    return value if isinstance(value, str) else None


def access_only_check(auth: AuthFile, now: datetime, policy: Policy) -> str:
    """For an access-only copy, which can rotate nothing: the reason it needs no refresh, or AccessOnlyError."""
    from codex_ci.refresh import decide

    why = decide(auth, now, replace(policy, force=False))
    if why is None:
        return "an access-only copy, fresh enough (its login is rotated elsewhere)"
    expires = auth.identity.access_expires
    when = "has expired" if expires is not None and expires <= now else "expires within --min-ttl"
    raise AccessOnlyError(f"this is an access-only copy whose access token {when}; it cannot be refreshed here")


def _peek_refresh_token(home: Path) -> Secret | None:
    """The refresh token auth.json holds now, read without the lock (None if it cannot be read): what this run
    set out to refresh. Finding another one under the lock means someone refreshed meanwhile."""
    try:
        raw = read_file(home / AUTH_NAME)
        return AuthFile.parse(raw, AUTH_NAME).refresh_token if raw is not None else None
    except (InvalidAuthError, FileSystemError):
        return None


def refresh_home(
    home: Path, policy: Policy, *, lock_timeout: float, client: TokenClient | None = None,
    on_login: LoginHook = _ignore, deadline: float | None = None, expected: Secret | None = None,
) -> RefreshResult:
    """Refresh auth.json under Codex's locks for the whole read, decide, POST and write (no POST may run past
    ``deadline``, a time.monotonic() value: see TokenClient.refresh).

    Never rotates a login that another process refreshed after this run started (whatever its new lifetime), nor
    one rotated moments ago (see refresh.too_soon), not even when forced. ``expected`` is the refresh token the
    caller set out to refresh (by default, the one auth.json holds when this starts). From just before the POST
    until the new login is written, SIGINT and SIGTERM are deferred (see interrupts.rotation)."""
    from codex_ci.errors import AmbiguousRefreshError
    from codex_ci.refresh import TokenClient, decide, earliest_refresh_at, in_future, too_soon

    ensure_home(home, create=False)
    started = utcnow()
    before = expected or _peek_refresh_token(home)
    with AuthLock(home, lock_timeout):
        auth = load(home)
        on_login(auth)
        if not auth.is_chatgpt:
            return RefreshResult(False, f"{auth.mode} login: nothing to refresh", auth)
        now = utcnow()
        if auth.is_access_only:
            return RefreshResult(False, access_only_check(auth, now, policy), auth)
        last = auth.last_refresh
        if (before is not None and auth.refresh_token != before) or (last is not None and started <= last <= now):
            return RefreshResult(False, "another process refreshed it while this one waited", auth)
        if in_future(auth, now):
            log.warning("auth.json's last_refresh is more than 5 minutes ahead of this machine's clock; ignoring it")
        why = decide(auth, now, policy)
        if why is None:
            return RefreshResult(False, "the access token is fresh enough", auth)
        state = read_state(home)
        hold = too_soon(auth, now, state.refresh_not_before)
        if hold is not None:
            return RefreshResult(False, hold, auth)
        token = auth.refresh_token
        if token is None:  # validated by AuthFile; kept for the type checker
            raise InvalidAuthError("tokens.refresh_token is missing")
        log.info("refreshing: %s", why)
        with interrupts.rotation():
            tokens = (client or TokenClient()).refresh(token, deadline)
            try:
                refreshed = auth.with_refresh(tokens, utcnow())
            except InvalidAuthError as exc:
                raise AmbiguousRefreshError(
                    f"the token endpoint answered with unusable tokens: {exc.message}") from None
            on_login(refreshed)
            data = refreshed.to_bytes()
            write_atomic(home / AUTH_NAME, data)
            not_before = earliest_refresh_at(tokens, now)
            save_state(home, replace(state, not_before=format_time(not_before) if not_before else "",
                                     rotated=digest(data)))
    return RefreshResult(True, why, refreshed)
