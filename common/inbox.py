"""What the MQTT link hands its owner, and how it waits: the inbox (two lanes, one
bound), the messages and link events in it, and the reconnect backoff.

Paho-free, so it is unit-tested without a broker or a network thread;
:mod:`micromine.common.mqtt` re-exports everything public here.
"""

from __future__ import annotations

import enum
import random
import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["Backoff", "Inbox", "Incoming", "LinkEvent", "LinkEventKind"]

# --- hand-off types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incoming:
    """One application message, stamped when paho handed it over (for latency metrics)."""

    topic: str
    payload: bytes
    received_monotonic: float
    retained: bool = False


class LinkEventKind(enum.Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A connection state change, queued in order with the messages around it."""

    kind: LinkEventKind
    monotonic: float
    reason: str = ""


# --- backoff and inbox ---------------------------------------------------------------------------


class Backoff:
    """Decorrelated-jitter exponential backoff (AWS architecture blog, 2015).

    Each delay is uniform in [min, 3 x previous], capped at max: it grows roughly
    exponentially while spreading a fleet of clients that failed at the same instant.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self._min = min_s
        self._max = max_s
        self._rng = rng or random.Random()
        self._prev = min_s

    def next(self) -> float:
        self._prev = min(self._max, self._rng.uniform(self._min, self._prev * 3))
        return self._prev

    def reset(self) -> None:
        self._prev = self._min


class Inbox:
    """Bounded for messages, unbounded for (rare) link events; FIFO across both.

    A ``queue.Queue`` cannot do this: its bound applies to every item, and a dropped
    CONNECTED event would leave the consumer never re-announcing itself.

    Messages on a topic starting with one of ``urgent_prefixes`` go first, FIFO among
    themselves: a ledger node's consensus messages must not wait behind thousands of
    submissions and verdicts while its round timeouts run (MQTT orders messages only
    per topic, so no order the protocol relies on changes).
    """

    def __init__(self, max_messages: int, urgent_prefixes: tuple[str, ...] = ()) -> None:
        self._items: deque[Incoming | LinkEvent] = deque()
        self._urgent: deque[Incoming] = deque()
        self._urgent_prefixes = urgent_prefixes
        self._messages = 0
        self._max = max_messages
        self._cond = threading.Condition(threading.Lock())
        self._woken = False

    def put_message(self, item: Incoming) -> bool:
        urgent = bool(self._urgent_prefixes) and item.topic.startswith(self._urgent_prefixes)
        with self._cond:
            if self._messages >= self._max:
                return False
            (self._urgent if urgent else self._items).append(item)
            self._messages += 1
            self._cond.notify()
            return True

    def put_event(self, event: LinkEvent) -> None:
        with self._cond:
            self._items.append(event)
            self._cond.notify()

    def get(self, timeout: float | None) -> Incoming | LinkEvent | None:
        with self._cond:
            if not (self._items or self._urgent) and not self._woken:
                self._cond.wait_for(
                    lambda: bool(self._items or self._urgent) or self._woken, timeout
                )
            if self._woken:
                self._woken = False
                return None
            if self._urgent:
                self._messages -= 1
                return self._urgent.popleft()
            if not self._items:
                return None
            item = self._items.popleft()
            if isinstance(item, Incoming):
                self._messages -= 1
            return item

    def wake(self) -> None:
        """Make a blocked :meth:`get` return None.  Safe in a signal handler: it never blocks
        (if the lock is busy, the waiter is not waiting yet and will see its own flag)."""
        if self._cond.acquire(blocking=False):
            try:
                self._woken = True
                self._cond.notify_all()
            finally:
                self._cond.release()

    def __len__(self) -> int:
        return self._messages
