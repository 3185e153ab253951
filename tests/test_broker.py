"""The broker contract micromine relies on, checked against amqtt and mosquitto alike.

Every scenario uses real paho-mqtt 2.x clients (MQTT 3.1.1, the protocol our agents speak)
against a real broker process, so a difference between the embedded broker and mosquitto
shows up here rather than as a devnet that behaves differently from production.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from amqtt.errors import BrokerError
from framework.brokers import (
    BrokerProcess,
    EmbeddedBroker,
    MosquittoBroker,
    free_port,
    port_open,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from micromine.broker.config import BrokerConfig
from micromine.broker.embedded import run_broker
from micromine.processes import wait_until

TIMEOUT = 10.0
BIG = 2 * 1024 * 1024  # 2 MiB: above websockets' default 1 MiB frame limit on purpose


class Peer:
    """A paho client with its network loop in a thread, recording everything it receives."""

    def __init__(self, client_id: str = "", transport: str = "tcp", clean: bool = True) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean,
            protocol=mqtt.MQTTv311,
            transport=transport,  # type: ignore[arg-type]  # paho wants a Literal
        )
        self.messages: list[mqtt.MQTTMessage] = []
        self.granted: dict[int, list[ReasonCode]] = {}
        self._lock = threading.Lock()
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        with self._lock:
            self.granted[mid] = codes

    def connect(self, host: str, port: int, keepalive: int = 60) -> Peer:
        """Connect and wait for CONNACK."""
        self.client.connect(host, port, keepalive=keepalive)
        self.client.loop_start()
        wait_until(self.client.is_connected, TIMEOUT, message="CONNACK")
        return self

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe and wait for SUBACK, so later publishes are guaranteed to match."""
        result, mid = self.client.subscribe(topic, qos)
        assert result == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert mid is not None
        wait_until(lambda: mid in self.granted, TIMEOUT, message=f"SUBACK for {topic}")
        assert [code.value for code in self.granted[mid]] == [qos]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and, for QoS 1, wait for PUBACK (i.e. the broker has taken ownership)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"no PUBACK for {topic}"

    def on(self, topic: str | None = None) -> list[mqtt.MQTTMessage]:
        """Messages received so far on ``topic`` (default: all), in arrival order."""
        with self._lock:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def topics(self) -> list[str]:
        """Topics of everything received, in arrival order."""
        return [m.topic for m in self.on()]

    def wait_for(
        self, topic: str, count: int = 1, timeout: float = TIMEOUT
    ) -> list[mqtt.MQTTMessage]:
        """Wait until ``count`` messages arrived on ``topic``; return them."""
        wait_until(
            lambda: len(self.on(topic)) >= count,
            timeout,
            message=lambda: f"{count} message(s) on {topic}; got {self.topics()}",
        )
        return self.on(topic)

    def close(self) -> None:
        """Clean DISCONNECT (no Last Will) and stop the loop thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    """Collects the test's Peers and disconnects them all afterwards."""
    created: list[Peer] = []
    yield created
    for peer in created:
        peer.close()


def peer(peers: list[Peer], broker: BrokerProcess) -> Peer:
    """A connected TCP Peer that is closed at teardown."""
    created = Peer().connect(broker.host, broker.port)
    peers.append(created)
    return created


def crashed_client(broker: BrokerProcess, will_topic: str, keepalive: int = 60) -> mqtt.Client:
    """A client with a retained Last Will, connected with a hand-driven loop.

    Driving ``loop()`` ourselves (instead of ``loop_start``) lets a test stop the client
    dead: no DISCONNECT, no PINGREQ, exactly like a device that lost power.
    """
    client = Peer("victim").client
    client.will_set(will_topic, b"offline", qos=1, retain=True)
    client.connect(broker.host, broker.port, keepalive=keepalive)
    wait_until(
        lambda: client.loop(0.05) == MQTTErrorCode.MQTT_ERR_SUCCESS and client.is_connected(),
        TIMEOUT,
        message="victim CONNACK",
    )
    return client


def crash(client: mqtt.Client) -> None:
    """Close the socket under paho, as the kernel does when a process dies: FIN, no DISCONNECT."""
    sock = client.socket()
    if sock is not None:
        sock.close()


@pytest.mark.integration
def test_qos1_round_trip_with_wildcards(broker: BrokerProcess, peers: list[Peer]) -> None:
    plus = peer(peers, broker)
    plus.subscribe("mm/+/status", qos=1)
    hash_ = peer(peers, broker)
    hash_.subscribe("mm/#", qos=1)
    pub = peer(peers, broker)

    pub.publish("mm/dev1/status", b"up", qos=1)
    pub.publish("mm/dev1/work/7", b"job", qos=1)
    pub.publish("other/dev1/status", b"no", qos=1)
    pub.publish("mm", b"parent", qos=1)  # '#' also matches the parent level
    pub.publish("mm/dev2/status", b"last", qos=1)

    [up] = plus.wait_for("mm/dev1/status")
    assert (up.payload, up.qos, up.retain) == (b"up", 1, False)
    plus.wait_for("mm/dev2/status")
    hash_.wait_for("mm/dev2/status")
    assert plus.topics() == ["mm/dev1/status", "mm/dev2/status"]
    assert sorted(hash_.topics()) == sorted(
        ["mm/dev1/status", "mm/dev1/work/7", "mm", "mm/dev2/status"]
    )


