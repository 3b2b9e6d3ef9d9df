"""Everything GitHub Actions specific: masks, outputs, step summary, annotations. Inert outside Actions."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterable, Mapping

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
    cells = ((key, _render(value).replace("|", "\\|")) for key, value in rows)
    body = "".join(f"| {key} | {value} |\n" for key, value in cells)
    _append("GITHUB_STEP_SUMMARY", f"### {title}\n\n| | |\n|---|---|\n{body}\n")
