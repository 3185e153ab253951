"""Workarounds for amqtt 0.12.1 behaviour that breaks micromine, each one covered by a test.

Longer than our other modules on purpose: the fixes must be reviewed together when amqtt
changes, so they stay in one file, each under its number below.

Kept apart from :mod:`micromine.broker.embedded` so that upgrading amqtt means reviewing
exactly this file: every fix overrides a *private* ``Broker`` method, which is only safe
because pyproject pins ``amqtt==0.12.1``.  Each fix names the test in
``tests/test_broker.py`` that fails without it (the same test passes on mosquitto).

1. Retained-message leak on connect.  ``Broker._handle_client_session`` sends every new
   client the retained messages matching *every other client's* subscription filters, even
   though the new client subscribed to nothing (mosquitto sends nothing).  A device would
   receive other devices' retained state on connect.  Test:
   ``test_retained_message_reaches_late_subscriber`` (received twice without the fix).
2. Keep-alive not enforced.  ``BrokerProtocolHandler.handle_read_timeout`` is a no-op, so a
   client that vanishes without a FIN (power cut, Wi-Fi drop) stays "connected" forever and
   its Last Will never fires.  MQTT-3.1.2-24 requires disconnecting after 1.5 x keep-alive.
   Test: ``test_last_will_when_keepalive_expires``.
3. WebSocket frame limit.  The WS listener uses websockets' default 1 MiB ``max_size``; a
   2 MB publish over WebSocket silently kills the connection.  Test:
   ``test_websocket_two_megabyte_payload``.
4. Log noise.  A TCP probe logs an ERROR, a WebSocket probe an ERROR with a traceback.
   Test: ``test_probes_and_crashes_leave_no_tracebacks``.
5. Socket leak.  When a connection closes before a valid CONNECT (a port probe, a health
   check), ``Broker._client_connected`` returns without closing the server-side socket;
   the fd lives until garbage collection.  Test: ``test_run_broker_in_process_ready_and_stop``
   (ResourceWarning, an error under ``filterwarnings = error``).
6. Authentication after take-over.  ``Broker._initialize_client_session`` deletes the
   session of any client with the same id (clean session), or copies the new CONNECT's
   Will and credentials into it (persistent session), *before* the auth plugins run; a
   refused CONNECT then also replaces the connected client's entry in ``_sessions``.  So
   a client without credentials could cut a device off its work by connecting with its
   client id.  Here authentication runs right after the CONNECT is read, a refused client
   gets CONNACK 5 (not authorized) and touches no other session, and
   ``_handle_client_session`` reuses that result (a token is accepted only once).  Test:
   ``test_refused_connect_cannot_take_over_a_client_id`` (tests/test_broker_access.py).
7. No payload for the topic plugin.  ``topic_filtering`` gets the topic of a PUBLISH but
   not its payload, so a plugin cannot refuse a message by size.  ``MicromineBroker``
   makes the payload's length readable (``publish_payload_size()``) while the plugins
   decide on it.  Test: ``test_oversized_and_flooding_publications_are_refused``
   (tests/test_broker_quota.py).
8. No packet size limit.  amqtt reads any packet the remaining length announces (up to
   256 MiB) into memory before anyone can look at it.  ``MicromineBroker`` reads every
   connection through ``SizeLimitedReader``: a CONNECT may be at most
   ``MAX_CONNECT_PACKET``, later packets at most what ``packet_limit(username)`` allows
   (the largest publication of the client's role); a larger one closes the connection
   before its body is read.  Test: ``test_a_packet_above_the_role_limit_closes_the_connection``.
9. Subscriptions changed during a broadcast.  ``Broker._run_broadcast`` iterates the
   subscription table and awaits the topic plugins inside the loop; a client that
   subscribes or leaves meanwhile ends that broadcast with "dictionary changed size
   during iteration", and the message never reaches the remaining subscribers (seen in
   tests/test_barrage.py).  ``MicromineBroker`` keeps the table in a dict whose
   iteration runs over a copy.  Test: ``test_the_subscription_table_iterates_a_copy``
   (tests/test_broker_config.py).
10. Every message formatted for a debug line nobody sees.  ``Broker._run_broadcast``
   starts with ``logger.debug(f"... {broadcast}")``: the f-string runs whatever the log
   level, so every publication's payload was turned into its ``repr`` (a consensus
   proposal of a few MB, several times its size) before being dropped.  A devnet profile
   at 800 tx/s put 19 % of the broker's time on that line.  ``MicromineBroker`` queues a
   broadcast whose text form is its topic and size.  Test:
   ``test_a_broadcast_formats_without_its_payload`` (tests/test_broker_config.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from functools import partial
from typing import Any

import websockets
from amqtt.adapters import ReaderAdapter
from amqtt.broker import Broker
from amqtt.contexts import ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.utils import gen_client_id
from websockets.exceptions import InvalidMessage

__all__ = [
    "Broadcast",
    "MicromineBroker",
    "PacketTooLargeError",
    "SizeLimitedReader",
    "publish_payload_size",
    "quiet_amqtt_logging",
]

log = logging.getLogger("micromine.broker")

KEEPALIVE_GRACE = 1.5
"""MQTT-3.1.2-24: disconnect after one and a half keep-alive periods of silence."""

_IN_SUBSCRIBE: ContextVar[bool] = ContextVar("micromine_broker_in_subscribe", default=False)
_PUBLISH_SIZE: ContextVar[int | None] = ContextVar("micromine_publish_size", default=None)
MAX_CONNECT_PACKET = 64 * 1024
"""Fix 8: a CONNECT carries a client id, a login token and a Will of a DeviceStatus."""
PACKET_LOG_INTERVAL_S = 1.0
MAX_COUNTED_CLIENTS = 1024  # clients named in the refusal counters; the rest are "others"
# Strong references to fire-and-forget tasks (asyncio keeps only weak ones).
_BACKGROUND: set[asyncio.Task[None]] = set()


def _expire_silent_client(handler: Any) -> None:
    """Keep-alive expired: treat it as a lost connection, which publishes the Last Will."""
    session = handler.session
    log.info("client %s silent for %ss, disconnecting", session.client_id, session.keep_alive)
    task = asyncio.ensure_future(handler.handle_connection_closed())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def publish_payload_size() -> int | None:
    """Fix 7: the payload length of the PUBLISH the plugins are deciding on (None outside
    one, e.g. for a SUBSCRIBE)."""
    return _PUBLISH_SIZE.get()


class PacketTooLargeError(AMQTTError):  # type: ignore[misc]
    """A packet announced more bytes than the connection may send (fix 8)."""


class SizeLimitedReader(ReaderAdapter):  # type: ignore[misc]
    """Fix 8: a reader that follows MQTT's framing and refuses a packet whose remaining
    length is above ``limit`` before its body is read.

    amqtt reads a fixed header one byte at a time (the type byte, then the remaining
    length's bytes while their top bit is set), then exactly the body.  Any single read
    above the limit is refused too, whatever the framing says.
    """

    def __init__(
        self, inner: ReaderAdapter, limit: int, on_refused: Callable[[str], None] | None = None
    ) -> None:
        self.inner = inner
        self.limit = limit
        self.on_refused = on_refused  # told why, before the error is raised
        self.who = "before CONNECT"  # the client, once it logged in
        self._body = 0  # bytes of the current packet's body not yet read
        self._in_length = False  # reading the remaining length's bytes
        self._length = 0
        self._multiplier = 1

    async def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.limit:
            self._refuse(f"a read of {n} bytes, above {self.limit}")
        data: bytes = await self.inner.read(n)
        if self._body > 0:
            self._body = max(0, self._body - len(data))
        elif len(data) == 1 and not self._in_length:  # the packet type byte
            self._in_length, self._length, self._multiplier = True, 0, 1
        elif len(data) == 1:  # a byte of the remaining length
            self._length += (data[0] & 0x7F) * self._multiplier
            self._multiplier *= 128
            if not data[0] & 0x80:
                self._in_length = False
                if self._length > self.limit:
                    self._refuse(f"a packet of {self._length} bytes, above {self.limit}")
                self._body = self._length
        return data

    def _refuse(self, detail: str) -> None:
        if self.on_refused is not None:
            self.on_refused(detail)
        raise PacketTooLargeError(f"{detail} ({_PACKET_MARK})")

    def feed_eof(self) -> None:
        self.inner.feed_eof()


class SubscriptionTable(dict[str, Any]):
    """Fix 9: iterating (keys or items) runs over a copy, so the table may change while
    amqtt awaits inside such a loop."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def items(self) -> Any:
        return list(super().items())


class Broadcast(dict[str, Any]):
    """Fix 10: amqtt's broadcast entry, whose text form leaves out the payload."""

    def __repr__(self) -> str:
        data = self.get("data")
        size = len(data) if data is not None else 0
        return f"<broadcast on {self.get('topic')!r}, {size} bytes>"

    __str__ = __repr__


class MicromineBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's ``Broker`` with fixes 1-3 and 5-10 from the module docstring.

    ``packet_limit(username)``: the largest packet an authenticated client may send
    (fix 8); None leaves only the CONNECT limit and amqtt's 256 MiB after it."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        ws_max_size: int | None,
        packet_limit: Callable[[str | None], int] | None = None,
    ) -> None:
        super().__init__(config)
        self._subscriptions = SubscriptionTable(self._subscriptions)  # fix 9
        self._ws_max_size = ws_max_size
        self._authenticated: dict[int, bool] = {}  # id(session) -> result, until CONNACK
        self._packet_limit = packet_limit
        self.packets_refused: Counter[str] = Counter()
        self._last_packet_log = -PACKET_LOG_INTERVAL_S

    # Fix 10 ---------------------------------------------------------------------------
    async def _broadcast_message(
        self, session: Any, topic: str | None, data: Any, force_qos: int | None = None
    ) -> None:
        broadcast = Broadcast(session=session, topic=topic, data=data)
        if force_qos is not None:
            broadcast["qos"] = force_qos
        await self._broadcast_queue.put(broadcast)

    # Fix 7 ----------------------------------------------------------------------------
    async def _handle_message_delivery(
        self, client_session: Any, handler: Any, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        message = None if wait_deliver.exception() else wait_deliver.result()
        data = getattr(message, "data", None)
        token = _PUBLISH_SIZE.set(len(data) if data is not None else 0)
        try:
            return bool(
                await super()._handle_message_delivery(client_session, handler, wait_deliver)
            )
        finally:
            _PUBLISH_SIZE.reset(token)

    # Fix 8 ----------------------------------------------------------------------------
    async def _client_connected(self, listener_name: str, reader: Any, writer: Any) -> None:
        # amqtt closes the connection on the error: during the CONNECT through
        # _initialize_client_session, later by ending the session's reader loop.
        limited = SizeLimitedReader(reader, MAX_CONNECT_PACKET)
        limited.on_refused = partial(self._note_packet_refused, limited)
        await super()._client_connected(listener_name, limited, writer)

    def _note_packet_refused(self, reader: SizeLimitedReader, detail: str) -> None:
        who = reader.who
        if who not in self.packets_refused and len(self.packets_refused) >= MAX_COUNTED_CLIENTS:
            who = "others"
        self.packets_refused[who] += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_packet_log >= PACKET_LOG_INTERVAL_S:
            self._last_packet_log = now
            log.warning(
                "refused a packet above the size limit from %s: %s (%d such in all)",
                reader.who,
                detail,
                sum(self.packets_refused.values()),
            )

    # Fix 1 ----------------------------------------------------------------------------
    async def _handle_subscription(self, *args: Any, **kwargs: Any) -> None:
        token = _IN_SUBSCRIBE.set(True)
        try:
            await super()._handle_subscription(*args, **kwargs)
        finally:
            _IN_SUBSCRIBE.reset(token)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        # Retained messages are owed only in answer to a SUBSCRIBE (MQTT-3.3.1-6); the other
        # caller is the buggy on-connect loop over all clients' filters.  Per-connection
        # tasks each have their own context, so the flag cannot leak between clients.
        if _IN_SUBSCRIBE.get():
            await super()._publish_retained_messages_for_subscription(subscription, session)

    # Fixes 2, 5 and 6 -------------------------------------------------------------------
    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        try:
            handler, session = await self._connect_authenticated(
                reader, writer, remote_address, remote_port
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the peer is usually gone already
                await writer.close()
            raise
        if session.keep_alive > 0:
            # amqtt uses session.keep_alive as the read timeout for each packet header.
            session.keep_alive = math.ceil(session.keep_alive * KEEPALIVE_GRACE)
            handler.handle_read_timeout = partial(_expire_silent_client, handler)
        return handler, session

    async def _connect_authenticated(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        """amqtt 0.12.1's ``_initialize_client_session`` with authentication moved first."""
        where = f"{remote_address}:{remote_port}"
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except (AMQTTError, NoDataError) as exc:
            log.debug("no CONNECT from %s: %s", where, exc)
            raise AMQTTError(exc) from exc
        except MQTTError:
            log.info("invalid CONNECT from %s", where)
            raise
        if not await super()._authenticate(session, None):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"{_REFUSED_MARK}: client {session.client_id!r} from {where}")
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain",
                         "keep_alive", "username", "password"):  # fmt: skip
                setattr(existing, name, getattr(session, name))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        self._authenticated[id(session)] = True
        if isinstance(reader, SizeLimitedReader):
            reader.who = f"{session.client_id} ({(session.username or 'anonymous')[:16]})"
            reader.limit = (
                self._packet_limit(session.username) if self._packet_limit else 256 * 1024 * 1024
            )
        return handler, session

    async def _authenticate(self, session: Any, listener: Any) -> bool:
        # The CONNECT was authenticated in _connect_authenticated; running the plugins again
        # would refuse the same token as a replay.
        return self._authenticated.pop(id(session), False)

    # Fix 3 ----------------------------------------------------------------------------
    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        if listener_type != ListenerType.WS:
            return await super()._create_server_instance(
                listener_name, listener_type, address, port, ssl_context
            )
        return await websockets.serve(
            partial(self.ws_connected, listener_name=listener_name),
            address,
            port,
            ssl=ssl_context,
            subprotocols=[websockets.Subprotocol("mqtt")],
            max_size=self._ws_max_size,
        )

    async def close_listeners(self) -> None:
        """Close whatever listeners did bind; amqtt leaks them when ``start()`` fails."""
        for server in self._servers.values():
            await server.close_instance()
        self._servers.clear()


# Fix 4 --------------------------------------------------------------------------------
# Loggers of amqtt and of the libraries it drives whose INFO chatter (one line per client
# connection) would drown the ledger's own output.
_NOISY_LOGGERS = ("amqtt", "transitions", "websockets")
# Filters do not inherit down the logger tree, so attach to every logger with a
# ``logger.exception``/``exc_info=True``/ERROR call site reachable from a client (0.12.1).
_FILTERED_LOGGERS = (
    "amqtt.broker",
    "amqtt.mqtt.protocol.handler",
    "amqtt.mqtt.protocol.broker_handler",
    "websockets.server",
)
_PROBE_MESSAGES = ("No data to decode MQTT packet fixed header",)
"""amqtt messages that mean "a client connected and left without sending CONNECT"."""
_REFUSED_MARK = "not authorized (counted and logged by micromine.broker.access)"
"""Fix 6's refusals: amqtt would log each one; the access plugin logs them rate-limited."""


_PACKET_MARK = "packet size limit: counted and logged by micromine.broker"
"""Fix 8's refusals: amqtt logs each one (twice); MicromineBroker logs them rate-limited."""


def _is_probe(record: logging.LogRecord) -> bool:
    """True for a connection closed before its first packet: a port probe or health check.

    Our own test harness (``wait_for_port``), load balancers and container health checks
    all do this; mosquitto logs it at notice level, amqtt at ERROR and websockets at ERROR
    with a three-part traceback.
    """
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError):
        return True
    message = record.getMessage()
    return (
        _REFUSED_MARK in message
        or _PACKET_MARK in message
        or any(fragment in message for fragment in _PROBE_MESSAGES)
    )


class _QuietBelowDebug(logging.Filter):
    """Below DEBUG: drop probe noise and log broken clients as one line, not a traceback.

    amqtt and websockets use ``logger.exception`` for events that are routine for a broker
    (a client socket reset mid-packet, a handshake from a port scanner).  The one-line
    message is worth keeping at WARNING; the traceback only helps when debugging amqtt.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless it is probe noise, minus its traceback."""
        if logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True
        if _is_probe(record):
            return False
        if record.exc_info:
            exc = record.exc_info[1]
            if exc is not None:
                record.msg = f"{record.getMessage()}: {exc!r}"
                record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER = _QuietBelowDebug()


def quiet_amqtt_logging(level: int = logging.WARNING) -> None:
    """Keep amqtt (and the libraries under it) at ``level``, without tracebacks or probe noise.

    Loggers the embedding application already configured (level not NOTSET) are left at
    their level, so ``logging.getLogger("amqtt").setLevel(logging.DEBUG)`` before starting
    the broker still gives full output for debugging.  Idempotent.
    """
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
    for name in _FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
