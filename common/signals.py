"""SIGTERM means what Ctrl-C means: how a micromine command is asked to stop.

A terminal stops a command with SIGINT; ``timeout``, systemd, ``docker stop`` and CI
runners stop it with SIGTERM.  Every command treats the two alike.

| call | what it does |
| --- | --- |
| ``sigterm_as_sigint()`` | a block in which SIGTERM raises ``KeyboardInterrupt`` |
| ``@until_stopped`` | a command that runs until stopped: a stop signal is exit 0 |
| ``StopSignals`` | the first signal raises, later ones only count: cleanup runs |

``@until_stopped`` marks the broker, the ledger, the agent, the load generator,
``blocks watch`` and devnet.  ``StopSignals`` is for a run with something to do after
the signal (devnet stops its children, the load generator prints its report): the first
SIGINT or SIGTERM raises ``KeyboardInterrupt`` and no later one does, so that work cannot
be cut short.  A later signal is not a request to hurry either: ``timeout`` sends its
signal twice (to the command, then to its process group), so "a second Ctrl-C" cannot be
told from one; the stop is bounded instead (micromine/processes.py).

Exit codes: a command that runs until stopped exits ``EXIT_STOPPED`` (0) once stopped
and cleaned up; a one-shot command (``tx send``, ``devices approve``, ...) stopped
before it finished exits ``EXIT_INTERRUPTED`` (130, the shell's code for SIGINT).

Python runs signal handlers in the main thread only, so everything here acts there and
does nothing elsewhere (a test that runs a command in a thread keeps its own handlers).
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any, ParamSpec

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_STOPPED",
    "STOP_SIGNALS",
    "StopSignals",
    "sigterm_as_sigint",
    "until_stopped",
]

EXIT_STOPPED = 0
EXIT_INTERRUPTED = 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

P = ParamSpec("P")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """Within the block SIGTERM raises ``KeyboardInterrupt``; the old handler comes back
    after it.  A handler the code inside installs (the ledger's, the agent's) wins."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def until_stopped(run: Callable[P, int]) -> Callable[P, int]:
    """A command that runs until it is stopped: SIGINT or SIGTERM end it, and that
    end is a stop (exit 0), also when it comes before the command's own handlers are in
    place (a process stopped while it starts)."""

    @functools.wraps(run)
    def run_until_stopped(*args: P.args, **kwargs: P.kwargs) -> int:
        with sigterm_as_sigint():
            try:
                return run(*args, **kwargs)
            except KeyboardInterrupt:
                return EXIT_STOPPED

    return run_until_stopped


class StopSignals:
    """SIGINT and SIGTERM for a run with a cleanup that must not be cut short.

    The first signal raises ``KeyboardInterrupt`` (so the run unwinds to its cleanup,
    as after Ctrl-C) and disarms; :meth:`disarm` does the same when the run ends by
    itself.  Disarmed, a signal is only counted (``received``): the cleanup goes on.
    :meth:`deferred` holds a signal back over a few lines that must not be split (a child
    started but not yet recorded).

    It does not stop anything itself, and does nothing outside the main thread.
    """

    def __init__(self) -> None:
        self.received = 0
        self.armed = True
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if _in_main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def disarm(self) -> None:
        """The run is over: from now on a signal is counted, never raised."""
        self.armed = False

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal inside the block raises at its end instead of in its middle."""
        armed, before = self.armed, self.received
        self.armed = False
        try:
            yield
        finally:
            if armed and self.received == before:
                self.armed = True  # none came: the next one raises by itself
        if armed and self.received > before:
            self.armed = False
            raise KeyboardInterrupt

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
