"""The broker ACL table (``protocol/acl.py``), decided in memory for every role."""

import pytest
from framework.protocol_samples import CHAIN, DEVICE, LEDGER, OTHER_DEVICE, key

from micromine.protocol import topics
from micromine.protocol.acl import (
    TABLE,
    Policy,
    Role,
    check_publish,
    check_subscribe,
)
from micromine.protocol.topics import Channel

OPERATOR = key("operator")
WALLET = key("wallet")
POLICY = Policy(
    CHAIN,
    frozenset({LEDGER.public}),
    frozenset({OPERATOR.public}),
    is_enrolled=lambda k: k != WALLET.public,
)
REPLY = bytes(range(16))
BASE = f"micromine/{CHAIN}"


def may_publish(who: bytes | None, topic: str) -> bool:
    return check_publish(POLICY, who, topic).allowed


def may_subscribe(who: bytes | None, topic_filter: str) -> bool:
    return check_subscribe(POLICY, who, topic_filter).allowed


def test_every_channel_has_a_rule() -> None:
    assert set(TABLE) == set(Channel)


def test_roles() -> None:
    assert POLICY.role_of(None) is Role.ANONYMOUS
    assert POLICY.role_of(LEDGER.public) is Role.LEDGER
    assert POLICY.role_of(OPERATOR.public) is Role.OPERATOR
    assert POLICY.role_of(DEVICE.public) is Role.DEVICE
    assert POLICY.role_of(WALLET.public) is Role.CLIENT
    assert Policy(CHAIN, frozenset()).role_of(WALLET.public) is Role.DEVICE  # open by default


def test_a_device_publishes_only_as_itself() -> None:
    me, other = DEVICE.public, OTHER_DEVICE.public
    assert may_publish(me, topics.verdicts(CHAIN, me))
    assert not may_publish(me, topics.verdicts(CHAIN, other))
    for channel in (Channel.HELLO, Channel.HEARTBEAT, Channel.DEVICE_STATUS):
        assert may_publish(me, topics.device_topic(CHAIN, me, channel))
        assert not may_publish(me, topics.device_topic(CHAIN, other, channel))
    assert may_publish(me, topics.submit(CHAIN))
    for topic in (
        topics.blocks(CHAIN), topics.blocks_json(CHAIN), topics.work(CHAIN, me),
        topics.work(CHAIN, other), topics.receipts(CHAIN, REPLY), topics.consensus(CHAIN, me),
        topics.sync_request(CHAIN), topics.sync_reply(CHAIN, REPLY),
        topics.ledger_status(CHAIN, me),
        f"{BASE}/elsewhere", "micromine/other-chain/tx/submit", f"{BASE}/verdicts/+",
    ):  # fmt: skip
        assert not may_publish(me, topic), topic


def test_a_device_subscribes_to_its_work_and_the_public_topics_only() -> None:
    me, other = DEVICE.public, OTHER_DEVICE.public
    for allowed in (topics.work(CHAIN, me), topics.blocks(CHAIN), topics.blocks_json(CHAIN),
                    topics.receipts(CHAIN, REPLY), f"{BASE}/ledger/+/status"):  # fmt: skip
        assert may_subscribe(me, allowed), allowed
    for refused in (
        topics.work(CHAIN, other), f"{BASE}/work/+", f"{BASE}/work/#", f"{BASE}/#", "#",
        f"{BASE}/receipts/+", topics.all_verdicts(CHAIN), f"{BASE}/tx/submit",
        topics.all_devices(CHAIN), topics.all_consensus(CHAIN),
        f"micromine/+/work/{me.hex()}", f"{BASE}/work/{me.hex()}/x", f"{BASE}/nothing",
    ):  # fmt: skip
        assert not may_subscribe(me, refused), refused


def test_a_wallet_submits_and_reads_receipts_but_is_no_device() -> None:
    wallet = WALLET.public
    assert may_publish(wallet, topics.submit(CHAIN))
    assert may_subscribe(wallet, topics.receipts(CHAIN, REPLY))
    assert not may_publish(wallet, topics.verdicts(CHAIN, wallet))
    assert not may_subscribe(wallet, topics.work(CHAIN, wallet))


def test_anonymous_reads_blocks_and_nothing_else() -> None:
    assert may_subscribe(None, topics.blocks(CHAIN))
    assert may_subscribe(None, topics.blocks_json(CHAIN))
    assert may_subscribe(None, f"{BASE}/blocks/#")  # it can only match the two public channels
    for refused in (f"{BASE}/#", f"{BASE}/ledger/+/status", f"{BASE}/+/+",
                    topics.receipts(CHAIN, REPLY), topics.work(CHAIN, DEVICE.public)):  # fmt: skip
        assert not may_subscribe(None, refused), refused
    for channel_topic in (topics.submit(CHAIN), topics.blocks(CHAIN)):
        assert not may_publish(None, channel_topic)


def test_ledger_nodes_publish_the_ledgers_topics_and_subscribe_as_the_service_does() -> None:
    me = LEDGER.public
    for topic in (
        topics.blocks(CHAIN), topics.blocks_json(CHAIN), topics.work(CHAIN, DEVICE.public),
        topics.receipts(CHAIN, REPLY), topics.consensus(CHAIN, me), topics.sync_request(CHAIN),
        topics.sync_reply(CHAIN, REPLY), topics.ledger_status(CHAIN, me), topics.submit(CHAIN),
    ):  # fmt: skip
        assert may_publish(me, topic), topic
    other = OTHER_DEVICE.public
    assert not may_publish(me, topics.consensus(CHAIN, other))  # only its own consensus topic
    assert not may_publish(me, topics.ledger_status(CHAIN, other))
    assert not may_publish(me, topics.verdicts(CHAIN, me))
    # the filters LedgerService subscribes to
    for topic_filter in (
        topics.submit(CHAIN), topics.all_verdicts(CHAIN), topics.all_devices(CHAIN),
        topics.all_consensus(CHAIN), topics.sync_request(CHAIN), topics.sync_reply(CHAIN, REPLY),
        f"{BASE}/sync/+",
    ):  # fmt: skip
        assert may_subscribe(me, topic_filter), topic_filter
    assert not may_subscribe(me, f"{BASE}/work/+")


def test_operators_read_everything_of_the_chain_and_publish_only_submissions() -> None:
    op = OPERATOR.public
    assert may_subscribe(op, f"{BASE}/#")
    assert may_subscribe(op, f"{BASE}/work/+")
    assert not may_subscribe(op, "#")
    assert not may_subscribe(op, "micromine/#")
    assert may_publish(op, topics.submit(CHAIN))
    assert not may_publish(op, topics.blocks(CHAIN))


@pytest.mark.parametrize(
    "bad", ["", "/", f"{BASE}//", f"{BASE}/work/a+", f"{BASE}/#/blocks", f"{BASE}/bl#"]
)
def test_malformed_filters_are_refused(bad: str) -> None:
    assert not may_subscribe(OPERATOR.public, bad)


def test_sync_request_is_not_a_sync_reply() -> None:
    assert may_subscribe(LEDGER.public, topics.sync_request(CHAIN))
    assert not may_subscribe(DEVICE.public, topics.sync_request(CHAIN))
    assert not may_subscribe(DEVICE.public, f"{BASE}/sync/{'00' * 16}")
