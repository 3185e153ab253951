"""The MQTT topic tree: builders, parse, QoS/retain table."""

import pytest

from micromine.protocol import topics
from micromine.protocol.topics import Channel, ParsedTopic

CHAIN = "testnet-1"
DEV = bytes(range(32))
NODE = bytes(range(32, 64))
REPLY = bytes(range(16))
BASE = "micromine/testnet-1"


def test_builders_produce_the_documented_tree() -> None:
    assert topics.submit(CHAIN) == f"{BASE}/tx/submit"
    assert topics.receipts(CHAIN, REPLY) == f"{BASE}/receipts/{REPLY.hex()}"
    assert topics.work(CHAIN, DEV) == f"{BASE}/work/{DEV.hex()}"
    assert topics.verdicts(CHAIN, DEV) == f"{BASE}/verdicts/{DEV.hex()}"
    assert topics.all_verdicts(CHAIN) == f"{BASE}/verdicts/+"
    assert topics.device_topic(CHAIN, DEV, Channel.HELLO) == f"{BASE}/devices/{DEV.hex()}/hello"
    assert (
        topics.device_topic(CHAIN, DEV, Channel.HEARTBEAT)
        == f"{BASE}/devices/{DEV.hex()}/heartbeat"
    )
    assert (
        topics.device_topic(CHAIN, DEV, Channel.DEVICE_STATUS)
        == f"{BASE}/devices/{DEV.hex()}/status"
    )
    assert topics.all_devices(CHAIN) == f"{BASE}/devices/+/+"
    assert topics.blocks(CHAIN) == f"{BASE}/blocks"
    assert topics.blocks_json(CHAIN) == f"{BASE}/blocks/json"
    assert topics.ledger_status(CHAIN, NODE) == f"{BASE}/ledger/{NODE.hex()}/status"
    assert topics.consensus(CHAIN, NODE) == f"{BASE}/consensus/{NODE.hex()}"
    assert topics.all_consensus(CHAIN) == f"{BASE}/consensus/+"
    assert topics.sync_request(CHAIN) == f"{BASE}/sync/request"
    assert topics.sync_reply(CHAIN, REPLY) == f"{BASE}/sync/{REPLY.hex()}"
    assert DEV.hex() == DEV.hex().lower()


def test_channels_are_distinct() -> None:
    # Regression: equal TopicSpec values made WORK, VERDICTS... aliases of SUBMIT.
    assert len(list(Channel)) == 16
    assert len({c.name for c in Channel}) == 16
    assert len({c.value.pattern for c in Channel}) == 16
    assert Channel.WORK is not Channel.SUBMIT
    assert Channel.BLOCKS is not Channel.DEVICE_STATUS
    assert Channel["VERDICTS"].name == "VERDICTS"
    assert Channel.SYNC_REQUEST is not Channel.SYNC_REPLY
    assert Channel.CONSENSUS is not Channel.WORK


QOS_RETAIN = {
    Channel.SUBMIT: (1, False),
    Channel.RECEIPTS: (1, False),
    Channel.WORK: (1, False),
    Channel.VERDICTS: (1, False),
    Channel.HELLO: (1, True),
    Channel.HEARTBEAT: (0, False),
    Channel.DEVICE_STATUS: (1, True),
    Channel.BLOCKS: (1, True),
    Channel.BLOCKS_JSON: (1, True),
    Channel.LEDGER_STATUS: (1, True),
    Channel.CONSENSUS: (1, False),
    Channel.SYNC_REQUEST: (1, False),
    Channel.SYNC_REPLY: (1, False),
    Channel.APPROVALS: (1, False),
    Channel.ACCOUNTS: (1, True),
    Channel.FRAUDS: (1, False),
}


@pytest.mark.parametrize("channel", list(Channel), ids=lambda c: c.name)
def test_qos_and_retain(channel: Channel) -> None:
    assert (channel.qos, channel.retain) == QOS_RETAIN[channel]


ROUND_TRIPS = [
    (topics.submit(CHAIN), Channel.SUBMIT, None),
    (topics.receipts(CHAIN, REPLY), Channel.RECEIPTS, REPLY),
    (topics.work(CHAIN, DEV), Channel.WORK, DEV),
    (topics.verdicts(CHAIN, DEV), Channel.VERDICTS, DEV),
    (topics.device_topic(CHAIN, DEV, Channel.HELLO), Channel.HELLO, DEV),
    (topics.device_topic(CHAIN, DEV, Channel.HEARTBEAT), Channel.HEARTBEAT, DEV),
    (topics.device_topic(CHAIN, DEV, Channel.DEVICE_STATUS), Channel.DEVICE_STATUS, DEV),
    (topics.blocks(CHAIN), Channel.BLOCKS, None),
    (topics.blocks_json(CHAIN), Channel.BLOCKS_JSON, None),
    (topics.ledger_status(CHAIN, NODE), Channel.LEDGER_STATUS, NODE),
    (topics.consensus(CHAIN, NODE), Channel.CONSENSUS, NODE),
    (topics.sync_request(CHAIN), Channel.SYNC_REQUEST, None),
    (topics.sync_reply(CHAIN, REPLY), Channel.SYNC_REPLY, REPLY),
    (topics.approvals(CHAIN, NODE), Channel.APPROVALS, NODE),
    (topics.accounts(CHAIN, DEV), Channel.ACCOUNTS, DEV),
    (topics.frauds(CHAIN), Channel.FRAUDS, None),
]


