"""A JSON file with a version counter, written by compare-and-set under a flock.

For ``scripts/demo`` and for self-hosted runners that share a disk. Stored as
``{"format": 1, "version": N, "value": "<auth.json text>"}``, mode 0600.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from codex_ci.errors import ConfigError, FileSystemError, StoreConflict, StoredValueError, StoreError
from codex_ci.files import make_private_dirs, read_file, write_atomic
from codex_ci.locks import Flock
from codex_ci.stores.base import Store, Versioned


class FileStore:
    compare_and_set = True
    missing_hint = None

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    @property
    def key(self) -> str:
        return f"file://{os.path.realpath(self.path)}"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            with Flock(self.path.with_name(self.path.name + ".lock"), timeout=30):
                yield
        except FileSystemError as exc:
            raise StoreError(f"cannot use {self.url}: {exc.message}") from None

    def _load(self) -> Versioned | None:
        raw = read_file(self.path)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            version, value = data["version"], data["value"]
            if isinstance(version, bool) or not isinstance(version, int) or not isinstance(value, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError, UnicodeError):
            raise StoredValueError(f"{self.url} is not a codex-ci file store (or it is damaged)") from None
        return Versioned(value, str(version))

    def read(self) -> Versioned | None:
        try:
            info = self.path.parent.stat()
        except FileNotFoundError:
            return None  # no directory yet: no secret yet (write creates both)
        except OSError as exc:
            raise StoreError(f"cannot use {self.url}: {exc.strerror or type(exc).__name__}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(f"cannot use {self.url}: {self.path.parent} is not a directory")
        with self._locked():
            return self._load()

    def write(self, value: str, expected: str | None) -> str:
        try:
            make_private_dirs(self.path.parent)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {self.url}: {exc.strerror}") from None
        with self._locked():
            current = self._load()
            if (current.version if current else None) != expected:
                raise StoreConflict(f"{self.url} changed (expected version {expected}, found "
                                    f"{current.version if current else 'none'})")
            version = int(expected or 0) + 1
            data = json.dumps({"format": 1, "version": version, "value": value}, ensure_ascii=False)
            write_atomic(self.path, data.encode("utf-8", "surrogateescape"))
        return str(version)

    def check_writable(self) -> None:
        """Compare-and-set: a write that fails loses nothing the lease does not protect."""

    def sibling(self, suffix: str) -> Store:
        return FileStore(self.path.with_name(f"{self.path.name}.{suffix}"))


def open_store(location: str, env: Mapping[str, str]) -> FileStore:
    try:
        path = Path(location).expanduser().absolute()
    except RuntimeError:  # ~user that does not exist
        raise ConfigError("the file:// store path names an unknown user's home") from None
    if not path.name or path == path.parent or location.endswith("/"):
        raise ConfigError("a file:// store must name a file, not a directory")
    return FileStore(path)
