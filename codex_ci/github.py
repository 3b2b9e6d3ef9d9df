"""Everything GitHub Actions specific: masks, outputs, step summary, annotations (inert outside Actions), the run
that holds a lease, and the Actions OIDC token a store may sign in with."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from codex_ci.secret import Secret


def active() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def mask(secrets: Iterable[Secret]) -> None:
    """``::add-mask::`` every token value, one line each, before anything else can print it."""
    if not active():
        return
    lines = []
    for secret in secrets:
        lines += [f"::add-mask::{line}\n" for line in secret.reveal().splitlines() if line.strip()]
    if lines:
        sys.stdout.write("".join(lines))
        sys.stdout.flush()


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def error(message: str, title: str = "codex-ci") -> None:
    if active():
        title = _escape(title).replace(",", "%2C").replace(":", "%3A")
        sys.stdout.write(f"::error title={title}::{_escape(message)}\n")
        sys.stdout.flush()


def warning(message: str) -> None:
    if active():
        sys.stdout.write(f"::warning title=codex-ci::{_escape(message)}\n")
        sys.stdout.flush()


def _append(variable: str, text: str) -> None:
    """Append to a runner file. Failing to report must not fail a command whose work is done: warn instead."""
    path = os.environ.get(variable)
    if not path or not active():
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        logging.getLogger("codex_ci").warning("cannot write $%s: %s", variable, exc.strerror or type(exc).__name__)


def _render(value: object) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def set_outputs(values: Mapping[str, object]) -> None:
    """Write non-secret step outputs to $GITHUB_OUTPUT (heredoc form, safe for any value)."""
    text = ""
    for key, value in values.items():
        delimiter = f"ghadelimiter_{uuid.uuid4()}"
        text += f"{key}<<{delimiter}\n{_render(value)}\n{delimiter}\n"
    _append("GITHUB_OUTPUT", text)


def summary(title: str, rows: Iterable[tuple[str, object]]) -> None:
    """A small Markdown table in $GITHUB_STEP_SUMMARY."""
    cells = ((key, " ".join(_render(value).split()).replace("|", "\\|")) for key, value in rows)  # one row each
    body = "".join(f"| {key} | {value} |\n" for key, value in cells)
    _append("GITHUB_STEP_SUMMARY", f"### {title}\n\n| | |\n|---|---|\n{body}\n")


def run_id(env: Mapping[str, str] | None = None) -> str | None:
    """The workflow run this process belongs to (GITHUB_RUN_ID), for people reading a lease record."""
    return (os.environ if env is None else env).get("GITHUB_RUN_ID") or None


OIDC_TIMEOUT = 10.0


def oidc_token(env: Mapping[str, str], audience: str, *, what: str) -> str:
    """A GitHub Actions OIDC token (a JWT) for ``audience``, to sign in to ``what`` (the job needs
    ``permissions: id-token: write``). The request's bearer token never leaves this function."""
    import httpx

    url = env["ACTIONS_ID_TOKEN_REQUEST_URL"]
    if audience:
        url += ("&" if "?" in url else "?") + "audience=" + quote(audience, safe="")
    bearer = Secret(env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"])
    try:
        response = httpx.get(url, headers={"Authorization": f"bearer {bearer.reveal()}"}, timeout=OIDC_TIMEOUT)
        value = response.json()["value"] if response.status_code == 200 else None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, KeyError, TypeError):  # InvalidURL: not an HTTPError
        value = None
    if not isinstance(value, str) or not value:
        from codex_ci.errors import StoreError

        raise StoreError(f"cannot get the GitHub Actions OIDC token for {what}",
                         hint="The job needs `permissions: id-token: write`.")
    return value
