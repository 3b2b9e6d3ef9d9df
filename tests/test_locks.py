"""codex_ci.locks: Codex's flocks on CODEX_HOME. Another holder is an ``fcntl.flock`` on a descriptor of its own (flock
locks belong to an open file, so one process can play both sides); where a timeout is the expected outcome it is
short, and no test looks at how long anything took."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from codex_ci.errors import ExitCode, FileSystemError, LockTimeoutError
from codex_ci.locks import LOCK_NAME, OUTER_LOCK_NAME, AuthLock, Flock, SharedAuthLock
from testing.checks import flock_held, umask

SHORT = 0.2  # seconds: the wait when the lock is expected to stay taken


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@contextmanager
def held(path: Path, kind: int = fcntl.LOCK_EX) -> Iterator[None]:
    """Another holder of ``path`` (exclusive, or shared with ``fcntl.LOCK_SH``)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def can_take(path: Path, kind: int) -> bool:
    """Whether another holder could take ``path`` now (it lets go at once)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


# -- Flock -------------------------------------------------------------------------------------------------------

def test_flock_is_exclusive_while_held(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with Flock(path, SHORT) as lock:
        assert lock.path == path
        assert can_take(path, fcntl.LOCK_SH) is False
        assert can_take(path, fcntl.LOCK_EX) is False
    assert can_take(path, fcntl.LOCK_EX) is True


def test_flock_times_out_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with held(path), pytest.raises(LockTimeoutError) as caught, Flock(path, SHORT):
        pytest.fail("took a lock another process holds")
    assert caught.value.message == f"timed out after 0.2s waiting for {path}"
    assert caught.value.exit_code == ExitCode.LOCK_TIMEOUT == 7


def test_a_shared_holder_excludes_it_too(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with held(path, fcntl.LOCK_SH), pytest.raises(LockTimeoutError), Flock(path, SHORT):
        pytest.fail("took a lock a reader holds")


def test_a_second_flock_in_this_process_waits_too(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with Flock(path, SHORT), pytest.raises(LockTimeoutError), Flock(path, SHORT):
        pytest.fail("took the lock twice")


def test_flock_is_taken_once_the_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with held(path):
        pass
    with Flock(path, SHORT):
        assert flock_held(path)


def test_flock_creates_the_file_0600_and_never_deletes_it(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with umask(0), Flock(path, SHORT):
        assert mode(path) == 0o600
    assert path.exists()
    assert mode(path) == 0o600


def test_flock_makes_an_existing_lock_file_of_ours_0600(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    path.write_bytes(b"")
    path.chmod(0o666)
    with Flock(path, SHORT):
        pass
    assert mode(path) == 0o600


def test_flock_refuses_a_symlinked_lock_file(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    path = tmp_path / "x.lock"
    path.symlink_to(target)
    with pytest.raises(FileSystemError) as caught, Flock(path, SHORT):
        pytest.fail("locked through a symlink")
    assert caught.value.message == f"{path} is a symlink; refusing to follow it"
    assert caught.value.exit_code == ExitCode.FILESYSTEM
    assert not target.exists()  # nothing was created where the link points


def test_flock_refuses_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    path.mkdir()
    with pytest.raises(FileSystemError) as caught, Flock(path, SHORT):
        pytest.fail("locked a directory")
    assert caught.value.message == f"{path} is not a regular file"


def test_flock_in_a_missing_directory_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "x.lock"
    with pytest.raises(FileSystemError) as caught, Flock(path, 60):
        pytest.fail("locked in a missing directory")
    assert caught.value.message == f"cannot create {path}: No such file or directory"


# -- AuthLock ------------------------------------------------------------------------------------------------------

def test_auth_lock_holds_both_files_and_lets_both_go(tmp_path: Path) -> None:
    with AuthLock(tmp_path, SHORT):
        assert flock_held(tmp_path / OUTER_LOCK_NAME)
        assert flock_held(tmp_path / LOCK_NAME)
    assert not flock_held(tmp_path / OUTER_LOCK_NAME)
    assert not flock_held(tmp_path / LOCK_NAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auth.json.lock", "auth.lock"]  # kept, 0600
    assert (mode(tmp_path / "auth.lock"), mode(tmp_path / "auth.json.lock")) == (0o600, 0o600)


def test_auth_lock_waits_on_auth_lock_first(tmp_path: Path) -> None:
    """Codex's order: while auth.lock is held, auth.json.lock is not even opened."""
    with held(tmp_path / OUTER_LOCK_NAME), pytest.raises(LockTimeoutError) as caught, AuthLock(tmp_path, SHORT):
        pytest.fail("took auth.lock while another process held it")
    assert caught.value.message == f"timed out after 0.2s waiting for {tmp_path / 'auth.lock'}"
    assert not (tmp_path / LOCK_NAME).exists()


