"""CODEX_HOME on disk: the flocks Codex uses (auth.lock, then auth.json.lock), atomic writes, permissions, symlink
refusal."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from types import TracebackType

from codex_ci.errors import FileSystemError, LockTimeoutError

log = logging.getLogger("codex_ci")

AUTH_NAME = "auth.json"
LOCK_NAME = "auth.json.lock"
OUTER_LOCK_NAME = "auth.lock"
MAX_READ = 4 * 1024 * 1024
SAY_WAITING = 2.0  # a lock wait longer than this is said once


def resolve_home(option: str | None) -> Path:
    """--codex-home, else $CODEX_HOME, else ~/.codex (as Codex resolves it). A value given with a literal ``~`` (as
    YAML ``env:`` passes it: no shell expands it) is refused, because Codex would not expand it either."""
    value = option or os.environ.get("CODEX_HOME")
    if value and value.startswith("~"):
        from codex_ci.errors import ConfigError

        raise ConfigError(
            f"CODEX_HOME is {value!r}, with a literal ~ that no shell expanded: Codex would not expand it either",
            hint="Give the full path, e.g. ${{ runner.temp }}/codex-home or $HOME/.codex in a shell.")
    try:
        return Path(value or "~/.codex").expanduser()
    except RuntimeError:  # ~ with no home directory
        raise FileSystemError("the default CODEX_HOME (~/.codex) cannot be resolved: HOME is not set") from None


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def ensure_home(home: Path, *, create: bool) -> None:
    """Check CODEX_HOME is a directory; create it 0700 (umask ignored) when asked and missing."""
    try:
        info = home.stat()
    except FileNotFoundError:
        if not create:
            raise FileSystemError(f"CODEX_HOME {home} does not exist") from None
        try:
            make_private_dirs(home)
        except OSError as exc:
            raise FileSystemError(f"cannot create CODEX_HOME {home}: {_why(exc)}") from None
        log.info("created %s (0700)", home)
        return
    except OSError as exc:
        raise FileSystemError(f"cannot use CODEX_HOME {home}: {_why(exc)}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise FileSystemError(f"CODEX_HOME {home} is not a directory")


def make_private_dirs(path: Path) -> None:
    """mkdir -p where every directory created (parents too) is 0700 whatever the umask: a world-writable parent
    would let another user swap the directory for one of their own."""
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            if directory.is_dir():
                continue  # another process made it meanwhile
            raise  # a dangling symlink, say
        os.chmod(directory, 0o700)


def is_regular_file(path: Path) -> bool:
    """True if ``path`` exists as a regular file, False if absent; raise for a symlink or anything else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise FileSystemError(f"cannot use {path}: {_why(exc)}") from None
    if stat.S_ISLNK(info.st_mode):
        raise FileSystemError(f"{path} is a symlink; refusing to follow it")
    if not stat.S_ISREG(info.st_mode):
        raise FileSystemError(f"{path} is not a regular file")
    return True


