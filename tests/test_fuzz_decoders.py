"""Fuzzing the decoders of untrusted bytes: the strict CBOR parser, the message codec for
every kind, a submitted item, and the topic classifier.

Property: each raises only the documented ``DecodeError`` (or, for the two that never
raise, returns its documented refusal), and whatever it accepts is canonical.  The
round-trip and random-tree properties of the codec are in test_protocol_properties.py;
this file throws structure-aware hostile inputs (fuzz_support.hostile) at each kind.
"""

from typing import Any

import pytest
from framework import protocol_samples
from framework.fuzz_support import fuzz_settings, hostile
from hypothesis import example, given
from hypothesis import strategies as st

from micromine.protocol import cbor, codec, topics
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import MAX_ANY_MESSAGE_BYTES, MAX_SUBMISSION_ITEM_BYTES
from micromine.protocol.messages import Transaction
from micromine.protocol.validation import decode_transaction

SAMPLES: dict[type[Any], list[Any]] = {}
for _sample in [*protocol_samples.all_messages(), *protocol_samples.variant_messages().values()]:
    SAMPLES.setdefault(type(_sample), []).append(_sample)


def decode_cleanly(data: bytes, expected: type[Any] | None) -> Any:
    """Decode; a DecodeError with a documented code is a clean refusal (None)."""
    try:
        message = codec.decode(data, expected)
    except DecodeError as exc:
        assert isinstance(exc.code, DecodeFailure)
        return None
    assert codec.encode(message) == data  # what is accepted is canonical
    assert expected is None or type(message) is expected
    return message


@fuzz_settings(300)
@given(hostile(protocol_samples.all_messages()), st.integers(0, MAX_ANY_MESSAGE_BYTES))
@example(b"\x81" * 7 + b"\x00", MAX_ANY_MESSAGE_BYTES)  # deeper than MAX_DEPTH
@example(b"\x5b" + (2**62).to_bytes(8, "big"), MAX_ANY_MESSAGE_BYTES)  # a huge claimed length
@example(b"\xd9\x01\x02\x80", 64)  # tag 258 (a set), which cbor2 would build
def test_strict_cbor_parser_raises_only_decode_error(data: bytes, limit: int) -> None:
    try:
        cbor.decode(data, limit)
    except DecodeError as exc:
        assert isinstance(exc.code, DecodeFailure)
        assert len(data) <= limit or exc.code is DecodeFailure.TOO_LARGE


@pytest.mark.parametrize("kind", list(codec.MESSAGE_TYPES.values()), ids=lambda t: t.__name__)
@fuzz_settings(60)
@given(data=st.data())
def test_every_kind_refuses_hostile_bytes_cleanly(kind: type[Any], data: st.DataObject) -> None:
    payload = data.draw(hostile(SAMPLES[kind], codec.max_bytes(kind)))
    decode_cleanly(payload, kind)
    decode_cleanly(payload, None)


@fuzz_settings(300)
@given(
    st.one_of(
        hostile([protocol_samples.transaction()]),
        st.binary(min_size=500, max_size=MAX_SUBMISSION_ITEM_BYTES),
    )
)
def test_a_submitted_item_is_a_transaction_or_a_reason(item: bytes) -> None:
    decoded = decode_transaction(item)
    if isinstance(decoded, Transaction):
        assert codec.encode(decoded) == item
    else:
        assert decoded in (Reason.MALFORMED, Reason.OVERSIZED)


CHAIN = protocol_samples.CHAIN
KEY_HEX = protocol_samples.DEVICE.public.hex()
VALID_TOPICS = [
    topics.submit(CHAIN),
    topics.receipts(CHAIN, protocol_samples.REPLY_TO),
    topics.work(CHAIN, protocol_samples.DEVICE.public),
    topics.verdicts(CHAIN, protocol_samples.DEVICE.public),
    topics.blocks(CHAIN),
    topics.blocks_json(CHAIN),
    topics.consensus(CHAIN, protocol_samples.LEDGER.public),
    topics.sync_request(CHAIN),
    topics.sync_reply(CHAIN, protocol_samples.REPLY_TO),
    topics.ledger_status(CHAIN, protocol_samples.LEDGER.public),
    *(
        topics.device_topic(CHAIN, protocol_samples.DEVICE.public, channel)
        for channel in (
            topics.Channel.HELLO,
            topics.Channel.HEARTBEAT,
            topics.Channel.DEVICE_STATUS,
        )
    ),
]
LEVELS = ["", "+", "#", "request", "json", KEY_HEX, KEY_HEX.upper(), KEY_HEX[:-1],
          " " + KEY_HEX[1:], "\x00", "é", "status", "hello", "micromine", CHAIN, ".."]  # fmt: skip


@st.composite
def hostile_topics(draw: Any) -> str:
    levels = draw(st.sampled_from(VALID_TOPICS)).split("/")
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(levels)))
        replacement = draw(st.one_of(st.sampled_from(LEVELS), st.text(max_size=70)))
        match draw(st.sampled_from(["replace", "insert", "delete"])):
            case "replace" if i < len(levels):
                levels[i] = replacement
            case "insert":
                levels.insert(i, replacement)
            case "delete" if i < len(levels):
                del levels[i]
    return "/".join(levels)


KEY_LENGTHS = {
    topics.Channel.RECEIPTS: 16,
    topics.Channel.SYNC_REPLY: 16,
    topics.Channel.WORK: 32,
    topics.Channel.VERDICTS: 32,
    topics.Channel.HELLO: 32,
    topics.Channel.HEARTBEAT: 32,
    topics.Channel.DEVICE_STATUS: 32,
    topics.Channel.LEDGER_STATUS: 32,
    topics.Channel.CONSENSUS: 32,
}


@fuzz_settings(500)
@given(st.one_of(hostile_topics(), st.text(max_size=200)))
def test_topic_parse_names_a_channel_and_key_or_nothing(topic: str) -> None:
    parsed = topics.parse(CHAIN, topic)
    if parsed is None:
        return
    expected_length = KEY_LENGTHS.get(parsed.channel)
    if expected_length is None:
        assert parsed.key is None
    else:
        assert parsed.key is not None and len(parsed.key) == expected_length
        assert parsed.key.hex() in topic  # lowercase hex, exactly as it appeared
