"""What every core operation returns: one result type, whose ``action`` says what happened."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from codex_ci.authfile import AuthFile

Action = Literal[
    "written",  # seed wrote auth.json, or persist/handout wrote the store onto the version it named
    "created",  # persist/handout created the secret
    "replaced",  # seed --force / --if-newer replaced auth.json
    "kept",  # seed left an existing auth.json alone
    "refreshed",  # the login was rotated (and, with a store, saved)
    "not-refreshed",  # no rotation was needed, or another process or runner made it
    "restored",  # restore wrote the store's login to auth.json
    "kept-local",  # restore kept a newer local login (persist writes it)
    "unchanged",  # both sides already held this login
    "superseded",  # persist wrote nothing: the store holds a newer login, or both changed
    "skipped",  # persist of an access-only copy: nothing to save
]

LoginHook = Callable[[AuthFile], None]  # shown every login read or made, before anything is logged (masks)


def ignore(auth: AuthFile) -> None:
    """The default ``on_login`` hook."""


@dataclass(frozen=True)
class Result:
    action: Action
    auth: AuthFile
    reason: str
    version: str | None = None  # the store version, for the operations that involve a store

    @property
    def refreshed(self) -> bool:
        return self.action == "refreshed"
