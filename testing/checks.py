"""What every test and harness run checks and scrubs: the environment variables that would change what the CLI
does, that no canary token and no JWT reaches any output, whether a process holds a lock; and a umask for a block."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}")
# Variables that would change what the CLI does; tests set what they need explicitly.
SCRUBBED = (
    "CODEX_HOME", "CODEX_AUTH_JSON", "CODEX_REFRESH_TOKEN_URL_OVERRIDE", "CODEX_APP_SERVER_LOGIN_CLIENT_ID",
    "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV", "CODEX_CA_CERTIFICATE",
    "CODEX_CI_MIN_TTL", "CODEX_CI_LOCK_TIMEOUT", "CODEX_API_KEY", "CODEX_ACCESS_TOKEN",
)


def assert_no_secrets(*texts: str) -> None:
    """No canary value and no JWT in any of ``texts`` (``::add-mask::`` lines are the masking protocol)."""
    for text in texts:
        kept = "\n".join(line for line in text.splitlines() if not line.startswith("::add-mask::"))
        assert "CANARY" not in kept, f"a canary token leaked: {kept!r}"
        assert not JWT.search(kept), f"a JWT leaked: {kept!r}"


def flock_held(path: Path) -> bool:
    """True when another process holds an flock on ``path`` (probed without blocking; a probe that gets the lock
    releases it at once)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases it
    return False


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """Run the block with this process's umask set to ``value``."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)