@pytest.mark.integration
def test_qos0_publish_is_not_upgraded(
    broker: BrokerProcess, peers: list[Peer], request: pytest.FixtureRequest
) -> None:
    if isinstance(broker, EmbeddedBroker):
        # amqtt 0.12.1 Broker._run_broadcast sends with the *subscription* QoS, ignoring the
        # publish QoS (MQTT-3.8.4-6 says min of both).  Harmless for us: only extra PUBACKs.
        request.applymarker(
            pytest.mark.xfail(reason="amqtt upgrades QoS 0 to sub QoS", strict=True)
        )
    sub = peer(peers, broker)
    sub.subscribe("q/#", qos=1)
    peer(peers, broker).publish("q/zero", b"0", qos=0)
    [message] = sub.wait_for("q/zero")
    assert message.qos == 0


@pytest.mark.integration
def test_retained_message_reaches_late_subscriber(broker: BrokerProcess, peers: list[Peer]) -> None:
    pub = peer(peers, broker)
    pub.publish("ret/kept", b"v1", qos=1, retain=True)
    pub.publish("ret/kept", b"v2", qos=1, retain=True)  # replaces v1
    pub.publish("ret/cleared", b"x", qos=1, retain=True)
    pub.publish("ret/cleared", b"", qos=1, retain=True)  # empty payload clears it

    late = peer(peers, broker)
    late.subscribe("ret/+", qos=1)
    [kept] = late.wait_for("ret/kept")
    assert (kept.payload, kept.retain) == (b"v2", True)
    pub.publish("ret/live", b"now", qos=1, retain=True)
    [live] = late.wait_for("ret/live")
    assert live.retain is False  # MQTT-3.3.1-9: live deliveries carry retain=0
    assert late.on("ret/cleared") == []


@pytest.mark.integration
def test_last_will_on_abrupt_socket_close(broker: BrokerProcess, peers: list[Peer]) -> None:
    watcher = peer(peers, broker)
    watcher.subscribe("will/#", qos=1)
    crash(crashed_client(broker, "will/victim"))

    [will] = watcher.wait_for("will/victim")
    assert will.payload == b"offline"
    late = peer(peers, broker)
    late.subscribe("will/victim", qos=1)
    [retained] = late.wait_for("will/victim")
    assert (retained.payload, retained.retain) == (b"offline", True)


@pytest.mark.integration
def test_no_last_will_after_clean_disconnect(broker: BrokerProcess, peers: list[Peer]) -> None:
    watcher = peer(peers, broker)
    watcher.subscribe("will/#", qos=1)
    polite = Peer("polite")
    polite.client.will_set("will/polite", b"offline", qos=1)
    polite.connect(broker.host, broker.port)
    polite.close()
    wait_until(lambda: not polite.client.is_connected(), TIMEOUT)

    peer(peers, broker).publish("will/sentinel", b"s", qos=1)  # same publisher path, after
    watcher.wait_for("will/sentinel")
    assert watcher.on("will/polite") == []


@pytest.mark.integration
def test_last_will_when_keepalive_expires(broker: BrokerProcess, peers: list[Peer]) -> None:
    """A half-open connection (device lost power, no FIN) is only detected by keep-alive."""
    watcher = peer(peers, broker)
    watcher.subscribe("will/#", qos=1)
    victim = crashed_client(broker, "will/silent", keepalive=1)
    try:
        # Not calling victim.loop() any more: the socket stays open but silent.
        # Spec: dropped after 1.5 x keep-alive; mosquitto 2.0 checks keep-alives lazily and
        # takes up to ~5 s here, so allow a generous margin for loaded CI machines.
        [will] = watcher.wait_for("will/silent", timeout=30)
        assert will.payload == b"offline"
    finally:
        crash(victim)


@pytest.mark.integration
def test_two_megabyte_payload(broker: BrokerProcess, peers: list[Peer]) -> None:
    sub = peer(peers, broker)
    sub.subscribe("big/#", qos=1)
    payload = os.urandom(BIG)
    peer(peers, broker).publish("big/blob", payload, qos=1)
    [message] = sub.wait_for("big/blob")
    assert hashlib.sha256(message.payload).digest() == hashlib.sha256(payload).digest()


@pytest.mark.integration
def test_restart_keeps_the_same_url(broker: BrokerProcess, peers: list[Peer]) -> None:
    url = broker.url
    broker.restart()
    assert broker.url == url
    sub = peer(peers, broker)
    sub.subscribe("after/restart", qos=1)
    peer(peers, broker).publish("after/restart", b"ok", qos=1)
    sub.wait_for("after/restart")