@pytest.mark.parametrize(("topic", "channel", "key"), ROUND_TRIPS, ids=lambda v: str(v)[:40])
def test_build_then_parse(topic: str, channel: Channel, key: bytes | None) -> None:
    parsed = topics.parse(CHAIN, topic)
    assert parsed == ParsedTopic(channel, key)
    assert parsed is not None and parsed.channel is channel


def test_every_channel_round_trips() -> None:
    assert {channel for _, channel, _ in ROUND_TRIPS} == set(Channel)


def test_pattern_matches_built_topic() -> None:
    for topic, channel, key in ROUND_TRIPS:
        pattern = channel.value.pattern
        expected = pattern.replace("+", key.hex()) if key is not None else pattern
        assert topic == f"{BASE}/{expected}"


HEX64 = DEV.hex()
JUNK = [
    "",
    "micromine",
    "micromine/testnet-1",
    "micromine/testnet-1/",
    "micromine/testnet-2/tx/submit",  # another chain
    "micromine/testnet-10/tx/submit",  # prefix of the chain id must not match
    "Micromine/testnet-1/tx/submit",
    "/micromine/testnet-1/tx/submit",
    f"{BASE}/tx/submit/",
    f"{BASE}/tx",
    f"{BASE}/tx/submit/extra",
    f"{BASE}/blocks/",
    f"{BASE}/blocks/xml",
    f"{BASE}/work",
    f"{BASE}/work/",
    f"{BASE}/work/{HEX64}/",
    f"{BASE}/work/{HEX64[:-2]}",  # 31 bytes
    f"{BASE}/work/{HEX64}00",  # 33 bytes
    f"{BASE}/work/{HEX64.upper()}",
    f"{BASE}/work/{HEX64[:-1]}g",
    f"{BASE}/work/{HEX64[:-2]}  ",  # bytes.fromhex would skip the spaces
    f"{BASE}/work/{HEX64[:-2]} 0",
    f"{BASE}/work/{HEX64[:-2]}\t\n",
    f"{BASE}/work/+",
    f"{BASE}/work/#",
    f"{BASE}/verdicts/{REPLY.hex()}",  # 16-byte key where 32 are needed
    f"{BASE}/receipts/{HEX64}",  # 32-byte key where 16 are needed
    f"{BASE}/receipts/{REPLY.hex()[:-2]}\u0660\u0660",  # non-ASCII digits
    f"{BASE}/devices/{HEX64}",
    f"{BASE}/devices/{HEX64}/goodbye",
    f"{BASE}/devices/{HEX64}/status/x",
    f"{BASE}/devices/+/+",
    f"{BASE}/ledger/{HEX64}",
    f"{BASE}/ledger/{HEX64}/hello",
    f"{BASE}/unknown/{HEX64}",
    f"{BASE}/consensus",
    f"{BASE}/consensus/",
    f"{BASE}/consensus/+",
    f"{BASE}/consensus/{REPLY.hex()}",  # 16-byte key where 32 are needed
    f"{BASE}/consensus/{HEX64.upper()}",
    f"{BASE}/consensus/{HEX64}/",
    f"{BASE}/consensus/{HEX64}/prevote",
    f"{BASE}/sync",
    f"{BASE}/sync/",
    f"{BASE}/sync/+",
    f"{BASE}/sync/Request",
    f"{BASE}/sync/requests",
    f"{BASE}/sync/request/",
    f"{BASE}/sync/request/{REPLY.hex()}",
    f"{BASE}/sync/{HEX64}",  # 32-byte key where a 16-byte reply_to is needed
    f"{BASE}/sync/{REPLY.hex().upper()}",
    f"{BASE}/sync/{REPLY.hex()}/",
]


@pytest.mark.parametrize("topic", JUNK)
def test_parse_rejects_junk(topic: str) -> None:
    assert topics.parse(CHAIN, topic) is None


def test_sync_request_is_not_a_reply_channel() -> None:
    # "request" is a fixed level; no reply_to (32 lowercase hex digits) can spell it.
    assert topics.parse(CHAIN, f"{BASE}/sync/request") == ParsedTopic(Channel.SYNC_REQUEST, None)
    reply = bytes(16)
    assert topics.parse(CHAIN, topics.sync_reply(CHAIN, reply)) == ParsedTopic(
        Channel.SYNC_REPLY, reply
    )


def test_consensus_topic_is_per_sender() -> None:
    other = bytes(range(64, 96))
    assert topics.consensus(CHAIN, NODE) != topics.consensus(CHAIN, other)
    parsed = topics.parse(CHAIN, topics.consensus(CHAIN, other))
    assert parsed == ParsedTopic(Channel.CONSENSUS, other)
    assert topics.consensus("othernet", NODE) != topics.consensus(CHAIN, NODE)
    assert topics.parse("othernet", topics.consensus(CHAIN, NODE)) is None


@pytest.mark.parametrize("chain", ["", "a/b", "a+", "#", "a\x00"])
def test_bad_chain_ids_cannot_be_topic_levels(chain: str) -> None:
    with pytest.raises(ValueError):
        topics.submit(chain)
    with pytest.raises(ValueError):
        topics.parse(chain, "micromine/x/tx/submit")


@pytest.mark.parametrize("channel", list(Channel), ids=lambda c: c.name)
def test_device_topic_only_for_device_channels(channel: Channel) -> None:
    if channel in (Channel.HELLO, Channel.HEARTBEAT, Channel.DEVICE_STATUS):
        assert topics.device_topic(CHAIN, DEV, channel).startswith(f"{BASE}/devices/")
    else:
        with pytest.raises(ValueError):
            topics.device_topic(CHAIN, DEV, channel)
