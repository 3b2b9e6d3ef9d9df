"""SIGINT and SIGTERM as ordinary events: a cancelled CI job stops cleanly, and never in the middle of a rotation.

GitHub cancels a job with SIGINT, then SIGTERM about 7.5 s later, then SIGKILL about 2.5 s after that. Outside a
rotation either signal raises :class:`Interrupted` (exit 130 or 143), so locks and leases are released by the
usual ``finally`` blocks. Inside :func:`rotation` — from just before the refresh POST until the new login is
written (and, for the distributed refresh, saved to the store) — both are deferred: the rotation finishes, then
the process exits with the signal's code. :func:`deadline_after_signal` tells a request in flight how long it
may still take once a signal has come, so that it ends inside that grace period.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

from codex_ci.errors import Interrupted

log = logging.getLogger("codex_ci")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Once a signal came, a request in flight may take this long (GitHub sends SIGKILL ~10 s after SIGINT, and the
# new login must still be written and saved after the answer).
GRACE_SECONDS = 5.0

_depth = 0
_pending: int | None = None
_pending_at: float | None = None


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending, _pending_at
    if _depth == 0:
        raise Interrupted(signum)
    if _pending is None:
        _pending, _pending_at = signum, time.monotonic()
        log.warning("%s received during a rotation: finishing it and saving the new login first",
                    signal.Signals(signum).name)


def install() -> None:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` (from the main thread only; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handler)


def deadline_after_signal() -> float | None:
    """time.monotonic() by which work in a rotation should end because a signal came; None if none came."""
    return None if _pending_at is None else _pending_at + GRACE_SECONDS


def pending() -> int | None:
    return _pending


@contextlib.contextmanager
def rotation() -> Iterator[None]:
    """Defer SIGINT and SIGTERM for the block; raise :class:`Interrupted` after it if one came meanwhile.

    Nested blocks defer until the outermost one ends. Handlers are installed only where Python allows it (the
    main thread); in other threads the block runs unguarded, as before.
    """
    global _depth, _pending, _pending_at
    guarded = threading.current_thread() is threading.main_thread()
    previous = {}
    if guarded and _depth == 0:
        previous = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    _depth += 1
    failed = False
    try:
        yield
    except BaseException:
        failed = True  # the block's own error says more than the signal would (an unsaved rotation, say)
        raise
    finally:
        _depth -= 1
        if guarded and _depth == 0:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            came, _pending, _pending_at = _pending, None, None
            if came is not None and not failed:
                raise Interrupted(came, "after finishing the rotation under way and saving the new login")
