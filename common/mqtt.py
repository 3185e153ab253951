"""A thin, typed adapter over paho-mqtt 2.x shared by the device agent and the ledger node.

Longer than our other modules on purpose: it is the one place paho is touched, and its
threading, reconnect, TLS and login workarounds read best next to each other.

Threading model: paho runs its network loop in its own thread (``loop_start``).  Its
callbacks only translate and hand off into a bounded inbox; all application work (decoding,
signature checks, state) happens in the caller's thread, which drains the inbox with
:meth:`MqttLink.get`.  So a slow consumer can never stall keep-alives or acknowledgements,
and the application needs no locks of its own.

The inbox carries two kinds of items, in arrival order (except that messages on topics
the config names ``urgent_prefixes`` are served before the rest: the ledger's consensus):

* :class:`Incoming` -- an application message;
* :class:`LinkEvent` -- ``CONNECTED`` after every successful (re)connect, once the
  subscriptions have been re-sent, and ``DISCONNECTED`` when a connection ends.  These are
  never dropped, even when the inbox is full, because the consumer must (re)announce itself
  on every connect (the agent's hello, the ledger's status).

Reconnects: paho 2.2's ``loop_forever`` (behind ``loop_start``) already reconnects, but its
backoff is a deterministic doubling, so a fleet of devices that lost the same broker would
come back in lock-step.  Paho calls ``on_disconnect`` / ``on_connect_fail`` right before each
``_reconnect_wait``, and ``reconnect_delay_set`` resets its internal delay, so setting
``min == max`` there makes paho sleep exactly the jittered delay chosen by :class:`Backoff`.
That keeps paho's own, well-tested reconnect loop and uses public API only.  (One paho
quirk: after the *first* ever attempt fails, paho waits twice -- once in its
first-connection loop, once in its main loop -- so only that retry takes 2x the delay.)

Login: with a :class:`Login` the link signs a fresh token (protocol/auth.py) for every
connection attempt, first or re-, in paho's ``on_pre_connect``, which paho 2.2 calls
inside ``reconnect()`` right before it opens the socket and sends CONNECT: a token is
never reused, so the broker's replay cache never refuses a reconnect.  With the
``password`` mode it sends the key's static password instead (for Mosquitto; see
docs/DEPLOY.md).  TLS: ``mqtts://`` and ``wss://`` URLs, with an optional CA file (else
the system's CAs) and an optional client certificate and key.
"""

from __future__ import annotations

import enum
import random
import ssl
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from micromine.common.broker_url import BrokerAddress, parse_broker_url
from micromine.common.inbox import Backoff, Inbox, Incoming, LinkEvent, LinkEventKind
from micromine.protocol.auth import compute_static_password, login_credentials
from micromine.protocol.crypto import KeyPair

__all__ = [
    "Backoff",
    "BrokerAddress",
    "Incoming",
    "LinkConfig",
    "LinkEvent",
    "LinkEventKind",
    "LinkStats",
    "Login",
    "LoginMode",
    "MqttLink",
    "TlsFiles",
    "Will",
    "parse_broker_url",
]

log = structlog.get_logger("micromine.common.mqtt")

