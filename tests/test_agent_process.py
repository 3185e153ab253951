"""The agent as a real process, against the embedded broker as a real process.

The test plays the ledger node with an :class:`MqttLink`: it waits for the agent's hello
and retained online status, sends signed work, checks the one verdict per batch, then
stops the agent (SIGTERM: graceful offline status) or kills it (SIGKILL: Last Will).
Everything waits on conditions with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from framework.protocol_samples import signed_batch

from micromine.common.keyfile import load_or_create_key
from micromine.common.mqtt import Incoming, LinkConfig, MqttLink
from micromine.processes import FULL_SPEED_AGENT, wait_until
from micromine.protocol import codec, topics
from micromine.protocol.crypto import KeyPair
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Transaction, Verdict, WorkBatch
from micromine.protocol.topics import Channel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.name != "posix", reason="POSIX signals"),
]

CHAIN = "testchain"
DEADLINE_S = 20.0  # generous: CI machines and Raspberry Pis are slow to start Python
ALICE = KeyPair(bytes([7]) * 32)
BOB = KeyPair(bytes([8]) * 32)
T = TypeVar("T")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class BrokerProcess:
    """``python -m micromine.broker`` on fixed free ports, so it can be restarted in place."""

    def __init__(self, tmp_path: Path) -> None:
        self.port, self.ws_port = free_ports(2)
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "micromine.broker", "--host", "127.0.0.1"),
                    *("--port", str(self.port), "--ws-port", str(self.ws_port)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.proc = proc
        wait_until(
            lambda: port_open(self.port) or proc.poll() is not None,
            DEADLINE_S,
            message="the broker's port",
        )
        assert proc.poll() is None, self.log_path.read_text()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    # TODO(broker): switch to the shared fixture in tests/framework/brokers.py once it exists.
    process = BrokerProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def broker_url(broker: BrokerProcess) -> str:
    return broker.url


class Agent:
    def __init__(self, broker_url: str, tmp_path: Path) -> None:
        self.key_path = tmp_path / "keys" / "key"
        self.log_path = tmp_path / "agent.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "micromine.device_agent", "--broker", broker_url),
                    *("--key", str(self.key_path), "--chain", CHAIN, "--log-level", "debug"),
                    *FULL_SPEED_AGENT,
                ],
                stderr=log,
                stdout=subprocess.DEVNULL,
                env=env,
            )

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def start_agent(broker_url: str, tmp_path: Path) -> Iterator[Callable[[], Agent]]:
    agents: list[Agent] = []

    def start() -> Agent:
        agents.append(Agent(broker_url, tmp_path))
        return agents[-1]

    yield start
    for agent in agents:
        stop(agent.proc)


class Observer:
    """A ledger-side client that keeps everything it receives, for waiting on."""

    def __init__(self, url: str, name: str, *filters: str) -> None:
        self.link = MqttLink(LinkConfig(name, url, subscriptions=tuple((f, 1) for f in filters)))
        self.link.start()
        self.seen: list[Incoming] = []
        assert self.link.wait_connected(DEADLINE_S)

    def drain(self) -> None:
        while (item := self.link.get(0.05)) is not None:
            if isinstance(item, Incoming):
                self.seen.append(item)

    def on(self, topic: str) -> list[Incoming]:
        return [m for m in self.seen if m.topic == topic]

    def wait(self, topic: str, count: int = 1, what: str = "") -> list[Incoming]:
        def enough() -> list[Incoming]:
            self.drain()
            found = self.on(topic)
            return found if len(found) >= count else []

        return wait_until(enough, DEADLINE_S, message=what or f"{count} message(s) on {topic}")

    def close(self) -> None:
        self.link.close()


@pytest.fixture
def observers(broker_url: str) -> Iterator[Callable[..., Observer]]:
    made: list[Observer] = []

    def make(*filters: str) -> Observer:
        made.append(Observer(broker_url, f"test-observer-{len(made)}", *filters))
        return made[-1]

    yield make
    for observer in made:
        observer.close()


def decoded(message: Incoming, kind: type[T]) -> T:
    value: Any = codec.decode(message.payload, kind)
    assert codec.is_signature_valid(value)
    return value  # type: ignore[no-any-return]


def signed_tx(now_ms: int, signer: KeyPair = ALICE, **overrides: Any) -> Transaction:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "sender": ALICE.public,
        "recipient": BOB.public,
        "amount": 5,
        "fee": 1,
        "nonce": 0,
        "expiry_ms": now_ms + 600_000,
        "memo": "",
    }
    fields.update(overrides)
    tx = Transaction(**fields)
    return dataclasses.replace(tx, signature=signer.sign(tx.KIND, tx.chain_id, tx.id))


def retained_status(observers: Callable[..., Observer], device: bytes) -> DeviceStatus:
    """What a newcomer sees: the broker's retained status for ``device``.

    amqtt 0.12.1 sends a newcomer the retained messages matching *any* client's filters as
    soon as it connects, then again when it subscribes, so identical copies may arrive.
    """
    topic = topics.device_topic(CHAIN, device, Channel.DEVICE_STATUS)
    late_joiner = observers(topic)
    found = late_joiner.wait(topic, what="the retained status")
    assert all(m.retained and m.payload == found[0].payload for m in found)
    status: DeviceStatus = decoded(found[0], DeviceStatus)
    late_joiner.close()
    return status


def announce(
    observers: Callable[..., Observer], start_agent: Callable[[], Agent]
) -> tuple[Observer, Agent, bytes]:
    """Start an agent under a ledger-side observer; wait for its hello; return its key."""
    ledger = observers(topics.all_devices(CHAIN), topics.all_verdicts(CHAIN))
    agent = start_agent()

    def hellos() -> list[Incoming]:
        ledger.drain()
        return [m for m in ledger.seen if m.topic.endswith("/hello")]

    hello_msg = wait_until(hellos, DEADLINE_S, message="the agent's hello")[0]
    hello = decoded(hello_msg, DeviceHello)
    assert (hello.chain_id, hello.capacity) == (CHAIN, 64)
    assert hello_msg.topic == topics.device_topic(CHAIN, hello.device, Channel.HELLO)
    return ledger, agent, hello.device


def test_agent_judges_work_and_goes_offline_on_sigterm(
    observers: Callable[..., Observer], start_agent: Callable[[], Agent]
) -> None:
    ledger, agent, device = announce(observers, start_agent)

    # Identity: the key the agent created is private and is the one it announces.
    assert stat.S_IMODE(agent.key_path.stat().st_mode) == 0o600
    assert load_or_create_key(agent.key_path).public == device

    status_topic = topics.device_topic(CHAIN, device, Channel.DEVICE_STATUS)
    (live,) = ledger.wait(status_topic, what="the online status")
    assert decoded(live, DeviceStatus).online is True
    assert retained_status(observers, device).online is True
    beat_topic = topics.device_topic(CHAIN, device, Channel.HEARTBEAT)
    assert decoded(ledger.wait(beat_topic)[0], Heartbeat).seq >= 1

    issuer = KeyPair.generate()
    now = time.time_ns() // 1_000_000
    cases = [
        (signed_tx(now), Reason.OK),
        (signed_tx(now, expiry_ms=now - 60_000), Reason.EXPIRED),
        (signed_tx(now, amount=0), Reason.BAD_AMOUNT),
        (signed_tx(now, recipient=ALICE.public), Reason.SELF_TRANSFER),
        (signed_tx(now, chain_id="otherchain"), Reason.WRONG_CHAIN),
        (signed_tx(now, signer=BOB), Reason.BAD_SIGNATURE),
        (signed_tx(now, nonce=1), Reason.OK),
    ]

    def batch(seq: int, txs: tuple[Transaction, ...]) -> WorkBatch:
        return signed_batch(
            issuer, seq=seq, registry_height=3, deadline_ms=now + 30_000, txs=txs, chain_id=CHAIN
        )

    first = batch(1, tuple(tx for tx, _ in cases))
    second = batch(2, (signed_tx(now, nonce=2),))
    work_topic = topics.work(CHAIN, device)
    verdict_topic = topics.verdicts(CHAIN, device)
    publish = ledger.link.publish
    assert publish(work_topic, codec.encode(first), qos=1, wait=DEADLINE_S)
    (message,) = ledger.wait(verdict_topic, what="the first verdict")
    verdict = decoded(message, Verdict)
    assert (verdict.batch_id, verdict.device, verdict.chain_id) == (first.id, device, CHAIN)
    assert [(j.tx_id, j.reason) for j in verdict.judgements] == [
        (tx.id, int(reason)) for tx, reason in cases
    ]

    # A redelivered batch gets no second verdict: the next verdict is for the next batch.
    assert publish(work_topic, codec.encode(first), qos=1, wait=DEADLINE_S)
    assert publish(work_topic, codec.encode(second), qos=1, wait=DEADLINE_S)
    verdicts = ledger.wait(verdict_topic, 2, "the second verdict")
    assert [decoded(m, Verdict).batch_id for m in verdicts] == [first.id, second.id]

    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(DEADLINE_S) == 0, agent.log()
    offline = ledger.wait(status_topic, 2, "the offline status")[1]
    assert decoded(offline, DeviceStatus).online is False
    assert retained_status(observers, device).online is False
    ledger.drain()
    assert len(ledger.on(verdict_topic)) == 2
    log = agent.log()
    assert '"event": "agent started"' in log
    assert '"event": "agent stopped"' in log
    assert '"batches": 2' in log
    assert '"duplicates": 1' in log
    assert load_or_create_key(agent.key_path).seed.hex() not in log


def test_last_will_marks_a_killed_agent_offline(
    observers: Callable[..., Observer], start_agent: Callable[[], Agent]
) -> None:
    ledger, agent, device = announce(observers, start_agent)
    status_topic = topics.device_topic(CHAIN, device, Channel.DEVICE_STATUS)
    ledger.wait(status_topic, what="the online status")

    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(DEADLINE_S)
    will = ledger.wait(status_topic, 2, "the Last Will")[1]
    status = decoded(will, DeviceStatus)
    assert (status.online, status.device) == (False, device)
    assert retained_status(observers, device).online is False


def test_agent_reconnects_and_reannounces_after_a_broker_restart(
    broker: BrokerProcess,
    observers: Callable[..., Observer],
    start_agent: Callable[[], Agent],
) -> None:
    ledger, agent, device = announce(observers, start_agent)
    broker.stop()
    broker.start()  # a fresh broker: no sessions, subscriptions or retained messages
    wait_until(
        lambda: agent.log().count('"event": "connected"') == 2,
        DEADLINE_S,
        message="the agent to reconnect",
    )
    # Only the agent's post-reconnect announcement can have put this on the new broker.
    assert retained_status(observers, device).online is True
    # And it resubscribed: it still answers work.
    wait_until(lambda: ledger.link.connected, DEADLINE_S, message="the observer to reconnect")
    issuer = KeyPair.generate()
    now = time.time_ns() // 1_000_000
    work = signed_batch(
        issuer,
        seq=1,
        registry_height=0,
        deadline_ms=now + 30_000,
        txs=(signed_tx(now),),
        chain_id=CHAIN,
    )
    assert ledger.link.publish(topics.work(CHAIN, device), codec.encode(work), 1, wait=5)
    (message,) = ledger.wait(topics.verdicts(CHAIN, device), what="a verdict after restart")
    assert decoded(message, Verdict).judgements[0].reason == Reason.OK
    assert '"event": "disconnected"' in agent.log()
