"""codex_ci.home: one CODEX_HOME — its paths, Codex's two locks, auth.json, config.toml and the state file."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from conftest import login, write_login

from codex_ci import locks
from codex_ci.errors import ConfigError, ExitCode, FileSystemError, InvalidAuthError, MissingAuthError
from codex_ci.home import CONFIG_LINE, Home
from codex_ci.locks import AuthLock
from codex_ci.secret import Secret
from codex_ci.state import State
from testing.checks import flock_held, umask


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)




# -- paths -------------------------------------------------------------------------------------------------------

def test_paths(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    assert home.path == tmp_path / "h"
    assert home.auth_path == tmp_path / "h" / "auth.json"
    assert home.config_path == tmp_path / "h" / "config.toml"
    assert home.state_path == tmp_path / "h" / "codex-ci-state.json"
    assert str(home) == str(tmp_path / "h")
    assert repr(home) == f"Home({str(tmp_path / 'h')!r})"


def test_resolve_option_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "from-env"))
    assert Home.resolve(str(tmp_path / "from-option")).path == tmp_path / "from-option"
    assert Home.resolve(None).path == tmp_path / "from-env"
    monkeypatch.delenv("CODEX_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert Home.resolve(None).path == tmp_path / "user" / ".codex"


def test_resolve_refuses_a_literal_tilde(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEX_HOME", "~/.codex")
    with pytest.raises(ConfigError) as caught:
        Home.resolve(None)
    assert caught.value.message == ("CODEX_HOME is '~/.codex', with a literal ~ that no shell expanded: Codex would "
                                    "not expand it either")


# -- ensure ------------------------------------------------------------------------------------------------------

def test_ensure_creates_it_0700_whatever_the_umask(tmp_path: Path) -> None:
    home = Home(tmp_path / "a" / "b")
    with umask(0):
        home.ensure(create=True)
    assert mode(tmp_path / "a") == 0o700
    assert mode(home.path) == 0o700


def test_ensure_leaves_an_existing_directory_alone(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    home.path.mkdir(mode=0o755)
    home.path.chmod(0o755)
    home.ensure(create=True)
    assert mode(home.path) == 0o755


def test_ensure_without_create_refuses_a_missing_home(tmp_path: Path) -> None:
    home = Home(tmp_path / "missing")
    with pytest.raises(FileSystemError) as caught:
        home.ensure(create=False)
    assert caught.value.message == f"CODEX_HOME {home.path} does not exist"
    assert caught.value.exit_code == ExitCode.FILESYSTEM
    assert not home.path.exists()


def test_ensure_refuses_a_file(tmp_path: Path) -> None:
    home = Home(tmp_path / "file")
    home.path.write_text("x")
    with pytest.raises(FileSystemError) as caught:
        home.ensure(create=True)
    assert caught.value.message == f"CODEX_HOME {home.path} is not a directory"


# -- locks -------------------------------------------------------------------------------------------------------

def test_lock_takes_codex_locks_in_codex_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[tuple[str, str]] = []

    class Recording(locks.Flock):
        def __enter__(self) -> locks.Flock:
            taken.append(("take", self.path.name))
            return super().__enter__()

        def __exit__(self, *args: object) -> None:
            taken.append(("release", self.path.name))
            super().__exit__(None, None, None)

    monkeypatch.setattr(locks, "Flock", Recording)
    home = Home(tmp_path)
    lock = home.lock(3.0)
    assert isinstance(lock, AuthLock)
    assert (lock.home, lock.timeout) == (tmp_path, 3.0)
    with lock:
        assert taken == [("take", "auth.lock"), ("take", "auth.json.lock")]
    assert taken[2:] == [("release", "auth.json.lock"), ("release", "auth.lock")]


def test_lock_holds_both_files_until_left(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with home.lock(3.0):
        assert flock_held(tmp_path / "auth.lock")
        assert flock_held(tmp_path / "auth.json.lock")
        assert mode(tmp_path / "auth.lock") == 0o600
        assert mode(tmp_path / "auth.json.lock") == 0o600
    assert not flock_held(tmp_path / "auth.lock")
    assert not flock_held(tmp_path / "auth.json.lock")


def test_read_shared_reads_under_a_shared_lock(tmp_path: Path) -> None:
    home = Home(tmp_path)
    write_login(tmp_path, b'{"a": 1}')
    warnings: list[str] = []
    assert home.read_shared(3.0, warnings) == b'{"a": 1}'
    assert warnings == []
    assert not flock_held(tmp_path / "auth.json.lock")


def test_read_shared_without_a_usable_lock_file_reads_and_warns(tmp_path: Path) -> None:
    home = Home(tmp_path)
    write_login(tmp_path, b'{"a": 1}')
    (tmp_path / "auth.json.lock").symlink_to(tmp_path / "elsewhere")
    warnings: list[str] = []
    assert home.read_shared(3.0, warnings) == b'{"a": 1}'
    assert warnings == [f"read without the lock: {tmp_path / 'auth.json.lock'} is a symlink; refusing to follow it"]


# -- auth.json ---------------------------------------------------------------------------------------------------

def test_load_missing_is_missing_auth(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with pytest.raises(MissingAuthError) as caught:
        home.load()
    assert caught.value.message == f"{home.auth_path} does not exist"
    assert caught.value.exit_code == ExitCode.MISSING == 4


def test_load_returns_the_login_and_its_bytes(tmp_path: Path) -> None:
    home = Home(tmp_path)
    raw = write_login(tmp_path, login()).read_bytes()
    auth, read = home.load()
    assert read == raw
    assert auth.refresh_token == Secret("CANARY-rt-0")


def test_load_names_the_file_in_a_parse_error(tmp_path: Path) -> None:
    home = Home(tmp_path)
    write_login(tmp_path, b"[]")
    with pytest.raises(InvalidAuthError) as caught:
        home.load()
    assert caught.value.message == f"{home.auth_path} must be a JSON object, not an array"


def test_write_is_atomic_and_private(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with umask(0):
        home.write(b'{"x": 1}')
    assert home.read() == b'{"x": 1}'
    assert mode(home.auth_path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auth.json"]


@pytest.mark.parametrize(("raw", "usable"), [(b"[]", False), (b"{", False), (b'{"tokens": 5}', False),
                                             (json.dumps(login()).encode(), True)])
def test_parse_or_none(tmp_path: Path, raw: bytes, usable: bool) -> None:
    parsed = Home(tmp_path).parse_or_none(raw)
    assert (parsed is not None) is usable


def test_peek_refresh_token(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert home.peek_refresh_token() is None  # absent
    write_login(tmp_path, login(refresh_token="CANARY-rt-7"))
    assert home.peek_refresh_token() == Secret("CANARY-rt-7")
    write_login(tmp_path, b"not json")
    assert home.peek_refresh_token() is None
    write_login(tmp_path, {"OPENAI_API_KEY": "sk-CANARY-key"})
    assert home.peek_refresh_token() is None


def test_peek_refresh_token_of_a_symlink_is_none(tmp_path: Path) -> None:
    target = write_login(tmp_path / "real", login())
    home = Home(tmp_path / "h")
    home.path.mkdir()
    home.auth_path.symlink_to(target)
    assert home.peek_refresh_token() is None
    with pytest.raises(FileSystemError):
        home.read()


# -- state file --------------------------------------------------------------------------------------------------

def test_state_round_trip(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert home.state() == State()
    state = State(store="file:///s", version="3", not_before="2026-01-01T00:00:00.000000Z")
    home.save_state(state)
    assert home.state() == state
    assert mode(home.state_path) == 0o600


def test_check_state_file(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.check_state_file()  # absent: fine
    home.save_state(State(store="file:///s"))
    home.check_state_file()  # a regular file: fine


def test_check_state_file_refuses_a_symlink(tmp_path: Path) -> None:
    home = Home(tmp_path)
    (tmp_path / "elsewhere.json").write_text("{}")
    home.state_path.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(FileSystemError) as caught:
        home.check_state_file()
    assert caught.value.message == f"{home.state_path} is a symlink; refusing to follow it"
    assert caught.value.exit_code == ExitCode.FILESYSTEM


def test_check_state_file_refuses_a_directory(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.state_path.mkdir()
    with pytest.raises(FileSystemError) as caught:
        home.check_state_file()
    assert caught.value.message == f"{home.state_path} is not a regular file"


# -- config.toml -------------------------------------------------------------------------------------------------

def test_ensure_config_creates_the_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = Home(tmp_path)
    with umask(0), caplog.at_level(logging.INFO, logger="codex_ci"):
        home.ensure_config()
    assert home.config_path.read_bytes() == b'cli_auth_credentials_store = "file"\n' == CONFIG_LINE.encode()
    assert mode(home.config_path) == 0o600
    assert caplog.messages == [f'created {home.config_path} with cli_auth_credentials_store = "file"']
    assert home.credentials_store() == "file"


@pytest.mark.parametrize("store", ["keyring", "auto"])
def test_ensure_config_warns_about_a_keyring(tmp_path: Path, caplog: pytest.LogCaptureFixture, store: str) -> None:
    home = Home(tmp_path)
    content = f'model = "x"\ncli_auth_credentials_store = "{store}"\n'
    home.config_path.write_text(content)
    with caplog.at_level(logging.INFO, logger="codex_ci"):
        home.ensure_config()
    assert home.config_path.read_text() == content  # never rewritten
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f'{home.config_path} sets cli_auth_credentials_store = "{store}": Codex would move the login '
                    'out of auth.json; set it to "file"')]


@pytest.mark.parametrize("content", ['cli_auth_credentials_store = "file"\n', 'model = "x"\n', "not = [toml\n", ""])
def test_ensure_config_leaves_other_configs_alone_quietly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str) -> None:
    home = Home(tmp_path)
    home.config_path.write_text(content)
    with caplog.at_level(logging.INFO, logger="codex_ci"):
        home.ensure_config()
    assert home.config_path.read_text() == content
    assert caplog.messages == []


@pytest.mark.parametrize(("content", "expected"), [
    (None, None),
    (b"", None),
    (b'model = "x"\n', None),
    (b'cli_auth_credentials_store = "file"\n', "file"),
    (b'cli_auth_credentials_store = "keyring"\n', "keyring"),
    (b'cli_auth_credentials_store = "auto"\n', "auto"),
    (b"cli_auth_credentials_store = 5\n", None),
    (b"cli_auth_credentials_store = [\n", "invalid"),
    (b'cli_auth_credentials_store = "\xff"\n', "invalid"),
    (b"[profiles]\ncli_auth_credentials_store = 'keyring'\n", None),  # a table's key is not the top-level one
])
def test_credentials_store(tmp_path: Path, content: bytes | None, expected: str | None) -> None:
    home = Home(tmp_path)
    if content is not None:
        home.config_path.write_bytes(content)
    assert home.credentials_store() == expected


def test_is_seeded(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert home.is_seeded() is False
    write_login(tmp_path, login())
    assert home.is_seeded() is False
    home.ensure_config()
    assert home.is_seeded() is True


def test_is_seeded_refuses_a_symlinked_config(tmp_path: Path) -> None:
    home = Home(tmp_path)
    write_login(tmp_path, login())
    (tmp_path / "real.toml").write_text(CONFIG_LINE)
    home.config_path.symlink_to(tmp_path / "real.toml")
    with pytest.raises(FileSystemError) as caught:
        home.is_seeded()
    assert caught.value.message == f"{home.config_path} is a symlink; refusing to follow it"
