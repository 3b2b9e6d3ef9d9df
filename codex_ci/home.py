"""One CODEX_HOME: where auth.json lives, Codex's locks on it, config.toml and codex-ci's state file.

Every core operation works on a :class:`Home`. Writes of auth.json and the state file happen under ``lock()``
(Codex's ``auth.lock`` then ``auth.json.lock``); ``read_shared()`` is for readers that change nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from codex_ci.authfile import AuthFile
from codex_ci.errors import FileSystemError, InvalidAuthError, MissingAuthError
from codex_ci.files import ensure_home, is_regular_file, read_file, resolve_home, write_atomic
from codex_ci.locks import AuthLock, SharedAuthLock
from codex_ci.secret import Secret
from codex_ci.state import STATE_NAME, State, read_state, save_state

log = logging.getLogger("codex_ci")

AUTH_NAME = "auth.json"
CONFIG_NAME = "config.toml"
CONFIG_LINE = 'cli_auth_credentials_store = "file"\n'


class Home:
    """A CODEX_HOME directory (which may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.auth_path = path / AUTH_NAME
        self.config_path = path / CONFIG_NAME
        self.state_path = path / STATE_NAME

    @classmethod
    def resolve(cls, option: str | None) -> Home:
        """--codex-home, else $CODEX_HOME, else ~/.codex (see files.resolve_home)."""
        return cls(resolve_home(option))

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Home({str(self.path)!r})"

    def ensure(self, *, create: bool) -> None:
        """Check it is a directory; create it 0700 when asked and missing."""
        ensure_home(self.path, create=create)

    def lock(self, timeout: float) -> AuthLock:
        return AuthLock(self.path, timeout)

    # -- auth.json -------------------------------------------------------------------------------------------------

    def read(self) -> bytes | None:
        """auth.json's bytes, None if absent (callers that act on it hold the lock)."""
        return read_file(self.auth_path)

    def read_shared(self, timeout: float, warnings: list[str]) -> bytes | None:
        """auth.json's bytes under a shared lock (a read-only home cannot hold one: then nobody writes it either)."""
        try:
            lock = SharedAuthLock(self.path, timeout).__enter__()
        except FileSystemError as exc:
            warnings.append(f"read without the lock: {exc.message}")
            return self.read()
        try:
            return self.read()
        finally:
            lock.__exit__(None, None, None)

    def load(self) -> tuple[AuthFile, bytes]:
        """auth.json parsed, and its bytes. MissingAuthError if absent."""
        raw = self.read()
        if raw is None:
            raise MissingAuthError(f"{self.auth_path} does not exist")
        return AuthFile.parse(raw, str(self.auth_path)), raw

    def parse_or_none(self, raw: bytes) -> AuthFile | None:
        """``raw`` parsed as this home's auth.json, None when it is not a usable login."""
        try:
            return AuthFile.parse(raw, str(self.auth_path))
        except InvalidAuthError:
            return None

    def peek_refresh_token(self) -> Secret | None:
        """The refresh token auth.json holds now, read without the lock (None if it cannot be read): what a run sets
        out to refresh. Finding another one under the lock means someone refreshed meanwhile."""
        try:
            raw = self.read()
        except FileSystemError:
            return None
        auth = None if raw is None else self.parse_or_none(raw)
        return None if auth is None else auth.refresh_token

    def write(self, data: bytes) -> None:
        write_atomic(self.auth_path, data)

    # -- codex-ci's state file -------------------------------------------------------------------------------------

    def state(self) -> State:
        return read_state(self.path)

    def save_state(self, state: State) -> None:
        save_state(self.path, state)

    def check_state_file(self) -> None:
        """Refuse a symlinked state file before auth.json changes, not after."""
        is_regular_file(self.state_path)

    # -- config.toml -----------------------------------------------------------------------------------------------

    def is_seeded(self) -> bool:
        """auth.json and config.toml both exist (refusing symlinks): a seed has nothing left to do."""
        return is_regular_file(self.auth_path) and is_regular_file(self.config_path)

    def ensure_config(self) -> None:
        """Create config.toml forcing file credentials (under the lock); warn if it sends them to a keyring."""
        if read_file(self.config_path) is None:
            write_atomic(self.config_path, CONFIG_LINE.encode())
            log.info('created %s with cli_auth_credentials_store = "file"', self.config_path)
            return
        self.warn_about_config()

    def warn_about_config(self) -> None:
        """Warn when config.toml sends the credentials to a keyring: Codex would move the login out of auth.json."""
        store = self.credentials_store()
        if store in ("keyring", "auto"):
            log.warning('%s sets cli_auth_credentials_store = "%s": Codex would move the login out of auth.json; '
                        'set it to "file"', self.config_path, store)

    def credentials_store(self) -> str | None:
        """config.toml's cli_auth_credentials_store ("invalid" if it does not parse, None if unset or absent)."""
        config = read_file(self.config_path)
        if config is None:
            return None
        import tomllib  # here: a seed that finds its work done never loads it

        try:
            value = tomllib.loads(config.decode("utf-8")).get("cli_auth_credentials_store")
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
            return "invalid"
        return value if isinstance(value, str) else None
