"""codex_ci.errors: every error's exit code and hint, the documented exit codes, which command may return which,
and Interrupted's code per signal. (README's exit-code table is checked against these in test_cli.)"""

from __future__ import annotations

import inspect
import signal

import pytest

from codex_ci import errors
from codex_ci.cli import app
from codex_ci.errors import (
    COMMAND_CODES,
    AccessOnlyError,
    AmbiguousRefreshError,
    CodexCIError,
    ConfigError,
    ConflictError,
    ExitCode,
    FileSystemError,
    Interrupted,
    InvalidAuthError,
    LockTimeoutError,
    LoginRejectedError,
    MissingAuthError,
    StoreConflict,
    StoredValueError,
    StoreError,
    SupersededError,
    TransientError,
    UnsavedRotation,
)

INVALID_HINT = ('Export a fresh auth.json from a trusted machine where `codex login` ran with '
                'cli_auth_credentials_store = "file".')
# Every error class with the exit code and hint it carries when raised without a hint of its own.
ERRORS: dict[type[CodexCIError], tuple[int, str | None]] = {
    CodexCIError: (1, None),
    ConfigError: (2, None),
    InvalidAuthError: (3, INVALID_HINT),
    MissingAuthError: (4, "Run `codex-ci seed` (from CODEX_AUTH_JSON) or `codex-ci restore --from STORE` first."),
    LoginRejectedError: (5, "The login is dead for every copy. Run `codex login` on a trusted machine and update the "
                            "CODEX_AUTH_JSON secret (or `codex-ci persist --to STORE`)."),
    TransientError: (6, "Nothing was changed. Try again later."),
    AmbiguousRefreshError: (6, "The refresh request may have reached the server, so it was not retried: the refresh "
                               "token may now be spent. Run `codex-ci status`; if a later refresh fails with "
                               "refresh_token_reused, log in again."),
    LockTimeoutError: (7, "Another process holds the lock. Raise --lock-timeout or check for a stuck process."),
    FileSystemError: (8, None),
    StoreError: (9, None),
    UnsavedRotation: (9, None),
    StoreConflict: (10, None),
    StoredValueError: (3, INVALID_HINT),
    ConflictError: (10, None),
    SupersededError: (10, "Nothing was written. If this runner's auth.json is the login to keep (a new `codex login` "
                          "on a trusted machine), run `codex-ci persist --force --to URL`; otherwise run `codex-ci "
                          "restore --from URL`."),
    AccessOnlyError: (11, "The login is rotated elsewhere: run the keepalive job (`codex-ci keepalive --store URL "
                          "--handout HANDOUT`), then restore the handout again; or split the job so it ends before "
                          "the access token does."),
}


def test_the_table_above_names_every_error_class() -> None:
    defined = {cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, CodexCIError) and cls.__module__ == errors.__name__}
    assert defined - {Interrupted} == set(ERRORS)


@pytest.mark.parametrize("cls", list(ERRORS), ids=lambda cls: cls.__name__)
def test_exit_code_and_hint(cls: type[CodexCIError]) -> None:
    code, hint = ERRORS[cls]
    error = cls("what went wrong")
    assert (error.exit_code, error.hint) == (code, hint)
    assert isinstance(error.exit_code, ExitCode)
    assert str(error) == error.message == "what went wrong"
    assert error.args == ("what went wrong",)


def test_a_hint_given_replaces_the_class_hint_for_that_error_only() -> None:
    error = TransientError("x", hint="Raise --lease-ttl.")
    assert error.hint == "Raise --lease-ttl."
    assert TransientError("y").hint == "Nothing was changed. Try again later."
    assert TransientError("z", hint=None).hint == "Nothing was changed. Try again later."


@pytest.mark.parametrize(("cls", "base"), [
    (StoreConflict, StoreError), (StoredValueError, StoreError), (UnsavedRotation, StoreError),
    (AmbiguousRefreshError, TransientError), (SupersededError, ConflictError),
], ids=lambda cls: cls.__name__)
def test_subclasses(cls: type[CodexCIError], base: type[CodexCIError]) -> None:
    assert issubclass(cls, base)


def test_store_errors_of_other_kinds_are_not_store_conflicts() -> None:
    """What the distributed refresh relies on: it catches StoreConflict alone to retry a compare-and-set."""
    assert not issubclass(StoredValueError, StoreConflict)
    assert not issubclass(UnsavedRotation, StoreConflict)
    assert not issubclass(ConflictError, StoreError)  # a reconciliation that failed, not a store failure


# -- exit codes ----------------------------------------------------------------------------------------------------

def test_exit_code_values() -> None:
    assert {code.name: code.value for code in ExitCode} == {
        "OK": 0, "UNEXPECTED": 1, "USAGE": 2, "INVALID": 3, "MISSING": 4, "LOGIN_REJECTED": 5, "TRANSIENT": 6,
        "LOCK_TIMEOUT": 7, "FILESYSTEM": 8, "STORE": 9, "CONFLICT": 10, "ACCESS_ONLY": 11, "EXPIRING": 20,
        "EXPIRED": 21, "INTERRUPTED": 130, "TERMINATED": 143,
    }


def test_exit_codes_are_ints() -> None:
    assert ExitCode.LOCK_TIMEOUT == 7
    assert isinstance(ExitCode.LOCK_TIMEOUT, int)
    assert f"{int(ExitCode.TERMINATED)}" == "143"


def test_command_codes_name_every_command_of_the_cli() -> None:
    commands = {command.name or command.callback.__name__ for command in app.registered_commands
                if command.callback is not None}
    assert set(COMMAND_CODES) == commands == {"seed", "refresh", "restore", "persist", "keepalive", "status"}


def test_command_codes() -> None:
    every = {0, 1, 2, 130, 143}
    home = {3, 4, 7, 8}
    assert {name: set(codes) for name, codes in COMMAND_CODES.items()} == {
        "seed": every | home,
        "refresh": every | home | {5, 6, 11} | {9, 10},
        "restore": every | home | {9, 10} | {11},
        "persist": every | home | {9, 10},
        "keepalive": every | home | {5, 6, 11} | {9, 10} | {20, 21},
        "status": every | home | {9} | {20, 21},
    }


def test_every_exit_code_is_returned_by_some_command() -> None:
    assert set().union(*COMMAND_CODES.values()) == set(ExitCode)


# -- Interrupted ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_exit_code_per_signal(signum: int, code: int) -> None:
    error = Interrupted(signum)
    assert (error.exit_code, error.signum) == (code, signum)
    assert error.message == f"interrupted by {signal.Signals(signum).name}"
    assert error.hint is None


def test_interrupted_with_a_detail() -> None:
    error = Interrupted(signal.SIGTERM, "after the rotation")
    assert error.message == "interrupted by SIGTERM (after the rotation)"
    assert error.exit_code == ExitCode.TERMINATED


def test_each_interrupted_keeps_its_own_code() -> None:
    first, second = Interrupted(signal.SIGTERM), Interrupted(signal.SIGINT)
    assert (first.exit_code, second.exit_code) == (ExitCode.TERMINATED, ExitCode.INTERRUPTED)