def test_auth_lock_lets_auth_lock_go_when_auth_json_lock_times_out(tmp_path: Path) -> None:
    with held(tmp_path / LOCK_NAME), pytest.raises(LockTimeoutError) as caught, AuthLock(tmp_path, SHORT):
        pytest.fail("took auth.json.lock while another process held it")
    assert caught.value.message == f"timed out after 0.2s waiting for {tmp_path / 'auth.json.lock'}"
    assert caught.value.exit_code == ExitCode.LOCK_TIMEOUT
    assert not flock_held(tmp_path / OUTER_LOCK_NAME)


def test_auth_lock_lets_auth_lock_go_when_auth_json_lock_is_a_symlink(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileSystemError), AuthLock(tmp_path, SHORT):
        pytest.fail("locked through a symlink")
    assert not flock_held(tmp_path / OUTER_LOCK_NAME)


def test_auth_lock_lets_both_go_on_an_error_in_the_block(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="in the block"), AuthLock(tmp_path, SHORT):
        raise RuntimeError("in the block")
    assert not flock_held(tmp_path / OUTER_LOCK_NAME)
    assert not flock_held(tmp_path / LOCK_NAME)


def test_auth_lock_excludes_a_second_auth_lock(tmp_path: Path) -> None:
    with AuthLock(tmp_path, SHORT), pytest.raises(LockTimeoutError) as caught, AuthLock(tmp_path, SHORT):
        pytest.fail("took the locks twice")
    assert caught.value.message == f"timed out after 0.2s waiting for {tmp_path / 'auth.lock'}"


# -- SharedAuthLock --------------------------------------------------------------------------------------------------

def test_readers_share_auth_json_lock(tmp_path: Path) -> None:
    with SharedAuthLock(tmp_path, SHORT) as first, SharedAuthLock(tmp_path, SHORT):
        assert first.path == tmp_path / LOCK_NAME
        assert can_take(tmp_path / LOCK_NAME, fcntl.LOCK_SH) is True
        assert can_take(tmp_path / LOCK_NAME, fcntl.LOCK_EX) is False
    assert can_take(tmp_path / LOCK_NAME, fcntl.LOCK_EX) is True
    assert not (tmp_path / OUTER_LOCK_NAME).exists()  # a reader leaves auth.lock alone


def test_a_reader_excludes_a_writer(tmp_path: Path) -> None:
    with SharedAuthLock(tmp_path, SHORT), pytest.raises(LockTimeoutError) as caught, AuthLock(tmp_path, SHORT):
        pytest.fail("a writer took the lock while a reader held it")
    assert caught.value.message == f"timed out after 0.2s waiting for {tmp_path / 'auth.json.lock'}"


def test_a_writer_excludes_a_reader(tmp_path: Path) -> None:
    with held(tmp_path / LOCK_NAME), pytest.raises(LockTimeoutError) as caught, SharedAuthLock(tmp_path, SHORT):
        pytest.fail("a reader took the lock while a writer held it")
    assert caught.value.message == f"timed out after 0.2s waiting for {tmp_path / 'auth.json.lock'}"
    assert caught.value.exit_code == ExitCode.LOCK_TIMEOUT


def test_a_reader_takes_it_once_the_writer_lets_go(tmp_path: Path) -> None:
    with AuthLock(tmp_path, SHORT):
        pass
    with SharedAuthLock(tmp_path, SHORT):
        assert can_take(tmp_path / LOCK_NAME, fcntl.LOCK_EX) is False


def test_a_reader_creates_the_lock_file_0600_and_keeps_it(tmp_path: Path) -> None:
    with umask(0), SharedAuthLock(tmp_path, SHORT):
        pass
    assert mode(tmp_path / LOCK_NAME) == 0o600


def test_a_reader_refuses_a_symlinked_lock_file(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileSystemError) as caught, SharedAuthLock(tmp_path, SHORT):
        pytest.fail("locked through a symlink")
    assert caught.value.message == f"{tmp_path / LOCK_NAME} is a symlink; refusing to follow it"
    assert not (tmp_path / "elsewhere").exists()