_DROP_WARN_INTERVAL_S = 1.0


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Will:
    """The Last Will the broker publishes if this client vanishes without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class LoginMode(enum.Enum):
    TOKEN = "token"  # a fresh signed token per connection (the embedded broker)
    PASSWORD = "password"  # the key's static password (Mosquitto, EMQX's built-in database)
    NONE = "none"  # anonymous


@dataclass(frozen=True, slots=True)
class Login:
    """Log in as ``key`` on ``chain_id``'s broker (username = the key in hex)."""

    key: KeyPair
    chain_id: str
    mode: LoginMode = LoginMode.TOKEN
    epoch: int = 0  # the static password's generation (PASSWORD mode)

    def credentials(self, client_id: str, now_ms: int) -> tuple[str, str] | None:
        if self.mode is LoginMode.TOKEN:
            return login_credentials(self.key, self.chain_id, client_id, now_ms)
        if self.mode is LoginMode.PASSWORD:
            return self.key.public.hex(), compute_static_password(
                self.key, self.chain_id, self.epoch
            )
        return None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a TLS connection; all optional (no CA: the system's CAs)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if self.key is not None and self.cert is None:
            raise ValueError("a TLS key needs its certificate (--tls-cert)")

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None:
            context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        return context


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Everything a link needs, fixed for its lifetime (so reconnects behave identically)."""

    client_id: str
    broker_url: str
    keepalive_s: int = 30
    will: Will | None = None
    subscriptions: tuple[tuple[str, int], ...] = ()
    inbox_max: int = 10_000
    urgent_prefixes: tuple[str, ...] = ()  # topics served before the rest (Inbox)
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    # QoS>0 messages paho keeps (in flight or waiting for a connection); beyond it they drop.
    max_queued_messages: int = 1_000
    connect_timeout_s: float = 5.0
    login: Login | None = None
    tls: TlsFiles | None = None  # used with mqtts:// and wss:// URLs

    def __post_init__(self) -> None:
        address = parse_broker_url(self.broker_url)
        if self.tls is not None and self.tls != TlsFiles() and not address.tls:
            raise ValueError(
                f"TLS files given but {self.broker_url} is not a TLS URL (mqtts:// or wss://)"
            )
        if not self.client_id or len(self.client_id.encode()) > 65535:
            raise ValueError("client_id must be 1..65535 bytes")
        if not 5 <= self.keepalive_s <= 65535:
            raise ValueError(f"keepalive_s must be in 5..65535, got {self.keepalive_s}")
        if self.inbox_max < 1 or self.max_queued_messages < 1:
            raise ValueError("inbox_max and max_queued_messages must be positive")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        if self.connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s must be positive")
        for topic_filter, qos in self.subscriptions:
            if not topic_filter or qos not in (0, 1, 2):
                raise ValueError(f"bad subscription {(topic_filter, qos)!r}")
        if self.will is not None and self.will.qos not in (0, 1, 2):
            raise ValueError("will qos must be 0, 1 or 2")

    @property
    def address(self) -> BrokerAddress:
        return parse_broker_url(self.broker_url)


@dataclass(slots=True)
class LinkStats:
    """Counters since the link was created; :attr:`MqttLink.stats` returns a copy."""

    received: int = 0
    dropped_inbox: int = 0
    dropped_bad_topic: int = 0
    published: int = 0
    publish_queued: int = 0  # QoS>0 accepted while offline: paho sends it after reconnecting
    publish_failed: int = 0
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0


# --- the same connection flags for every process ------------------------------------------

ENV_LOGIN = "MICROMINE_LOGIN"
ENV_TLS = {"ca": "MICROMINE_TLS_CA", "cert": "MICROMINE_TLS_CERT", "key": "MICROMINE_TLS_KEY"}


def add_link_arguments(parser: Any, *, login_default: str = LoginMode.TOKEN.value) -> None:
    """``--login`` and ``--tls-ca/--tls-cert/--tls-key``, named alike in every command."""
    parser.add_argument(
        "--login",
        choices=[mode.value for mode in LoginMode],
        help=f"how to log in to the broker (env {ENV_LOGIN}; default {login_default}): token = a "
        "fresh signed token per connection (embedded broker), password = the key's static "
        "password (Mosquitto), none = anonymous",
    )
    for name, what in (("ca", "CA to verify the broker by"), ("cert", "client certificate"),
                       ("key", "key of --tls-cert")):  # fmt: skip
        parser.add_argument(
            f"--tls-{name}", metavar="FILE", help=f"PEM {what} (env {ENV_TLS[name]}; mqtts://)"
        )


def link_settings_from(
    args: Any, environ: Any, *, login_default: str = LoginMode.TOKEN.value
) -> tuple[LoginMode, TlsFiles | None]:
    """The login mode and TLS files from flags, else the environment, else the defaults."""
    login = getattr(args, "login", None) or environ.get(ENV_LOGIN) or login_default
    try:
        mode = LoginMode(login)
    except ValueError:
        raise ValueError(
            f"--login / {ENV_LOGIN}: {login!r} is not token, password or none"
        ) from None
    paths: list[Path | None] = []
    for name, env in ENV_TLS.items():
        value = getattr(args, f"tls_{name}", None) or environ.get(env)
        paths.append(Path(str(value)).expanduser() if value else None)
    if not any(paths):
        return mode, None
    return mode, TlsFiles(*paths)


# --- the link -------------------------------------------------------------------------------


class MqttLink:
    """One MQTT 3.1.1 connection with a clean session, auto-reconnect and a bounded inbox.

    Use: ``link = MqttLink(cfg); link.start(); link.wait_connected(5)``; then loop on
    ``link.get(timeout)`` and call ``link.publish(...)`` from any thread; ``link.close()``.
    Subscriptions are re-sent on every connect (clean sessions forget them).
    """

    def __init__(self, config: LinkConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._address = config.address
        self._inbox = Inbox(config.inbox_max, config.urgent_prefixes)
        self._connected = threading.Event()
        self._closing = False
        self._started = False
        self._stats = LinkStats()
        self._stats_lock = threading.Lock()
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s, rng)
        self._last_drop_warning = 0.0
        self._log = log.bind(client_id=config.client_id, broker=self._address.url)
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        cfg = self.config
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
            transport="websockets" if self._address.websocket else "tcp",
            reconnect_on_failure=True,
        )
        if self._address.websocket:
            client.ws_set_options(path=self._address.path)
        if self._address.tls:
            client.tls_set_context((cfg.tls or TlsFiles()).context())
        client.max_queued_messages_set(cfg.max_queued_messages)
        client.connect_timeout = cfg.connect_timeout_s
        # An exception escaping a callback would end paho's thread (and all reconnects).
        client.suppress_exceptions = True
        if cfg.will is not None:
            w = cfg.will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        _set_paho_delay(client, cfg.reconnect_min_s)
        return client

    # -- lifecycle --

    def start(self) -> None:
        """Begin connecting in the background; returns at once (see :meth:`wait_connected`)."""
        if self._started:
            raise RuntimeError("MqttLink.start() called twice")
        self._started = True
        self._client.connect_async(
            self._address.host, self._address.port, keepalive=self.config.keepalive_s
        )
        self._client.loop_start()
        self._log.debug("mqtt starting")

    def close(self) -> None:
        """Disconnect cleanly (so the broker does not fire the Will) and stop paho's thread.

        Publishes nothing itself: a caller that wants a goodbye message sends it first with
        ``publish(..., wait=...)``.  Idempotent.
        """
        if self._closing:
            return
        self._closing = True
        self._connected.clear()
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
        self._inbox.wake()

    def __enter__(self) -> MqttLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- application side --

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def get(self, timeout: float | None = None) -> Incoming | LinkEvent | None:
        """Next inbox item, or None after ``timeout`` seconds or a :meth:`wake`."""
        return self._inbox.get(timeout)

    def wake(self) -> None:
        """Interrupt a blocked :meth:`get` (e.g. from a signal handler)."""
        self._inbox.wake()

    def pending(self) -> int:
        """Messages waiting in the inbox (a backlog measure, e.g. for heartbeats)."""
        return len(self._inbox)

    @property
    def stats(self) -> LinkStats:
        with self._stats_lock:
            return replace(self._stats)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        wait: float | None = None,
    ) -> bool:
        """Send a message; thread-safe; never raises because the link is down.

        Without ``wait``: True when paho sent it or (QoS>0) queued it to send after the next
        reconnect; False when it was dropped (QoS 0 while offline, queue full, link closed).
        With ``wait``: True only once the broker acknowledged it (QoS 1/2) or it was written
        (QoS 0) within ``wait`` seconds.  Never call with ``wait`` from a paho callback.
        An invalid topic or QoS is a programming error and raises ValueError.
        """
        if self._closing:
            self._count("publish_failed")
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._count("published")
        elif info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
            self._count("publish_queued")
            return wait is None
        else:
            self._count("publish_failed")
            return False
        if wait is None:
            return True
        try:
            info.wait_for_publish(wait)
            return info.is_published()
        except (RuntimeError, ValueError):  # lost the connection while waiting
            return False

    # -- paho callbacks (paho's thread): translate and hand off, nothing else --

    def _on_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        login = self.config.login
        if login is None:
            return
        credentials = login.credentials(self.config.client_id, time.time_ns() // 1_000_000)
        if credentials is None:
            client.username_pw_set(None)
        else:
            client.username_pw_set(*credentials)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self._log.warning("mqtt connection refused", reason=str(reason))
            return
        if self.config.subscriptions:
            client.subscribe(list(self.config.subscriptions))
        self._backoff.reset()
        self._set_next_delay(self.config.reconnect_min_s)
        self._count("connects")
        self._connected.set()
        self._log.debug("mqtt connected")
        self._inbox.put_event(LinkEvent(LinkEventKind.CONNECTED, time.monotonic()))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._count("connect_failures")
        delay = self._schedule_retry()
        self._log.warning("mqtt connect failed", retry_in_s=round(delay, 2))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._closing:
            self._log.debug("mqtt disconnected", reason=str(reason))
            return
        delay = self._schedule_retry()
        if not was_connected:  # a refused CONNACK or a failure before it: not a session end
            self._count("connect_failures")
            return
        self._count("disconnects")
        self._log.warning("mqtt connection lost", reason=str(reason), retry_in_s=round(delay, 2))
        self._inbox.put_event(LinkEvent(LinkEventKind.DISCONNECTED, time.monotonic(), str(reason)))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        now = time.monotonic()
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self._count("dropped_bad_topic")
            return
        item = Incoming(topic, bytes(message.payload), now, bool(message.retain))
        if self._inbox.put_message(item):
            self._count("received")
            return
        self._count("dropped_inbox")
        if now - self._last_drop_warning >= _DROP_WARN_INTERVAL_S:
            self._last_drop_warning = now
            self._log.warning(
                "mqtt inbox full, dropping messages",
                inbox_max=self.config.inbox_max,
                dropped_total=self.stats.dropped_inbox,
            )

    # -- helpers --

    def _schedule_retry(self) -> float:
        delay = self._backoff.next()
        self._set_next_delay(delay)
        return delay

    def _set_next_delay(self, delay: float) -> None:
        _set_paho_delay(self._client, delay)

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self._stats, name, getattr(self._stats, name) + n)


def _set_paho_delay(client: paho.Client, delay: float) -> None:
    """Make paho's next reconnect wait exactly ``delay`` seconds.

    paho annotates the delays as int but only does float arithmetic with them (verified in
    2.2's ``_reconnect_wait``); sub-second jitter needs floats, hence the cast.
    """
    cast(Any, client).reconnect_delay_set(delay, delay)
