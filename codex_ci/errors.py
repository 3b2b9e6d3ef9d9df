"""The one exception root. Each subclass carries its exit code and a hint.

Messages never contain a secret: they name files, keys and HTTP statuses, never values.
"""

from __future__ import annotations

import enum
import signal


class ExitCode(enum.IntEnum):
    """The documented exit codes (see README.md)."""

    OK = 0
    UNEXPECTED = 1  # a bug in codex-ci: please report it
    USAGE = 2  # bad command line (typer's own)
    INVALID = 3  # auth JSON / seed / stored payload is not a usable login
    MISSING = 4  # there is no auth.json (or no secret in the store)
    LOGIN_REJECTED = 5  # the token endpoint rejected the login for good: log in again
    TRANSIENT = 6  # network, 5xx, 429, timeout: try again later
    LOCK_TIMEOUT = 7  # another process held auth.json.lock too long
    FILESYSTEM = 8  # unusable CODEX_HOME, symlink, permissions, disk
    STORE = 9  # the secret store failed or refused
    CONFLICT = 10  # the store moved under us and could not be reconciled
    ACCESS_ONLY = 11  # an access-only copy whose access token is (about to be) spent: the rotator must run
    EXPIRING = 20  # status: valid but expires within --min-ttl
    EXPIRED = 21  # status: the access token has expired (a refresh may still save it)
    INTERRUPTED = 130  # SIGINT (Ctrl-C, or a cancelled GitHub job)
    TERMINATED = 143  # SIGTERM (a cancelled GitHub job, after SIGINT)


_EVERY = (ExitCode.OK, ExitCode.UNEXPECTED, ExitCode.USAGE, ExitCode.INTERRUPTED, ExitCode.TERMINATED)
_HOME = (ExitCode.INVALID, ExitCode.MISSING, ExitCode.LOCK_TIMEOUT, ExitCode.FILESYSTEM)
_TOKEN = (ExitCode.LOGIN_REJECTED, ExitCode.TRANSIENT, ExitCode.ACCESS_ONLY)
_STORE = (ExitCode.STORE, ExitCode.CONFLICT)
_HEALTH = (ExitCode.EXPIRING, ExitCode.EXPIRED)
# Every exit code each command can return (README's table lists them; a test keeps the two in sync).
COMMAND_CODES: dict[str, frozenset[ExitCode]] = {
    "seed": frozenset(_EVERY + _HOME),
    "refresh": frozenset(_EVERY + _HOME + _TOKEN + _STORE),
    "restore": frozenset(_EVERY + _HOME + _STORE + (ExitCode.ACCESS_ONLY,)),
    "persist": frozenset(_EVERY + _HOME + _STORE),
    "keepalive": frozenset(_EVERY + _HOME + _TOKEN + _STORE + _HEALTH),
    "status": frozenset(_EVERY + _HOME + (ExitCode.STORE,) + _HEALTH),
}


class CodexCIError(Exception):
    """Base of every error codex-ci reports to the user."""

    exit_code = ExitCode.UNEXPECTED
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(CodexCIError):
    """A bad option or environment value (the same exit code as a usage error)."""

    exit_code = ExitCode.USAGE


class InvalidAuthError(CodexCIError):
    exit_code = ExitCode.INVALID
    hint = (
        "Export a fresh auth.json from a trusted machine where `codex login` ran with "
        'cli_auth_credentials_store = "file".'
    )


class MissingAuthError(CodexCIError):
    exit_code = ExitCode.MISSING
    hint = "Run `codex-ci seed` (from CODEX_AUTH_JSON) or `codex-ci restore --from STORE` first."


class LoginRejectedError(CodexCIError):
    exit_code = ExitCode.LOGIN_REJECTED
    hint = (
        "The login is dead for every copy. Run `codex login` on a trusted machine and update the "
        "CODEX_AUTH_JSON secret (or `codex-ci persist --to STORE`)."
    )


class TransientError(CodexCIError):
    exit_code = ExitCode.TRANSIENT
    hint = "Nothing was changed. Try again later."


class AmbiguousRefreshError(TransientError):
    hint = (
        "The refresh request may have reached the server, so it was not retried: the refresh token may "
        "now be spent. Run `codex-ci status`; if a later refresh fails with refresh_token_reused, log in again."
    )


class LockTimeoutError(CodexCIError):
    exit_code = ExitCode.LOCK_TIMEOUT
    hint = "Another process holds the lock. Raise --lock-timeout or check for a stuck process."


class FileSystemError(CodexCIError):
    exit_code = ExitCode.FILESYSTEM


class StoreError(CodexCIError):
    """A store failed or refused. Stores raise only this and its subclasses (opening one may raise ConfigError)."""

    exit_code = ExitCode.STORE


class StoreConflict(StoreError):
    """A compare-and-set write lost: the store holds another version than the one named (or the secret exists)."""

    exit_code = ExitCode.CONFLICT


class StoredValueError(StoreError):
    """The store holds something that is not the text of a login codex-ci wrote (binary, damaged, no field)."""

    exit_code = ExitCode.INVALID
    hint = InvalidAuthError.hint


class UnsavedRotation(StoreError):
    """The login was rotated but the store could not be written: the new login is only in the local auth.json."""


class ConflictError(CodexCIError):
    exit_code = ExitCode.CONFLICT


class AccessOnlyError(CodexCIError):
    """An access-only copy cannot be refreshed here: its login is rotated by the keepalive (the rotator)."""

    exit_code = ExitCode.ACCESS_ONLY
    hint = (
        "The login is rotated elsewhere: run the keepalive job (`codex-ci keepalive --store URL --handout "
        "HANDOUT`), then restore the handout again; or split the job so it ends before the access token does."
    )


class SupersededError(ConflictError):
    """persist found the store holding a login it must not overwrite: newer, or changed since this copy's base."""

    hint = (
        "Nothing was written. If this runner's auth.json is the login to keep (a new `codex login` on a trusted "
        "machine), run `codex-ci persist --force --to URL`; otherwise run `codex-ci restore --from URL`."
    )


class Interrupted(CodexCIError):
    """SIGINT or SIGTERM: the command stopped cleanly (any rotation under way was finished and saved first)."""

    def __init__(self, signum: int, detail: str = "") -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}" + (f" ({detail})" if detail else ""))
        self.signum = signum
        self.exit_code = ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED
