"""codex_ci.interrupts: SIGINT and SIGTERM become Interrupted (exit 130 / 143); inside ``rotation()`` they wait until
the block ends. Real signals sent to this process (os.kill), with codex-ci's handler installed and the previous
handlers put back after each test."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from codex_ci import interrupts
from codex_ci.errors import ExitCode, Interrupted


class Clock:
    """Stands in for the ``time`` module in codex_ci.interrupts."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def restore_handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The handlers as they were, put back after the test; the module's state starts (and is left) clean."""
    monkeypatch.setattr(interrupts, "_depth", 0)
    monkeypatch.setattr(interrupts, "_pending", None)
    monkeypatch.setattr(interrupts, "_pending_at", None)
    saved = {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def send(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs before os.kill returns to this frame


def ignore(signum: int, frame: FrameType | None) -> None:
    """A stand-in for whatever handler a caller had before."""


# -- outside a rotation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM,
                                                                                     ExitCode.TERMINATED)])
def test_install_turns_a_signal_into_interrupted(signum: int, code: ExitCode) -> None:
    interrupts.install()
    with pytest.raises(Interrupted) as caught:
        send(signum)
    assert (caught.value.signum, caught.value.exit_code) == (signum, code)
    assert caught.value.message == f"interrupted by {signal.Signals(signum).name}"
    assert interrupts.pending() is None
    assert interrupts.deadline_after_signal() is None


def test_install_outside_the_main_thread_changes_nothing() -> None:
    signal.signal(signal.SIGINT, ignore)
    signal.signal(signal.SIGTERM, ignore)
    worker = threading.Thread(target=interrupts.install)
    worker.start()
    worker.join()
    assert signal.getsignal(signal.SIGINT) is ignore
    assert signal.getsignal(signal.SIGTERM) is ignore


def test_nothing_pending_without_a_signal() -> None:
    assert interrupts.pending() is None
    assert interrupts.deadline_after_signal() is None
    with interrupts.rotation():
        assert interrupts.pending() is None
        assert interrupts.deadline_after_signal() is None


# -- inside a rotation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM,
                                                                                     ExitCode.TERMINATED)])
def test_a_signal_in_a_rotation_is_raised_when_the_block_ends(signum: int, code: ExitCode) -> None:
    finished = []
    with pytest.raises(Interrupted) as caught, interrupts.rotation():
        send(signum)
        assert interrupts.pending() == signum
        finished.append("the rotation")
    assert finished == ["the rotation"]
    assert (caught.value.signum, caught.value.exit_code) == (signum, code)
    assert caught.value.message == (f"interrupted by {signal.Signals(signum).name} (after finishing the rotation "
                                    "under way and saving the new login)")
    assert interrupts.pending() is None
    assert interrupts.deadline_after_signal() is None


def test_the_grace_period_starts_at_the_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(1000.0)
    monkeypatch.setattr(interrupts, "time", clock)
    with pytest.raises(Interrupted), interrupts.rotation():
        clock.now = 1234.5
        send(signal.SIGINT)
        clock.now = 1236.0
        assert interrupts.deadline_after_signal() == 1234.5 + interrupts.GRACE_SECONDS == 1239.5


def test_the_first_signal_counts_and_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="codex_ci"), pytest.raises(Interrupted) as caught, \
            interrupts.rotation():
        send(signal.SIGINT)
        send(signal.SIGTERM)
        send(signal.SIGINT)
        assert interrupts.pending() == signal.SIGINT
    assert caught.value.exit_code == ExitCode.INTERRUPTED
    assert [r.getMessage() for r in caplog.records] == [
        "SIGINT received during a rotation: finishing it and saving the new login first"]


def test_nested_rotations_defer_until_the_outermost_ends() -> None:
    steps = []
    with pytest.raises(Interrupted), interrupts.rotation():
        with interrupts.rotation():
            send(signal.SIGTERM)
            steps.append("inner")
        steps.append("outer, after the inner block ended")
        assert interrupts.pending() == signal.SIGTERM
    assert steps == ["inner", "outer, after the inner block ended"]


def test_the_blocks_own_error_wins_over_the_signal() -> None:
    with pytest.raises(ValueError, match="unsaved"), interrupts.rotation():
        send(signal.SIGINT)
        raise ValueError("unsaved")
    assert interrupts.pending() is None  # forgotten, not raised later
    assert interrupts.deadline_after_signal() is None


def test_a_rotation_puts_the_previous_handlers_back() -> None:
    signal.signal(signal.SIGINT, ignore)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with interrupts.rotation():
        assert signal.getsignal(signal.SIGINT) is interrupts._handler
        assert signal.getsignal(signal.SIGTERM) is interrupts._handler
    assert signal.getsignal(signal.SIGINT) is ignore
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_after_a_rotation_a_signal_raises_at_once_again() -> None:
    interrupts.install()
    with interrupts.rotation():
        pass
    with pytest.raises(Interrupted) as caught:
        send(signal.SIGTERM)
    assert caught.value.message == "interrupted by SIGTERM"


def test_a_rotation_outside_the_main_thread_runs_unguarded() -> None:
    signal.signal(signal.SIGINT, ignore)
    seen: list[object] = []

    def work() -> None:
        with interrupts.rotation():
            seen.append(signal.getsignal(signal.SIGINT))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [ignore]  # no handler was installed from the worker thread
    assert signal.getsignal(signal.SIGINT) is ignore
    assert interrupts._depth == 0
