"""Files in CODEX_HOME on disk: resolving the home, atomic 0600 writes, bounded reads, private directories, symlink
refusal. Codex's locks are in :mod:`codex_ci.locks`."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import tempfile
from pathlib import Path

from codex_ci.errors import FileSystemError

log = logging.getLogger("codex_ci")

MAX_READ = 4 * 1024 * 1024


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


def why(exc: OSError) -> str:
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
            raise FileSystemError(f"cannot create CODEX_HOME {home}: {why(exc)}") from None
        log.info("created %s (0700)", home)
        return
    except OSError as exc:
        raise FileSystemError(f"cannot use CODEX_HOME {home}: {why(exc)}") from None
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
        raise FileSystemError(f"cannot use {path}: {why(exc)}") from None
    if stat.S_ISLNK(info.st_mode):
        raise FileSystemError(f"{path} is a symlink; refusing to follow it")
    if not stat.S_ISREG(info.st_mode):
        raise FileSystemError(f"{path} is not a regular file")
    return True


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
        raise FileSystemError(f"cannot read {path}: {why(exc)}") from None
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_READ + 1)
        except OSError as exc:
            raise FileSystemError(f"cannot read {path}: {why(exc)}") from None
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
        raise FileSystemError(f"cannot write in {directory}: {why(exc)}") from None
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
        raise FileSystemError(f"cannot write {path}: {why(exc)}") from None
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
