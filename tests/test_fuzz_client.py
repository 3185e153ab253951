"""Fuzzing the client side: what ``LedgerClient`` does with receipts and blocks, the line
``micromine blocks watch`` prints for a block, and devnet's progress monitor (which
reads the ledger nodes' JSON status and blocks from the broker).

Properties: nothing raises; a refused message is counted (``bad_messages``,
``Progress.ignored``); a valid message after garbage is still taken in.
"""

import json
import time
from typing import Any

from framework import protocol_samples
from framework.fuzz_support import fuzz_settings, hostile, json_values
from hypothesis import example, given
from hypothesis import strategies as st

from micromine.cli.blocks import describe_block
from micromine.client import LedgerClient
from micromine.common.mqtt import Incoming
from micromine.devnet import Progress
from micromine.protocol import codec, topics
from micromine.protocol.block import Block
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import ReceiptStatus
from micromine.protocol.messages import Receipts

CHAIN = protocol_samples.CHAIN


def incoming(topic: str, payload: bytes, retained: bool = False) -> Incoming:
    return Incoming(topic, payload, time.monotonic(), retained)


@fuzz_settings(150)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("receipts"), hostile([protocol_samples.receipts()], 1 << 20)),
            st.tuples(st.just("blocks"), hostile([protocol_samples.block()], 1 << 24)),
        ),
        max_size=6,
    ),
    st.booleans(),
    st.booleans(),
)
def test_client_counts_bad_receipts_and_blocks_and_keeps_good_ones(
    garbage: list[tuple[str, bytes]], verify: bool, as_json: bool
) -> None:
    blocks: list[Block] = []
    client = LedgerClient("mqtt://127.0.0.1:1", CHAIN, watch_blocks=True, on_block=blocks.append)
    receipts_topic = topics.receipts(CHAIN, client.reply_to)
    validators = (protocol_samples.LEDGER.public,) if verify else None
    for channel, payload in garbage:
        topic = receipts_topic if channel == "receipts" else topics.blocks(CHAIN)
        kind = Receipts if channel == "receipts" else Block
        bad_before, blocks_before = client.bad_messages, len(blocks)
        client._take(incoming(topic, payload))  # must not raise
        try:
            message = codec.decode(payload, kind)
            refused = kind is Receipts and not codec.is_signature_valid(message)
        except DecodeError:
            refused = True
        assert client.bad_messages == bad_before + refused
        if kind is Block and not refused:
            assert len(blocks) == blocks_before + 1
            line = describe_block(blocks[-1], CHAIN, validators, as_json=as_json)
            if as_json:
                assert json.loads(line)["hash"] == blocks[-1].hash.hex()
    for fate in client.fates.values():
        fate.describe()
    # A genuine receipt still counts, and a final fate is never taken back.
    pending = protocol_samples.receipts(reply_to=client.reply_to)
    client._take(incoming(receipts_topic, codec.encode(pending)))
    for receipt in pending.receipts:
        fate = client.fates[receipt.item_id]
        assert fate.final or fate.status is ReceiptStatus(receipt.status)


status_documents = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(st.integers(0, 100), json_values)
        for name in (
            "height",
            "tx_count",
            "online",
            "devices_live",
            "mempool",
            "tip_signers",
            "tip_round",
        )
    },
)
json_payloads = st.one_of(
    status_documents.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.integers(1, 100_000).map(lambda n: b"[" * n),
    st.just(b'{"height": 1' + b"0" * 5000 + b"}"),  # more digits than int() takes
)


@fuzz_settings(200)
@given(st.lists(st.tuples(st.booleans(), json_payloads, st.booleans()), min_size=1, max_size=6))
@example([(True, b'{"height": "x"}', False)])  # int("x") crashed devnet
@example([(False, b'{"online": true, "devices_live": []}', False)])  # [] >= 4 crashed it
@example([(False, b"[" * 100_000, False)])
def test_devnet_progress_survives_any_status_or_block_json(
    messages: list[tuple[bool, bytes, bool]],
) -> None:
    progress = Progress()
    node = protocol_samples.LEDGER.public
    for is_block, payload, retained in messages:
        topic = topics.blocks_json(CHAIN) if is_block else topics.ledger_status(CHAIN, node)
        ignored = progress.ignored
        progress.take(incoming(topic, payload, retained), CHAIN)
        try:
            document: Any = json.loads(payload)
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            assert progress.ignored == ignored + 1
        # What devnet then does with what it kept:
        progress.line(agents=4)
        progress.online_heights()
        assert progress.ledger.get("devices_live", 0) >= 0
        for d in progress.ledgers.values():
            assert int(d.get("tip_signers", 0)) >= 0 and int(d.get("tip_round", 0)) >= 0
    good = json.dumps({"online": True, "height": 9, "devices_live": 4}).encode()
    progress.take(incoming(topics.ledger_status(CHAIN, node), good), CHAIN)
    assert progress.height >= 9 and progress.ledger["devices_live"] == 4