def ws_peer(peers: list[Peer], broker: EmbeddedBroker | MosquittoBroker) -> Peer:
    """A connected paho ``transport="websockets"`` Peer (path /mqtt, paho's default)."""
    assert broker.ws_port is not None
    created = Peer(transport="websockets")
    created.client.ws_set_options(path="/mqtt")
    peers.append(created.connect(broker.host, broker.ws_port))
    return created


@pytest.mark.integration
def test_websocket_listener_interoperates_with_tcp(
    ws_broker: EmbeddedBroker | MosquittoBroker, peers: list[Peer]
) -> None:
    ws = ws_peer(peers, ws_broker)
    ws.subscribe("ws/#", qos=1)
    tcp = peer(peers, ws_broker)
    tcp.subscribe("tcp/#", qos=1)

    # Small on purpose: paho's WebSocket reader mishandles fragmented frames (paho issues
    # #89, #500) and mosquitto's libwebsockets fragments messages above ~60 kB.
    tcp.publish("ws/down", b"to-browser", qos=1)
    ws.publish("tcp/up", b"from-browser", qos=1)
    assert ws.wait_for("ws/down")[0].payload == b"to-browser"
    assert tcp.wait_for("tcp/up")[0].payload == b"from-browser"


@pytest.mark.integration
def test_websocket_two_megabyte_payload(embedded_broker: EmbeddedBroker, peers: list[Peer]) -> None:
    ws = ws_peer(peers, embedded_broker)
    ws.subscribe("ws/#", qos=1)
    tcp = peer(peers, embedded_broker)
    tcp.subscribe("tcp/#", qos=1)
    payload = os.urandom(BIG)
    tcp.publish("ws/down", payload, qos=1)
    ws.publish("tcp/up", payload, qos=1)
    assert ws.wait_for("ws/down")[0].payload == payload
    assert tcp.wait_for("tcp/up")[0].payload == payload


@pytest.mark.integration
def test_persistent_session_queues_qos1_while_offline(
    broker: BrokerProcess, peers: list[Peer], request: pytest.FixtureRequest
) -> None:
    if isinstance(broker, EmbeddedBroker):
        # amqtt only queues for offline sessions that are not anonymous
        # (Broker._run_broadcast checks session.is_anonymous), and AnonymousAuthPlugin marks
        # every session anonymous.  micromine uses clean sessions, so this does not bite.
        request.applymarker(
            pytest.mark.xfail(reason="amqtt drops offline QoS1 for anonymous", strict=True)
        )
    durable = Peer("durable", clean=False).connect(broker.host, broker.port)
    durable.subscribe("queued/#", qos=1)
    durable.close()
    peer(peers, broker).publish("queued/x", b"while-offline", qos=1)

    again = Peer("durable", clean=False)
    peers.append(again.connect(broker.host, broker.port))
    # Short timeout: mosquitto delivers the queued message right after CONNACK.
    assert again.wait_for("queued/x", timeout=3)[0].payload == b"while-offline"


@pytest.mark.integration
def test_embedded_broker_exits_zero_on_sigterm(embedded_broker: EmbeddedBroker) -> None:
    assert embedded_broker.stop() == 0
    assert "Traceback" not in embedded_broker.log_text()


@pytest.mark.integration
def test_probes_and_crashes_leave_no_tracebacks(
    embedded_broker: EmbeddedBroker, peers: list[Peer]
) -> None:
    """Port probes, WebSocket scanners and crashed clients are routine, not errors."""
    # EmbeddedBroker.start() already probed both ports (connect, then close without a word).
    crash(crashed_client(embedded_broker, "will/quiet"))
    watcher = peer(peers, embedded_broker)
    watcher.subscribe("will/quiet", qos=1)
    watcher.wait_for("will/quiet")  # retained will: the disconnect has been processed
    embedded_broker.stop()
    log = embedded_broker.log_text()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"port": 0}, "port must be"),
        ({"ws_port": 70000}, "ws_port must be"),
        ({"port": 1883, "ws_port": 1883}, "must differ"),
        ({"host": "::1"}, "IPv6"),
        ({"max_message_bytes": 0}, "positive"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        BrokerConfig(**kwargs)  # type: ignore[arg-type]


def test_run_broker_in_process_ready_and_stop() -> None:
    """The devnet embeds the broker in its own event loop: ready/stop events, no signals."""
    cfg = BrokerConfig(port=free_port(), ws_port=free_port())

    async def scenario() -> None:
        ready, stop = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(run_broker(cfg, ready, stop, handle_signals=False))
        await asyncio.wait_for(ready.wait(), TIMEOUT)
        assert await asyncio.to_thread(port_open, cfg.host, cfg.port)
        stop.set()
        await asyncio.wait_for(serving, TIMEOUT)
        assert not await asyncio.to_thread(port_open, cfg.host, cfg.port)

    asyncio.run(scenario())


def test_run_broker_port_in_use_raises_and_releases_other_listener() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = BrokerConfig(port=free_port(), ws_port=taken.getsockname()[1])
        with pytest.raises(BrokerError):
            asyncio.run(run_broker(cfg, handle_signals=False))
    assert not port_open(cfg.host, cfg.port)  # the TCP listener that did bind was closed
