"""Codex's own locks on CODEX_HOME: ``auth.lock`` then ``auth.json.lock``, exclusive for every read-modify-write
of auth.json, and a shared ``auth.json.lock`` for readers (see REFERENCE: how Codex locks and writes)."""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path
from types import TracebackType

from codex_ci.errors import FileSystemError, LockTimeoutError
from codex_ci.files import is_regular_file, why

log = logging.getLogger("codex_ci")

LOCK_NAME = "auth.json.lock"
OUTER_LOCK_NAME = "auth.lock"
SAY_WAITING = 2.0  # a lock wait longer than this is said once


def _open_lock_file(path: Path) -> int:
    """Open (creating 0600) a lock file, refusing a symlink: an unusable directory fails now, not at the timeout."""
    is_regular_file(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileSystemError(f"{path} is a symlink; refusing to follow it") from None
        raise FileSystemError(f"cannot create {path}: {why(exc)}") from None
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
            raise FileSystemError(f"cannot lock {self.path}: {why(exc)}") from None
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
                raise FileSystemError(f"cannot lock {self.path}: {why(exc)}") from None
        self._fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