def _open_lock_file(path: Path) -> int:
    """Open (creating 0600) a lock file, refusing a symlink: an unusable directory fails now, not at the timeout."""
    is_regular_file(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileSystemError(f"{path} is a symlink; refusing to follow it") from None
        raise FileSystemError(f"cannot create {path}: {_why(exc)}") from None
    if os.fstat(fd).st_uid == os.geteuid():
        os.fchmod(fd, 0o600)
    return fd


class Flock:
    """An exclusive flock on a lock file that is created 0600 and never deleted.

    Deleting a lock file would let two processes both "hold" it, so it stays. It fails closed on filesystems
    without flock instead of falling back to a lock that Codex would ignore.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._lock: object | None = None

    def __enter__(self) -> Flock:
        from filelock import Timeout, UnixFileLock  # here, so that a seed that finds auth.json never loads it

        os.close(_open_lock_file(self.path))
        lock = UnixFileLock(
            self.path, timeout=self.timeout, mode=0o600, thread_local=False, fallback_to_soft=False,
            preserve_lock_file=True, poll_interval=0.02,
        )
        started = time.monotonic()
        try:
            try:
                lock.acquire(timeout=min(self.timeout, SAY_WAITING))
            except Timeout:
                if self.timeout <= SAY_WAITING:
                    raise
                log.info("waiting for %s: another process holds it (Codex, or another codex-ci)", self.path)
                lock.acquire(timeout=max(0.0, self.timeout - (time.monotonic() - started)))
        except Timeout:
            raise LockTimeoutError(f"timed out after {self.timeout:g}s waiting for {self.path}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FileSystemError(f"{self.path} is a symlink; refusing to follow it") from None
            raise FileSystemError(f"cannot lock {self.path}: {_why(exc)}") from None
        waited = time.monotonic() - started
        if waited > 0.05:
            log.info("waited %.2fs for %s", waited, self.path)
        self._lock = lock
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._lock is not None:
            self._lock.release()  # type: ignore[attr-defined]
            self._lock = None


class AuthLock:
    """Codex's two locks in Codex's order: ``auth.lock`` (blocking), then ``auth.json.lock``.

    Codex 0.169+ takes ``auth.lock`` after its refresh POST, then tries ``auth.json.lock`` without blocking for
    5 s and, failing that, throws its new tokens away and replays the spent refresh token. Holding both makes a
    Codex that refreshes meanwhile wait quietly on ``auth.lock`` instead, and then see the file changed. Every
    read-modify-write of auth.json takes this; ``timeout`` bounds the wait for both together.
    """

    def __init__(self, home: Path, timeout: float) -> None:
        self.home = home
        self.timeout = timeout
        self._held: list[Flock] = []

    def __enter__(self) -> AuthLock:
        deadline = time.monotonic() + self.timeout
        try:
            for name in (OUTER_LOCK_NAME, LOCK_NAME):
                lock = Flock(self.home / name, max(0.0, deadline - time.monotonic()))
                try:
                    lock.__enter__()
                except LockTimeoutError:
                    raise LockTimeoutError(f"timed out after {self.timeout:g}s waiting for {lock.path}") from None
                self._held.append(lock)
        except BaseException:
            self._release()
            raise
        return self

    def _release(self) -> None:
        while self._held:
            self._held.pop().__exit__(None, None, None)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()


class SharedAuthLock:
    """A shared flock on ``auth.json.lock``, for reading only: it excludes every writer (Codex and codex-ci take
    the lock exclusively) but not other readers, so any number of ``status`` runs read at once."""

    def __init__(self, home: Path, timeout: float) -> None:
        self.path = home / LOCK_NAME
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> SharedAuthLock:
        import fcntl

        fd = _open_lock_file(self.path)
        deadline, delay = time.monotonic() + self.timeout, 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeoutError(f"timed out after {self.timeout:g}s waiting for {self.path}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            except OSError as exc:
                os.close(fd)
                raise FileSystemError(f"cannot lock {self.path}: {_why(exc)}") from None
        self._fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def read_file(path: Path) -> bytes | None:
    """The bytes of a regular file, None if absent. Refuses symlinks and directories; caps the size."""
    if not is_regular_file(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileSystemError(f"{path} is a symlink; refusing to follow it") from None
        raise FileSystemError(f"cannot read {path}: {_why(exc)}") from None
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_READ + 1)
        except OSError as exc:
            raise FileSystemError(f"cannot read {path}: {_why(exc)}") from None
    if len(data) > MAX_READ:
        raise FileSystemError(f"{path} is larger than {MAX_READ} bytes")
    return data


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` 0600 by temp file, fsync and rename in the same directory.

    Callers hold the lock that guards ``path``, so any temp file of an earlier writer that was killed mid-write
    is stale and is removed first. A symlink or directory at ``path`` is refused; on any failure the old file
    stays as it was and the temp file is removed.
    """
    is_regular_file(path)
    directory = path.parent
    stale_name = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")  # only mkstemp's names for this file
    for stale in directory.glob(f".{path.name}.*.tmp"):
        if stale_name.fullmatch(stale.name):
            with contextlib.suppress(OSError):
                stale.unlink()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise FileSystemError(f"cannot write in {directory}: {_why(exc)}") from None
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise FileSystemError(f"cannot write {path}: {_why(exc)}") from None
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # the file is in place; a directory fsync is best effort on some filesystems


def mode_of(path: Path) -> int | None:
    """Permission bits of ``path`` (not following links), None if absent."""
    try:
        return stat.S_IMODE(path.lstat().st_mode)
    except OSError:
        return None
