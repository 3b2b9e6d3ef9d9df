"""seed: write auth.json from a login given to the runner (CODEX_AUTH_JSON, a file or stdin), only if absent."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from codex_ci.authfile import FUTURE_SLACK, AuthFile, utcnow
from codex_ci.errors import FileSystemError, MissingAuthError
from codex_ci.home import Home
from codex_ci.result import LoginHook, Result, ignore

log = logging.getLogger("codex_ci")

MAX_SEED = 4 * 1024 * 1024


def read_source(from_file: str | None) -> tuple[bytes, str]:
    """The seed's bytes and a name for messages: --from-file PATH, - for stdin, else $CODEX_AUTH_JSON."""
    if from_file == "-":
        return sys.stdin.buffer.read(MAX_SEED + 1), "standard input"
    if from_file:
        path = Path(from_file)
        try:
            with path.open("rb") as handle:
                return handle.read(MAX_SEED + 1), str(path)
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
    home: Home, raw: bytes, source: str, *, force: bool, if_newer: bool, lock_timeout: float,
    now: datetime | None = None, on_login: LoginHook = ignore, access_only: bool = False,
) -> Result:
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
    home.ensure(create=True)
    kept = Result("kept", auth, f"{home.auth_path} already exists; left unchanged")
    if not (force or if_newer) and home.is_seeded():
        # auth.json never disappears once written (Codex rewrites it in place, codex-ci by rename): no lock needed
        home.warn_about_config()
        return kept
    with home.lock(lock_timeout):
        home.ensure_config()  # under the lock, and on every path, so a seed killed before it is completed later
        existing_raw = home.read()
        if existing_raw is None:
            _write_seed(home, auth)
            return Result("written", auth, f"wrote {home.auth_path}")
        if not (force or if_newer):
            return kept
        if if_newer and not force:
            existing = home.parse_or_none(existing_raw)  # an unreadable file is older than any valid seed
            current = None if existing is None else existing.last_refresh
            if current is not None and current > now + FUTURE_SLACK:
                log.warning("%s has a last_refresh ahead of this machine's clock; the seed replaces it",
                            home.auth_path)
                current = None
            if current is not None and (auth.last_refresh is None or auth.last_refresh <= current):
                return Result("kept", auth, f"{home.auth_path} is as new as the seed or newer; left unchanged")
        _write_seed(home, auth)
    return Result("replaced", auth, f"replaced {home.auth_path}")


def _write_seed(home: Home, auth: AuthFile) -> None:
    """Write a seeded login (the caller holds the lock); an access-only one is recorded as such."""
    home.write(auth.to_bytes())
    state = home.state()
    if auth.is_access_only or state.access_only:
        home.save_state(replace(state, access_only="yes" if auth.is_access_only else ""))
