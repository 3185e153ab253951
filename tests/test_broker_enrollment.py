"""The embedded broker under genesis ``enrollment: approved``: a key is a device (may
say hello, send verdicts, read its work) only once a block published by a ledger node
records an operator's approval of it, and no longer once one records a revocation;
what it learned survives a restart through ``--enrollment-state``."""

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from framework import protocol_samples as s
from framework.access_helpers import OPERATOR, Peer, Secured
from framework.brokers import EmbeddedBroker

from micromine.broker.enrollment import BrokerEnrollment
from micromine.processes import wait_until
from micromine.protocol import topics
from micromine.protocol.codec import encode
from micromine.protocol.crypto import KeyPair
from micromine.protocol.genesis import Genesis
from micromine.protocol.topics import Channel

CHAIN = s.CHAIN


def approved_genesis(root: Path) -> tuple[Genesis, Path]:
    genesis = Genesis(
        chain_id=CHAIN,
        timestamp_ms=1,
        ledger_nodes=(s.LEDGER.public,),
        balances=(),
        operators=(OPERATOR.public,),
        enrollment="approved",
    )
    path = root / "genesis.json"
    path.write_text(genesis.to_json())
    return genesis, path


def block_deciding(device: KeyPair, approve: bool, stamp: int, signer: KeyPair = OPERATOR) -> bytes:
    approval = s.device_approval(signer, device=device.public, approve=approve, timestamp_ms=stamp)
    return encode(dataclasses.replace(s.block(), approvals=(approval,)))


# ---- the rules, without a broker ------------------------------------------------------


def test_only_an_operators_later_decision_counts(tmp_path: Path) -> None:
    genesis, _ = approved_genesis(tmp_path)
    enrollment = BrokerEnrollment(genesis, tmp_path / "state.json")
    device = s.DEVICE
    assert not enrollment.is_enrolled(device.public)  # approved: nobody until a block says
    assert enrollment.learn_from_block(block_deciding(device, True, 10, signer=s.LEDGER)) == 0
    assert enrollment.learn_from_block(b"\x00 not a block") == 0
    assert enrollment.refused == 2 and not enrollment.is_enrolled(device.public)
    assert enrollment.learn_from_block(block_deciding(device, True, 10)) == 1
    assert enrollment.is_enrolled(device.public)
    assert enrollment.learn_from_block(block_deciding(device, False, 10)) == 0  # not later
    assert enrollment.learn_from_block(block_deciding(device, False, 11)) == 1
    assert not enrollment.is_enrolled(device.public)
    # Saved on every change, and read back by a restarted broker.
    again = BrokerEnrollment(genesis, tmp_path / "state.json")
    assert not again.is_enrolled(device.public) and len(again.decisions) == 1


def test_open_enrollment_enrolls_everyone_but_the_revoked(tmp_path: Path) -> None:
    genesis, _ = approved_genesis(tmp_path)
    enrollment = BrokerEnrollment(dataclasses.replace(genesis, enrollment="open"))
    assert enrollment.is_enrolled(s.DEVICE.public)
    enrollment.learn_from_block(block_deciding(s.DEVICE, False, 5))
    assert not enrollment.is_enrolled(s.DEVICE.public)
    assert enrollment.is_enrolled(s.OTHER_DEVICE.public)


@pytest.mark.parametrize(
    "content",
    ['{"chain_id": "other", "decisions": {}}', "not json", f'{{"chain_id": "{CHAIN}"}}'],
)
def test_a_bad_state_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    genesis, _ = approved_genesis(tmp_path)
    state = tmp_path / "state.json"
    state.write_text(content)
    with pytest.raises(ValueError, match="enrollment state"):
        BrokerEnrollment(genesis, state)


# ---- a real broker ----------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Secured]:
    _, genesis = approved_genesis(tmp_path)
    state = tmp_path / "enrollment.json"
    embedded = EmbeddedBroker(
        log_dir=tmp_path, extra_args=("--genesis", str(genesis), "--enrollment-state", str(state))
    )
    embedded.start()
    yield Secured("amqtt", embedded, tmp_path, {"state": state, "genesis": genesis})
    embedded.stop()


def hello_gets_through(device: Peer, watcher: Peer, tag: str) -> bool:
    """Publish a hello, then a transaction submission (allowed to any logged-in key);
    once the submission arrived, the hello would have too if it was allowed."""
    hello_topic = topics.device_topic(CHAIN, s.DEVICE.public, Channel.HELLO)
    device.publish(hello_topic, f"hello {tag}".encode())
    device.publish(topics.submit(CHAIN), f"after {tag}".encode())
    watcher.wait_for(topics.submit(CHAIN), f"after {tag}".encode())
    return watcher.received(hello_topic, f"hello {tag}".encode())


@pytest.mark.integration
def test_a_device_speaks_only_while_a_block_says_it_is_approved(broker: Secured) -> None:
    watcher = broker.peer(OPERATOR, "mm-operator")  # operators read every topic
    assert watcher.subscribe(f"micromine/{CHAIN}/#") == 1  # granted QoS 1
    ledger = broker.peer(s.LEDGER, "mm-ledger")
    device = broker.peer(s.DEVICE, "mm-device")
    assert not hello_gets_through(device, watcher, "before")

    ledger.publish(topics.blocks(CHAIN), block_deciding(s.DEVICE, True, 100))
    attempts = iter(range(1000))
    wait_until(
        lambda: hello_gets_through(device, watcher, f"approved {next(attempts)}"),
        10,
        message="the approved device's hello to get through",
    )
    state = json.loads(Path(str(broker.extra["state"])).read_text())
    assert state["decisions"] == {s.DEVICE.public.hex(): [True, 100]}

    # A restarted broker knows it from its state file, before any new block.
    for peer in (device, ledger, watcher):
        peer.close()
    broker.broker.stop()
    broker.broker.start()
    watcher = broker.peer(OPERATOR, "mm-operator")
    assert watcher.subscribe(f"micromine/{CHAIN}/#") == 1  # granted QoS 1
    ledger = broker.peer(s.LEDGER, "mm-ledger")
    device = broker.peer(s.DEVICE, "mm-device")
    assert hello_gets_through(device, watcher, "after restart")

    ledger.publish(topics.blocks(CHAIN), block_deciding(s.DEVICE, False, 200))
    attempts = iter(range(1000))
    wait_until(
        lambda: not hello_gets_through(device, watcher, f"revoked {next(attempts)}"),
        10,
        message="the revoked device's hello to be refused",
    )
    for peer in (device, ledger, watcher):
        peer.close()
