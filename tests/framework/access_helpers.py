"""Brokers with access control on, and paho clients that log in, for the access tests.

``secured_broker`` starts either the embedded broker with ``--genesis`` (clients log in
with fresh tokens) or Mosquitto on the configuration ``micromine broker mosquitto-config``
writes (clients log in with their static passwords).  MQTT 3.1.1 has no publish error, so
a refused publication is seen as a message that a fully entitled subscriber never gets:
tests publish the refused message first and an allowed one after it on the same
connection, wait for the allowed one, and then know the refused one would have arrived.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from micromine.processes import wait_until
from micromine.protocol.auth import compute_static_password, login_credentials
from micromine.protocol.crypto import KeyPair
from micromine.protocol.genesis import Genesis

from .brokers import BrokerProcess, ConfiguredMosquitto, EmbeddedBroker, free_port
from .protocol_samples import CHAIN, DEVICE, LEDGER, OTHER_DEVICE, key

TIMEOUT = 10.0
OPERATOR = key("operator")
KEYS = {"ledger": LEDGER, "operator": OPERATOR, "device": DEVICE, "device-2": OTHER_DEVICE}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write_genesis(root: Path) -> Path:
    genesis = Genesis(
        chain_id=CHAIN,
        timestamp_ms=1,
        ledger_nodes=(LEDGER.public,),
        balances=(),
        operators=(OPERATOR.public,),
    )
    path = root / "genesis.json"
    path.write_text(genesis.to_json())
    return path


def write_key(path: Path, key_pair: KeyPair) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key_pair.seed.hex() + "\n")
    return path


@dataclass
class Secured:
    """A running broker with access control, and how its clients log in."""

    kind: str  # "amqtt" or "mosquitto"
    broker: BrokerProcess
    root: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    def credentials(self, who: KeyPair, client_id: str) -> tuple[str, str]:
        if self.kind == "amqtt":
            return login_credentials(who, CHAIN, client_id, now_ms())
        return who.public.hex(), compute_static_password(who, CHAIN)

    def peer(self, who: KeyPair | None, client_id: str) -> Peer:
        """A connected client: logged in as ``who``, or anonymous."""
        peer = Peer(client_id)
        if who is not None:
            peer.client.username_pw_set(*self.credentials(who, client_id))
        assert peer.connect(self.host, self.port) == 0, f"{client_id} was refused"
        return peer


def mosquitto_config(root: Path, port: int, *flags: str) -> Path:
    """Run ``micromine broker mosquitto-config`` as an operator would; the config's path."""
    genesis = write_genesis(root)
    key_flags = [
        arg for name, pair in KEYS.items() for arg in ("--key", str(write_key(root / name, pair)))
    ]
    out = root / "mosquitto"
    subprocess.run(
        [sys.executable, "-m", "micromine", "broker", "mosquitto-config", "--genesis",
         str(genesis), "--out", str(out), "--port", str(port), *key_flags, *flags],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    conf = out / "mosquitto.conf"
    if os.geteuid() == 0:  # else mosquitto drops to its own user, who cannot read our tmp dir
        conf.write_text(conf.read_text() + "user root\n")
    return conf


def start_secured(kind: str, root: Path, mosquitto: str | None, *flags: str) -> Secured:
    if kind == "amqtt":
        genesis = write_genesis(root)
        embedded = EmbeddedBroker(log_dir=root, extra_args=("--genesis", str(genesis), *flags))
        embedded.start()
        return Secured(kind, embedded, root)
    assert mosquitto is not None
    port = free_port()
    broker = ConfiguredMosquitto(mosquitto_config(root, port, *flags), port, path=mosquitto)
    broker.start()
    return Secured(kind, broker, root)


class Peer:
    """A paho client that records its CONNACK, SUBACKs and every message it receives."""

    def __init__(self, client_id: str, *, will: tuple[str, bytes] | None = None) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.connack: int | None = None
        self.granted: dict[int, list[int]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        self.connack = int(getattr(reason, "value", 128))

    def _on_disconnect(self, _c: object, _u: object, _f: object, _r: object, _p: object) -> None:
        if self.connack is None:
            self.connack = -1  # closed without a CONNACK

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def _on_subscribe(self, _c: object, _u: object, mid: int, codes: list, _p: object) -> None:  # type: ignore[type-arg]
        with self._lock:
            self.granted[mid] = [int(code.value) for code in codes]

    def connect(self, host: str, port: int) -> int:
        """Connect and return the CONNACK code (0 accepted, 5 not authorized, -1 none)."""
        try:
            self.client.connect(host, port, keepalive=30)
        except OSError:
            return -1
        self.client.loop_start()
        wait_until(lambda: self.connack is not None, TIMEOUT, message="a CONNACK")
        assert self.connack is not None
        return self.connack

    def subscribe(self, topic_filter: str) -> int:
        """Subscribe and return the granted code (1, or 128 when refused)."""
        _, mid = self.client.subscribe(topic_filter, 1)
        assert mid is not None
        wait_until(lambda: mid in self.granted, TIMEOUT, message=f"SUBACK for {topic_filter}")
        return self.granted[mid][0]

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(TIMEOUT)

    def received(self, topic: str, payload: bytes) -> bool:
        with self._lock:
            return (topic, payload) in self.messages

    def wait_for(self, topic: str, payload: bytes) -> None:
        what = f"{payload!r} on {topic}"
        wait_until(lambda: self.received(topic, payload), TIMEOUT, message=what)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def refused_then_allowed(
    sender: Peer, watcher: Peer, refused: list[str], allowed: str, tag: str
) -> Callable[[], list[str]]:
    """Publish on each ``refused`` topic, then on ``allowed``; wait for the allowed one at
    ``watcher``; return a function listing the refused topics the watcher got anyway."""
    for topic in refused:
        sender.publish(topic, f"refused {tag}".encode())
    sender.publish(allowed, f"allowed {tag}".encode())
    watcher.wait_for(allowed, f"allowed {tag}".encode())
    return lambda: [t for t in refused if watcher.received(t, f"refused {tag}".encode())]
