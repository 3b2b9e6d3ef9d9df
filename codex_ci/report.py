"""What a command reports besides its log lines: masks for every secret, step outputs and the step summary."""

from __future__ import annotations

from typing import Any

from codex_ci import github
from codex_ci.authfile import AuthFile
from codex_ci.claims import format_time


def mask(auth: AuthFile) -> None:
    """The ``on_login`` hook of every command: mask the login's secrets before anything can print them."""
    github.mask(auth.secret_values())


def facts(auth: AuthFile) -> dict[str, Any]:
    """The non-secret facts every command outputs."""
    expires = auth.identity.access_expires
    return {
        "auth-mode": auth.mode,
        "expires-at": format_time(expires) if expires else "",
        "last-refresh": format_time(auth.last_refresh) if auth.last_refresh else "",
    }


def report(title: str, auth: AuthFile, extra: dict[str, Any]) -> None:
    """Step outputs and a summary table (on GitHub Actions; nothing elsewhere)."""
    outputs = facts(auth) | extra
    github.set_outputs(outputs)
    github.summary(title, list(outputs.items()))
