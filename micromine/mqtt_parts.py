"""The paho-free pieces of :mod:`micromine.mqtt`: broker URLs, backoff, the inbox.

Kept apart so they can be unit-tested (and reused by tools) without a broker or a network
thread; :mod:`micromine.mqtt` re-exports everything public here.
"""

from __future__ import annotations

import enum
import random
import threading
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_PORTS",
    "Backoff",
    "BrokerAddress",
    "Inbox",
    "Incoming",
    "LinkEvent",
    "LinkEventKind",
    "parse_broker_url",
]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 9001, "wss": 443}
_TLS_SCHEMES = {"mqtts", "wss"}
_WS_SCHEMES = {"ws", "wss"}
_OTHER_TLS_NAMES = {"ssl", "tls"}
_MAX_PORT = 65535
_URL_SHAPE = "mqtt[s]://HOST[:PORT] or ws[s]://HOST[:PORT][/PATH]"


# --- broker addresses ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker listens.  ``path`` is only meaningful for WebSockets ("/" or more)."""

    scheme: str  # "mqtt", "mqtts", "ws" or "wss"
    host: str
    port: int
    path: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme in _TLS_SCHEMES

    @property
    def websocket(self) -> bool:
        return self.scheme in _WS_SCHEMES

    @property
    def url(self) -> str:
        """Canonical form, for logs and for handing the address to another process."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path if self.websocket else ''}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``mqtt[s]://host[:port]`` or ``ws[s]://host[:port][/path]``; ValueError says why not.

    Credentials, queries and fragments are rejected rather than ignored: silently dropping a
    password from a URL would make an operator believe it is being used.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"broker URL is empty; expected {_URL_SHAPE}")
    text = url.strip()
    if "://" not in text:
        raise ValueError(f"broker URL {url!r} has no scheme; expected {_URL_SHAPE}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in _OTHER_TLS_NAMES:
        raise ValueError(f"broker URL {url!r}: for TLS write mqtts:// (or wss://)")
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"broker URL {url!r}: unsupported scheme {scheme!r}; use mqtt, mqtts, ws or wss"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"broker URL {url!r}: credentials in the URL are not supported")
    if parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r}: query strings and fragments are not allowed")
    host = parts.hostname
    if not host:
        raise ValueError(f"broker URL {url!r} has no host; expected {_URL_SHAPE}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker URL {url!r}: port must be a number in 1..{_MAX_PORT}") from None
    if port is None:
        port = DEFAULT_PORTS[scheme]
    if not 1 <= port <= _MAX_PORT:
        raise ValueError(f"broker URL {url!r}: port must be in 1..{_MAX_PORT}")
    if scheme not in _WS_SCHEMES:
        if parts.path not in ("", "/"):
            raise ValueError(f"broker URL {url!r}: {scheme}:// URLs take no path (only ws:// does)")
        return BrokerAddress(scheme, host, port)
    return BrokerAddress(scheme, host, port, parts.path or "/")


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
