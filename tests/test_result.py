"""codex_ci.result: the one result type of every core operation."""

from __future__ import annotations

import dataclasses
import json
from typing import get_args

import pytest
from conftest import login

from codex_ci.authfile import AuthFile
from codex_ci.result import Action, Result

AUTH = AuthFile.parse(json.dumps(login()), "auth.json")
ACTIONS = get_args(Action)


def test_the_actions() -> None:
    assert ACTIONS == ("written", "created", "replaced", "kept", "refreshed", "not-refreshed", "restored",
                       "kept-local", "unchanged", "superseded", "skipped")


@pytest.mark.parametrize("action", ACTIONS)
def test_refreshed_only_for_a_rotation(action: Action) -> None:
    assert Result(action, AUTH, "why").refreshed is (action == "refreshed")


def test_fields_and_defaults() -> None:
    result = Result("restored", AUTH, "the store holds a newer login")
    assert (result.action, result.auth, result.reason, result.version) == (
        "restored", AUTH, "the store holds a newer login", None)
    assert Result("written", AUTH, "x", version="7").version == "7"
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.action = "kept"  # type: ignore[misc]


def test_repr_shows_no_token() -> None:
    text = repr(Result("refreshed", AUTH, "forced", "3"))
    assert text == ("Result(action='refreshed', auth=AuthFile(mode='chatgpt', [secure]), reason='forced', "
                    "version='3')")
