"""Access control with real paho clients: the embedded broker (tokens, amqtt plugin) and
Mosquitto on the configuration ``micromine broker mosquitto-config`` writes (static
passwords, ACL file).  One policy, ``protocol/acl.py``; what Mosquitto cannot do is in
the Mosquitto-only tests at the end and in docs/DEPLOY.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from framework.access_helpers import (
    OPERATOR,
    Peer,
    Secured,
    now_ms,
    refused_then_allowed,
    start_secured,
)
from framework.brokers import require_mosquitto
from framework.protocol_samples import CHAIN, DEVICE, LEDGER, OTHER_DEVICE

from micromine.processes import wait_until
from micromine.protocol import topics
from micromine.protocol.auth import (
    LOGIN_WINDOW_MS,
    compute_static_password,
    login_credentials,
    make_login_token,
)
from micromine.protocol.topics import Channel

pytestmark = pytest.mark.integration

ME, OTHER = DEVICE.public, OTHER_DEVICE.public
NOT_AUTHORIZED = 135  # paho's reason code for a 3.1.1 CONNACK 5 (4, bad password, is 134)


@pytest.fixture(params=["amqtt", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Secured]:
    mosquitto = require_mosquitto() if request.param == "mosquitto" else None
    running = start_secured(request.param, tmp_path, mosquitto)
    yield running
    running.broker.close()
    print(running.broker.log_text()[-5000:])


@pytest.fixture
def watcher(secured: Secured) -> Iterator[Peer]:
    """An operator: it may read every topic of the chain."""
    peer = secured.peer(OPERATOR, "watcher")
    assert peer.subscribe(f"micromine/{CHAIN}/#") == 1
    yield peer
    peer.close()


def test_a_device_cannot_publish_as_another_device(secured: Secured, watcher: Peer) -> None:
    device = secured.peer(DEVICE, "mmd-device")
    refused = [
        topics.verdicts(CHAIN, OTHER),
        topics.device_topic(CHAIN, OTHER, Channel.HELLO),
        topics.device_topic(CHAIN, OTHER, Channel.HEARTBEAT),
        topics.device_topic(CHAIN, OTHER, Channel.DEVICE_STATUS),
    ]
    leaked = refused_then_allowed(device, watcher, refused, topics.verdicts(CHAIN, ME), "as")
    assert leaked() == []
    device.close()


def test_a_device_cannot_publish_blocks_work_or_consensus(secured: Secured, watcher: Peer) -> None:
    device = secured.peer(DEVICE, "mmd-device")
    refused = [
        topics.blocks(CHAIN),
        topics.blocks_json(CHAIN),
        topics.work(CHAIN, OTHER),
        topics.work(CHAIN, ME),
        topics.consensus(CHAIN, LEDGER.public),
        topics.receipts(CHAIN, bytes(16)),
        topics.ledger_status(CHAIN, LEDGER.public),
    ]
    leaked = refused_then_allowed(device, watcher, refused, topics.submit(CHAIN), "roles")
    assert leaked() == []
    device.close()


def test_a_device_cannot_read_another_devices_work(secured: Secured) -> None:
    device = secured.peer(DEVICE, "mmd-device")
    # The embedded broker refuses the filters; Mosquitto grants any SUBSCRIBE and then
    # delivers nothing its read rules refuse.  Either way the work must not arrive.
    codes = [device.subscribe(f) for f in (topics.work(CHAIN, OTHER), f"micromine/{CHAIN}/work/+")]
    assert codes == ([128, 128] if secured.kind == "amqtt" else [1, 1])
    assert device.subscribe(topics.work(CHAIN, ME)) == 1
    ledger = secured.peer(LEDGER, "ledger-1")
    ledger.publish(topics.work(CHAIN, OTHER), b"not yours")
    ledger.publish(topics.work(CHAIN, ME), b"yours")
    device.wait_for(topics.work(CHAIN, ME), b"yours")
    assert not device.received(topics.work(CHAIN, OTHER), b"not yours")
    ledger.close()
    device.close()


def test_anonymous_reads_blocks_and_nothing_else(secured: Secured, watcher: Peer) -> None:
    anonymous = secured.peer(None, "")
    assert anonymous.subscribe(topics.blocks(CHAIN)) == 1
    assert anonymous.subscribe(topics.blocks_json(CHAIN)) == 1
    for topic_filter in (f"micromine/{CHAIN}/ledger/+/status", topics.work(CHAIN, ME)):
        code = anonymous.subscribe(topic_filter)
        assert code == (128 if secured.kind == "amqtt" else 1)
    ledger = secured.peer(LEDGER, "ledger-1")
    ledger.publish(topics.ledger_status(CHAIN, LEDGER.public), b"status")
    ledger.publish(topics.work(CHAIN, ME), b"work")
    ledger.publish(topics.blocks(CHAIN), b"block")
    anonymous.wait_for(topics.blocks(CHAIN), b"block")
    assert not anonymous.received(topics.ledger_status(CHAIN, LEDGER.public), b"status")
    assert not anonymous.received(topics.work(CHAIN, ME), b"work")
    # and it publishes nothing, not even a submission (the ledger's later one shows the
    # anonymous one would have arrived by then)
    anonymous.publish(topics.submit(CHAIN), b"anonymous submission")
    ledger.publish(topics.submit(CHAIN), b"ledger submission")
    watcher.wait_for(topics.submit(CHAIN), b"ledger submission")
    assert not watcher.received(topics.submit(CHAIN), b"anonymous submission")
    ledger.close()
    anonymous.close()


def test_a_refused_connect_cannot_take_over_a_client_id(secured: Secured) -> None:
    device = secured.peer(DEVICE, "mmd-device")
    assert device.subscribe(topics.work(CHAIN, ME)) == 1
    for credentials in (None, (ME.hex(), "mm1:0:" + "00" * 64)):
        intruder = Peer("mmd-device")
        if credentials is not None:
            intruder.client.username_pw_set(*credentials)
        code = intruder.connect(secured.host, secured.port)
        intruder.close()
        # Mosquitto lets an anonymous client take over any client id (MQTT's rule; see
        # docs/DEPLOY.md): there, --no-anonymous is the only protection.
        if credentials is None and secured.kind == "mosquitto":
            assert code == 0
            return
        assert code == NOT_AUTHORIZED
    if secured.kind == "amqtt":
        ledger = secured.peer(LEDGER, "ledger-1")
        ledger.publish(topics.work(CHAIN, ME), b"still yours")
        device.wait_for(topics.work(CHAIN, ME), b"still yours")
        ledger.close()
    device.close()


def test_a_last_will_on_a_forbidden_topic_is_refused(secured: Secured, watcher: Peer) -> None:
    bad = Peer("mmd-device", will=(topics.blocks(CHAIN), b"forged block"))
    bad.client.username_pw_set(*secured.credentials(DEVICE, "mmd-device"))
    code = bad.connect(secured.host, secured.port)
    if secured.kind == "amqtt":
        assert code == NOT_AUTHORIZED
    else:  # Mosquitto accepts the CONNECT and refuses to publish the Will when it fires
        assert code == 0
        bad.client.loop_stop()
        bad.client.socket().close()  # vanish without DISCONNECT: the Will would go out now
        closed = "Client mmd-device closed its connection"
        wait_until(lambda: closed in secured.broker.log_text(), 10, message=closed)
    # The real block, published after that, reaches the watcher after any forged one.
    ledger = secured.peer(LEDGER, "ledger-1")
    ledger.publish(topics.blocks(CHAIN), b"real block")
    watcher.wait_for(topics.blocks(CHAIN), b"real block")
    assert not watcher.received(topics.blocks(CHAIN), b"forged block")
    ledger.close()


# --- the embedded broker: tokens expire and are accepted once ------------------------------


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Secured]:
    running = start_secured("amqtt", tmp_path, None)
    yield running
    running.broker.close()


def test_an_expired_or_future_token_is_refused(embedded: Secured) -> None:
    for offset in (-LOGIN_WINDOW_MS - 60_000, LOGIN_WINDOW_MS + 60_000):
        peer = Peer("mmd-device")
        token = make_login_token(DEVICE, CHAIN, "mmd-device", now_ms() + offset)
        peer.client.username_pw_set(ME.hex(), str(token))
        assert peer.connect(embedded.host, embedded.port) == NOT_AUTHORIZED
        peer.close()
    assert "refused login: too_old" in embedded.broker.log_text()
    assert "refused login: in_future" in embedded.broker.log_text()


def test_a_replayed_token_is_refused(embedded: Secured) -> None:
    credentials = login_credentials(DEVICE, CHAIN, "mmd-device", now_ms())
    first = Peer("mmd-device")
    first.client.username_pw_set(*credentials)
    assert first.connect(embedded.host, embedded.port) == 0
    first.close()
    again = Peer("mmd-device")
    again.client.username_pw_set(*credentials)
    assert again.connect(embedded.host, embedded.port) == NOT_AUTHORIZED
    again.close()
    other_client = Peer("someone-else")  # a token names its client id
    other_client.client.username_pw_set(*login_credentials(DEVICE, CHAIN, "mmd-device", now_ms()))
    assert other_client.connect(embedded.host, embedded.port) == NOT_AUTHORIZED
    other_client.close()
    log = embedded.broker.log_text()
    assert "refused login: replayed" in log and "refused login: bad_signature" in log


def test_refused_actions_are_counted_and_logged_and_the_broker_stays_up(embedded: Secured) -> None:
    device = embedded.peer(DEVICE, "mmd-device")
    for _ in range(50):
        device.publish(topics.blocks(CHAIN), b"x")
    assert device.subscribe(f"micromine/{CHAIN}/#") == 128
    device.close()
    assert embedded.broker.running
    log = embedded.broker.log_text()
    assert "refused publish: device_may_not_publish_blocks" in log
    assert "refused subscribe: device_may_not_subscribe_submit" in log
    assert log.count("device_may_not_publish_blocks") < 50  # rate-limited, not one per refusal
    assert "Traceback" not in log


def test_no_anonymous_refuses_clients_without_a_login(tmp_path: Path) -> None:
    running = start_secured("amqtt", tmp_path, None, "--no-anonymous")
    try:
        assert Peer("").connect(running.host, running.port) == NOT_AUTHORIZED
        running.peer(DEVICE, "mmd-device").close()
    finally:
        running.broker.close()


# --- Mosquitto: what a password file can and cannot do ----------------------------------


@pytest.mark.mosquitto
def test_mosquitto_accepts_static_passwords_and_refuses_tokens(tmp_path: Path) -> None:
    running = start_secured("mosquitto", tmp_path, require_mosquitto(), "--no-anonymous")
    try:
        assert Peer("").connect(running.host, running.port) == NOT_AUTHORIZED
        running.peer(DEVICE, "mmd-device").close()  # the static password
        for password in (
            str(make_login_token(DEVICE, CHAIN, "mmd-device", now_ms())),  # a token: no hash
            compute_static_password(DEVICE, CHAIN, epoch=1),  # another generation
            compute_static_password(OTHER_DEVICE, CHAIN),  # another key's
        ):
            peer = Peer("mmd-device")
            peer.client.username_pw_set(ME.hex(), password)
            assert peer.connect(running.host, running.port) == NOT_AUTHORIZED
            peer.close()
        # What cannot hold: the static password never expires and is accepted every time.
        for _ in range(2):
            running.peer(DEVICE, "mmd-device").close()
    finally:
        running.broker.close()
