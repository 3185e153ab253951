"""codec.decode / codec.encode: round trips, and every DecodeFailure from a crafted input.

Longer than 400 lines because it crafts one input per DecodeFailure code, per kind.
"""

from typing import Any

import pytest
from framework import protocol_samples as s

from micromine.protocol import cbor, codec
from micromine.protocol.block import (
    Block,
    BlockHeader,
    CommitSignature,
    FraudReport,
    Reward,
    compute_body_hash,
    compute_tx_root,
)
from micromine.protocol.consensus import Precommit, Prevote, Proposal, SyncRequest
from micromine.protocol.crypto import sha256
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.kinds import SIGNATURE_ONLY, Kind
from micromine.protocol.limits import (
    MAX_ANY_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_SUBMISSION_ITEM_BYTES,
    MAX_TX_BYTES,
)
from micromine.protocol.merkle import merkle_root
from micromine.protocol.messages import (
    Assignment,
    Judgement,
    Receipt,
    Receipts,
    Submission,
    Transaction,
    Verdict,
    WorkBatch,
)

ONE_PER_KIND = s.all_messages()
ALL = [*ONE_PER_KIND, *s.variant_messages().values()]
ALL_IDS = [type(m).__name__ for m in ONE_PER_KIND] + list(s.variant_messages())
TYPES = [type(m) for m in ONE_PER_KIND]


def failure(data: bytes, expected: type[Any] | None = None) -> DecodeFailure:
    with pytest.raises(DecodeError) as info:
        codec.decode(data, expected)
    assert isinstance(info.value.code, DecodeFailure)
    return info.value.code


# --- round trips ------------------------------------------------------------------------


def test_every_kind_has_a_sample() -> None:
    assert [type(m).KIND for m in ONE_PER_KIND] == sorted(set(Kind) - SIGNATURE_ONLY)
    assert {type(m).KIND for m in ALL} == set(Kind) - SIGNATURE_ONLY
    assert set(codec.MESSAGE_TYPES.values()) == set(TYPES)
    for tag, message_type in codec.MESSAGE_TYPES.items():
        assert tag == message_type.KIND


@pytest.mark.parametrize("message", ALL, ids=ALL_IDS)
def test_round_trip_is_byte_identical(message: Any) -> None:
    data = codec.encode(message)
    assert data[0] >> 5 == 4, "a message is a CBOR array"
    assert cbor.decode(data, len(data))[0] == type(message).KIND
    decoded = codec.decode(data)
    assert decoded == message
    assert type(decoded) is type(message)
    assert codec.decode(data, type(message)) == message
    assert codec.encode(decoded) == data
    assert len(data) <= codec.max_bytes(type(message))


@pytest.mark.parametrize("message", ALL, ids=ALL_IDS)
def test_decode_accepts_bytes_like(message: Any) -> None:
    data = codec.encode(message)
    assert codec.decode(bytearray(data)) == message
    assert codec.decode(memoryview(data)) == message


@pytest.mark.parametrize("message", ALL, ids=ALL_IDS)
def test_every_other_expected_kind_is_wrong_kind(message: Any) -> None:
    data = codec.encode(message)
    for other in TYPES:
        if other is type(message):
            continue
        if len(data) > codec.max_bytes(other):
            assert failure(data, other) is DecodeFailure.TOO_LARGE
        else:
            assert failure(data, other) is DecodeFailure.WRONG_KIND


@pytest.mark.parametrize("message", ALL, ids=ALL_IDS)
def test_every_proper_prefix_is_not_cbor(message: Any) -> None:
    data = codec.encode(message)
    for end in range(len(data)):
        assert failure(data[:end]) is DecodeFailure.NOT_CBOR, end


def test_transaction_wire_layout() -> None:
    tx = s.transaction()
    assert tx.to_wire() == [
        1, tx.chain_id, tx.sender, tx.recipient, tx.amount, tx.fee, tx.nonce,
        tx.expiry_ms, tx.memo, tx.signature,
    ]  # fmt: skip
    assert tx.unsigned_wire() == tx.to_wire()[:-1]
    assert tx.id == sha256(cbor.encode(tx.unsigned_wire()))


def test_ids_exclude_the_signature() -> None:
    for name, build in s.SIGNED_BUILDERS.items():
        message = build()
        unsigned = s.replace(message, signature=bytes(64))
        assert unsigned.id == message.id, name
        assert codec.encode(unsigned) != codec.encode(message), name


def test_block_hash_is_the_header_hash() -> None:
    block = s.block()
    assert block.hash == block.header.hash == sha256(codec.encode(block.header))
    assert block.height == block.header.height
    assert block.header.tx_root == compute_tx_root(block.txs)
    assert compute_tx_root(block.txs) == merkle_root([tx.id for tx in block.txs])
    assert block.registrations  # the sample block registers a device
    assert block.frauds  # and bans one
    body = cbor.encode(
        [
            [v.to_wire() for v in block.verdicts],
            [r.to_wire() for r in block.rewards],
            [h.to_wire() for h in block.registrations],
            [a.to_wire() for a in block.approvals],
            [f.to_wire() for f in block.frauds],
        ]
    )
    assert block.header.body_hash == compute_body_hash(
        block.verdicts,
        block.rewards,
        block.registrations,
        approvals=block.approvals,
        frauds=block.frauds,
    )
    assert block.header.body_hash == sha256(body)
    assert codec.is_commit_signature_valid(
        block.certificate[0].signer,
        s.CHAIN,
        block.commit_round,
        block.hash,
        block.certificate[0].signature,
    )


def test_empty_block_round_trips() -> None:
    header = s.block_header(tx_root=merkle_root([]), body_hash=compute_body_hash((), (), ()))
    block = Block(header, (), (), (), 0, ())
    assert codec.decode(codec.encode(block), Block) == block


def test_max_bytes_table() -> None:
    assert codec.max_bytes(Transaction) == MAX_TX_BYTES == 512
    assert max(MAX_MESSAGE_BYTES.values()) == MAX_ANY_MESSAGE_BYTES
    assert {codec.max_bytes(t) for t in TYPES} == set(MAX_MESSAGE_BYTES.values())


# --- each DecodeFailure from a crafted input --------------------------------------------

TX = s.transaction(nonce=1, amount=1000)
TX_ITEMS = s.wire_items(TX)
# Transaction wire positions.
CHAIN_ID, SENDER, RECIPIENT, AMOUNT, FEE, NONCE, EXPIRY, MEMO, SIGNATURE = range(1, 10)


def tx_with(index: int, encoded: bytes) -> bytes:
    return s.with_field(TX, index, encoded)


def text(value: str, width: int | None = None) -> bytes:
    raw = value.encode()
    return s.head(3, len(raw), width) + raw


def byte_string(value: bytes, width: int | None = None) -> bytes:
    return s.head(2, len(value), width) + value


def nested(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


BATCH = s.work_batch()
BATCH_TXS = 2  # wire position of WorkBatch.txs


def batch_with_txs(encoded_txs: list[bytes]) -> bytes:
    return s.with_field(BATCH, BATCH_TXS, s.raw_array(encoded_txs))


# (case id, input, expected type or None, failure code)
CASES: list[tuple[str, bytes, type[Any] | None, DecodeFailure]] = [
    # TOO_LARGE: checked before parsing against the expected kind's cap, or the largest.
    ("too large for a tx", b"\x00" * (MAX_TX_BYTES + 1), Transaction, DecodeFailure.TOO_LARGE),
    ("too large for anything", bytes(MAX_ANY_MESSAGE_BYTES + 1), None, DecodeFailure.TOO_LARGE),
    (
        "hello over its 1024 cap, kind found after parsing",
        s.with_field(s.device_hello(), 3, text("v" * 1100)),
        None,
        DecodeFailure.TOO_LARGE,
    ),
    # NOT_CBOR: malformed or truncated.
    ("empty", b"", None, DecodeFailure.NOT_CBOR),
    ("lone break", b"\xff", None, DecodeFailure.NOT_CBOR),
    ("reserved additional info 28", b"\x1c", None, DecodeFailure.NOT_CBOR),
    ("reserved additional info 30 in text", b"\x7e", None, DecodeFailure.NOT_CBOR),
    ("truncated tx", codec.encode(TX)[:-1], None, DecodeFailure.NOT_CBOR),
    ("truncated head", b"\x8a\x01\x1b\x00\x00", None, DecodeFailure.NOT_CBOR),
    ("array longer than input", b"\x9b" + bytes([0xFF] * 8), None, DecodeFailure.NOT_CBOR),
    ("break inside definite array", s.raw_array([b"\x01", b"\xff"]), None, DecodeFailure.NOT_CBOR),
    ("invalid utf-8 memo", tx_with(MEMO, b"\x61\xff"), None, DecodeFailure.NOT_CBOR),
    ("overlong utf-8 memo", tx_with(MEMO, b"\x62\xc0\x80"), None, DecodeFailure.NOT_CBOR),
    ("utf-8 surrogate memo", tx_with(MEMO, b"\x63\xed\xa0\x80"), None, DecodeFailure.NOT_CBOR),
    # TOO_DEEP: more than 7 nested containers.
    ("8 nested arrays", nested(8), None, DecodeFailure.TOO_DEEP),
    ("deep memo", tx_with(MEMO, nested(7)), None, DecodeFailure.TOO_DEEP),
    ("deep tags", b"\xc1" * 8 + b"\x00", None, DecodeFailure.TOO_DEEP),
    # INDEFINITE_LENGTH
    (
        "indefinite tx array",
        b"\x9f" + b"".join(TX_ITEMS) + b"\xff",
        None,
        DecodeFailure.INDEFINITE_LENGTH,
    ),
    ("indefinite text", tx_with(MEMO, b"\x7f\x61a\xff"), None, DecodeFailure.INDEFINITE_LENGTH),
    (
        "indefinite bytes",
        tx_with(SENDER, b"\x5f" + byte_string(TX.sender) + b"\xff"),
        None,
        DecodeFailure.INDEFINITE_LENGTH,
    ),
    ("indefinite map", tx_with(MEMO, b"\xbf\xff"), None, DecodeFailure.INDEFINITE_LENGTH),
    # DUPLICATE_KEY
    (
        "duplicate int key",
        tx_with(MEMO, b"\xa2\x01\x00\x01\x00"),
        None,
        DecodeFailure.DUPLICATE_KEY,
    ),
    (
        "duplicate key spelling 'indefinite'",
        tx_with(MEMO, b"\xa2" + (text("indefinite") + b"\x00") * 2),
        None,
        DecodeFailure.DUPLICATE_KEY,
    ),
    # TRAILING_BYTES
    ("one trailing byte", codec.encode(TX) + b"\x00", None, DecodeFailure.TRAILING_BYTES),
    ("two messages", codec.encode(TX) * 2, None, DecodeFailure.TRAILING_BYTES),
    ("trailing int", b"\x01\x02", None, DecodeFailure.TRAILING_BYTES),
    # NOT_CANONICAL: right value, not the shortest encoding.
    ("0x1801 for nonce 1", tx_with(NONCE, b"\x18\x01"), None, DecodeFailure.NOT_CANONICAL),
    ("4-byte amount", tx_with(AMOUNT, s.head(0, 1000, 4)), None, DecodeFailure.NOT_CANONICAL),
    ("8-byte fee", tx_with(FEE, s.head(0, TX.fee, 8)), None, DecodeFailure.NOT_CANONICAL),
    ("wide kind tag", tx_with(0, b"\x18\x01"), None, DecodeFailure.NOT_CANONICAL),
    ("wide text length", tx_with(CHAIN_ID, text(s.CHAIN, 1)), None, DecodeFailure.NOT_CANONICAL),
    (
        "wide bytes length",
        tx_with(SENDER, byte_string(TX.sender, 2)),
        None,
        DecodeFailure.NOT_CANONICAL,
    ),
    ("wide array length", s.raw_array(TX_ITEMS, 1), None, DecodeFailure.NOT_CANONICAL),
    (
        "non-canonical tx inside a batch",
        batch_with_txs(
            [codec.encode(BATCH.txs[0])[:-66] + b"\x59\x00\x40" + BATCH.txs[0].signature]
        ),
        None,
        DecodeFailure.NOT_CANONICAL,
    ),
    # UNKNOWN_KIND
    ("kind 0", s.raw_array([b"\x00"]), None, DecodeFailure.UNKNOWN_KIND),
    ("kind 11 (COMMIT, signature only)", s.raw_array([b"\x0b"]), None, DecodeFailure.UNKNOWN_KIND),
    ("kind 19, after the last", s.raw_array([b"\x13"]), None, DecodeFailure.UNKNOWN_KIND),
    ("kind 99", s.raw_array([b"\x18\x63", b"\x01"]), None, DecodeFailure.UNKNOWN_KIND),
    ("kind 2^64-1", s.raw_array([b"\x1b" + b"\xff" * 8]), None, DecodeFailure.UNKNOWN_KIND),
    ("kind -1", s.raw_array([b"\x20"]), None, DecodeFailure.UNKNOWN_KIND),
    # WRONG_KIND
    ("heartbeat as tx", codec.encode(s.heartbeat()), Transaction, DecodeFailure.WRONG_KIND),
    ("tx as batch", codec.encode(TX), WorkBatch, DecodeFailure.WRONG_KIND),
    ("unknown kind as tx", s.raw_array([b"\x18\x63"]), Transaction, DecodeFailure.UNKNOWN_KIND),
    (
        "heartbeat inside a batch",
        batch_with_txs([codec.encode(s.heartbeat())]),
        None,
        DecodeFailure.WRONG_KIND,
    ),
    # BAD_SHAPE: not an array, no kind tag, wrong number of fields.
    ("bare int", b"\x01", None, DecodeFailure.BAD_SHAPE),
    ("bare int as tx", b"\x01", Transaction, DecodeFailure.BAD_SHAPE),
    ("map", b"\xa1\x01\x02", None, DecodeFailure.BAD_SHAPE),
    ("text", text("hello"), None, DecodeFailure.BAD_SHAPE),
    ("float", b"\xf9\x3c\x00", None, DecodeFailure.BAD_SHAPE),
    ("empty array", b"\x80", None, DecodeFailure.BAD_SHAPE),
    ("text kind tag", s.raw_array([text("tx")]), None, DecodeFailure.BAD_SHAPE),
    ("bool kind tag", s.raw_array([b"\xf5"]), None, DecodeFailure.BAD_SHAPE),
    ("tx missing signature", s.raw_array(TX_ITEMS[:-1]), None, DecodeFailure.BAD_SHAPE),
    ("tx extra field", s.raw_array([*TX_ITEMS, b"\x00"]), None, DecodeFailure.BAD_SHAPE),
    (
        "batch txs not an array",
        s.with_field(BATCH, BATCH_TXS, b"\x01"),
        None,
        DecodeFailure.BAD_SHAPE,
    ),
    ("batch tx not an array", batch_with_txs([b"\x01"]), None, DecodeFailure.BAD_SHAPE),
    (
        "verdict judgement of 4",
        s.with_field(
            s.verdict(),
            4,
            s.raw_array([s.raw_array([byte_string(bytes(32))] * 2 + [b"\x00", b"\x00"])]),
        ),
        None,
        DecodeFailure.BAD_SHAPE,
    ),
    # BAD_TYPE: a field of the wrong CBOR type.
    ("float amount", tx_with(AMOUNT, b"\xf9\x3c\x00"), None, DecodeFailure.BAD_TYPE),
    ("double amount", tx_with(AMOUNT, b"\xfb" + bytes(8)), None, DecodeFailure.BAD_TYPE),
    ("true for int", tx_with(AMOUNT, b"\xf5"), None, DecodeFailure.BAD_TYPE),
    ("false for int", tx_with(NONCE, b"\xf4"), None, DecodeFailure.BAD_TYPE),
    ("map for int", tx_with(AMOUNT, b"\xa0"), None, DecodeFailure.BAD_TYPE),
    ("array for int", tx_with(AMOUNT, b"\x80"), None, DecodeFailure.BAD_TYPE),
    ("null for int", tx_with(AMOUNT, b"\xf6"), None, DecodeFailure.BAD_TYPE),
    ("undefined for int", tx_with(AMOUNT, b"\xf7"), None, DecodeFailure.BAD_TYPE),
    ("simple(0) for int", tx_with(AMOUNT, b"\xe0"), None, DecodeFailure.BAD_TYPE),
    ("bytes for int", tx_with(AMOUNT, byte_string(b"\x03\xe8")), None, DecodeFailure.BAD_TYPE),
    ("epoch tag on int", tx_with(AMOUNT, b"\xc1" + s.head(0, 1000)), None, DecodeFailure.BAD_TYPE),
    (
        "bignum tag",
        tx_with(AMOUNT, b"\xc2" + byte_string(b"\x03\xe8")),
        None,
        DecodeFailure.BAD_TYPE,
    ),
    ("uri tag on memo", tx_with(MEMO, b"\xd8\x20" + text("coffee")), None, DecodeFailure.BAD_TYPE),
    ("tag on whole message", b"\xd9\xd9\xf7" + codec.encode(TX), None, DecodeFailure.BAD_TYPE),
    ("shared-value tag", b"\xd8\x1c\x81\xd8\x1d\x00", None, DecodeFailure.BAD_TYPE),
    ("text for bytes", tx_with(SENDER, text("k" * 32)), None, DecodeFailure.BAD_TYPE),
    ("bytes for text", tx_with(MEMO, byte_string(b"coffee")), None, DecodeFailure.BAD_TYPE),
    ("int for bool", s.with_field(s.device_status(), 3, b"\x00"), None, DecodeFailure.BAD_TYPE),
    ("int for chain id", tx_with(CHAIN_ID, b"\x01"), None, DecodeFailure.BAD_TYPE),
    (
        "int submission item",
        s.with_field(s.submission(), 3, s.raw_array([b"\x01"])),
        None,
        DecodeFailure.BAD_TYPE,
    ),
    # OUT_OF_RANGE: right type, outside the documented range.
    ("amount 2^63", tx_with(AMOUNT, s.head(0, 2**63)), None, DecodeFailure.OUT_OF_RANGE),
    ("amount 2^64-1", tx_with(AMOUNT, s.head(0, 2**64 - 1)), None, DecodeFailure.OUT_OF_RANGE),
    ("negative amount", tx_with(AMOUNT, b"\x20"), None, DecodeFailure.OUT_OF_RANGE),
    ("expiry 2^53+1", tx_with(EXPIRY, s.head(0, 2**53 + 1)), None, DecodeFailure.OUT_OF_RANGE),
    ("31-byte sender", tx_with(SENDER, byte_string(bytes(31))), None, DecodeFailure.OUT_OF_RANGE),
    (
        "33-byte recipient",
        tx_with(RECIPIENT, byte_string(bytes(33))),
        None,
        DecodeFailure.OUT_OF_RANGE,
    ),
    (
        "63-byte signature",
        tx_with(SIGNATURE, byte_string(bytes(63))),
        None,
        DecodeFailure.OUT_OF_RANGE,
    ),
    ("65-byte memo", tx_with(MEMO, text("m" * 65)), None, DecodeFailure.OUT_OF_RANGE),
    ("66 utf-8 bytes memo", tx_with(MEMO, text("\u20ac" * 22)), None, DecodeFailure.OUT_OF_RANGE),
    ("empty chain id", tx_with(CHAIN_ID, text("")), None, DecodeFailure.OUT_OF_RANGE),
    ("uppercase chain id", tx_with(CHAIN_ID, text("Testnet")), None, DecodeFailure.OUT_OF_RANGE),
    ("chain id with slash", tx_with(CHAIN_ID, text("a/b")), None, DecodeFailure.OUT_OF_RANGE),
    ("chain id leading dash", tx_with(CHAIN_ID, text("-a")), None, DecodeFailure.OUT_OF_RANGE),
    ("33-char chain id", tx_with(CHAIN_ID, text("a" * 33)), None, DecodeFailure.OUT_OF_RANGE),
    ("capacity 0", s.with_field(s.device_hello(), 4, b"\x00"), None, DecodeFailure.OUT_OF_RANGE),
    (
        "capacity 257",
        s.with_field(s.device_hello(), 4, s.head(0, 257)),
        None,
        DecodeFailure.OUT_OF_RANGE,
    ),
    (
        "busy 1025",
        s.with_field(s.heartbeat(), 5, s.head(0, 1025)),
        None,
        DecodeFailure.OUT_OF_RANGE,
    ),
    ("empty batch", batch_with_txs([]), None, DecodeFailure.OUT_OF_RANGE),
    (
        "empty submission",
        s.with_field(s.submission(), 3, b"\x80"),
        None,
        DecodeFailure.OUT_OF_RANGE,
    ),
    (
        "oversized submission item",
        s.with_field(
            s.submission(), 3, s.raw_array([byte_string(bytes(MAX_SUBMISSION_ITEM_BYTES + 1))])
        ),
        None,
        DecodeFailure.OUT_OF_RANGE,
    ),
    (
        "15-byte reply_to",
        s.with_field(s.submission(), 2, byte_string(bytes(15))),
        None,
        DecodeFailure.OUT_OF_RANGE,
    ),
    (
        "receipt status 4",
        s.with_field(
            s.receipts(), 5, s.raw_array([s.raw_array([byte_string(bytes(32)), b"\x04", b"\x00"])])
        ),
        None,
        DecodeFailure.OUT_OF_RANGE,
    ),
    (
        "HELD receipt without its detail",
        s.with_field(
            s.receipts(), 5, s.raw_array([s.raw_array([byte_string(bytes(32)), b"\x03", b"\x0a"])])
        ),
        None,
        DecodeFailure.BAD_SHAPE,
    ),
    (
        "receipt of 4 items",
        s.with_field(
            s.receipts(),
            5,
            s.raw_array([s.raw_array([byte_string(bytes(32)), b"\x03", b"\x0a", b"\x01"])]),
        ),
        None,
        DecodeFailure.BAD_SHAPE,
    ),
    (
        "judgement reason 256",
        s.with_field(
            s.verdict(),
            4,
            s.raw_array([s.raw_array([byte_string(bytes(32))] * 2 + [s.head(0, 256)])]),
        ),
        None,
        DecodeFailure.OUT_OF_RANGE,
    ),
    ("empty verdict", s.with_field(s.verdict(), 4, b"\x80"), None, DecodeFailure.OUT_OF_RANGE),
]


@pytest.mark.parametrize(
    ("data", "expected", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_crafted_input_fails_with_its_code(
    data: bytes, expected: type[Any] | None, code: DecodeFailure
) -> None:
    assert failure(data, expected) is code


def test_every_failure_code_has_a_case() -> None:
    assert {c[3] for c in CASES} == set(DecodeFailure)


def test_decode_error_carries_code_and_detail() -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(tx_with(NONCE, b"\x18\x01"))
    assert info.value.code is DecodeFailure.NOT_CANONICAL
    assert str(info.value).startswith("not_canonical: ")
    assert isinstance(info.value, ValueError)


def test_non_bytes_input_is_bad_type() -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode("\x80")  # type: ignore[call-overload]
    assert info.value.code is DecodeFailure.BAD_TYPE


def test_trailing_bytes_after_a_large_message() -> None:
    # Larger than cbor2's read-ahead buffer, so the stream position must be exact.
    big = s.submission(items=tuple(bytes([i]) * 400 for i in range(40)))
    data = codec.encode(big)
    assert len(data) > 8192
    assert codec.decode(data) == big
    assert failure(data + b"\x00") is DecodeFailure.TRAILING_BYTES
    assert failure(data + bytes(5000)) is DecodeFailure.TRAILING_BYTES


def test_depth_six_is_allowed() -> None:
    # Block > verdicts > verdict > judgements > judgement is five deep; six still parses.
    assert cbor.decode(nested(6), 100) == [[[[[[0]]]]]]
    assert codec.decode(codec.encode(s.block())) == s.block()
    # Proposal > block > verdicts > verdict > judgements > judgement: exactly MAX_DEPTH.
    proposal = s.proposal()
    assert proposal.block.verdicts and proposal.block.verdicts[0].judgements
    assert codec.decode(codec.encode(proposal)) == proposal


# --- constructing messages runs the same checks -----------------------------------------

CONSTRUCTION_CASES: list[tuple[str, Any, DecodeFailure]] = [
    ("bool amount", lambda: s.transaction(amount=True), DecodeFailure.BAD_TYPE),
    ("negative fee", lambda: s.transaction(fee=-1), DecodeFailure.OUT_OF_RANGE),
    (
        "enum is not int",
        lambda: Judgement(bytes(32), bytes(32), Kind.VERDICT),
        DecodeFailure.BAD_TYPE,
    ),
    ("str sender", lambda: s.transaction(sender="00" * 32), DecodeFailure.BAD_TYPE),
    ("list of txs", lambda: s.work_batch(txs=[s.transaction()]), DecodeFailure.BAD_TYPE),
    ("257 txs", lambda: s.work_batch(txs=(s.transaction(),) * 257), DecodeFailure.OUT_OF_RANGE),
    ("non-tx in batch", lambda: s.work_batch(txs=(s.heartbeat(),)), DecodeFailure.BAD_TYPE),
    ("lone surrogate memo", lambda: s.transaction(memo="\ud800"), DecodeFailure.OUT_OF_RANGE),
    ("non-judgement", lambda: s.verdict(judgements=(1,)), DecodeFailure.BAD_TYPE),
    ("non-receipt", lambda: s.receipts(receipts=(b"",)), DecodeFailure.BAD_TYPE),
    ("receipt status 4", lambda: Receipt(bytes(32), 4, 0), DecodeFailure.OUT_OF_RANGE),
    ("PENDING with a detail", lambda: Receipt(bytes(32), 0, 0, 1, 2), DecodeFailure.BAD_SHAPE),
    (
        "stateless rejection with a detail",
        lambda: Receipt(bytes(32), 2, 3, 1, 2),
        DecodeFailure.BAD_SHAPE,
    ),
    ("BAD_NONCE without a detail", lambda: Receipt(bytes(32), 2, 9), DecodeFailure.BAD_SHAPE),
    ("half a detail", lambda: Receipt(bytes(32), 3, 10, 1), DecodeFailure.BAD_TYPE),
    ("reward to short key", lambda: Reward(bytes(31), 1), DecodeFailure.OUT_OF_RANGE),
    ("commit sig of 65", lambda: CommitSignature(bytes(32), bytes(65)), DecodeFailure.OUT_OF_RANGE),
    ("header height -1", lambda: s.block_header(height=-1), DecodeFailure.OUT_OF_RANGE),
    (
        "header as block tx",
        lambda: Block(s.block_header(), (s.block_header(),), (), (), 0, ()),
        DecodeFailure.BAD_TYPE,
    ),
    ("dict header", lambda: Block({}, (), (), (), 0, ()), DecodeFailure.BAD_TYPE),  # type: ignore[arg-type]
    ("int online", lambda: s.device_status(online=1), DecodeFailure.BAD_TYPE),
    ("long agent", lambda: s.device_hello(agent_version="v" * 33), DecodeFailure.OUT_OF_RANGE),
    ("bytes item", lambda: Submission(s.CHAIN, s.REPLY_TO, ("x",)), DecodeFailure.BAD_TYPE),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("build", "code"), [c[1:] for c in CONSTRUCTION_CASES], ids=[c[0] for c in CONSTRUCTION_CASES]
)
def test_invalid_construction_raises_decode_error(build: Any, code: DecodeFailure) -> None:
    with pytest.raises(DecodeError) as info:
        build()
    assert info.value.code is code


def test_limits_are_inclusive() -> None:
    tx = s.transaction(
        chain_id="a" * 32, memo="m" * 64, amount=2**63 - 1, fee=2**63 - 1,
        nonce=2**63 - 1, expiry_ms=2**53,
    )  # fmt: skip
    assert codec.decode(codec.encode(tx)) == tx
    assert len(codec.encode(tx)) <= MAX_TX_BYTES
    hello = s.device_hello(capacity=256, agent_version="v" * 32)
    assert codec.decode(codec.encode(hello)) == hello
    assert codec.decode(codec.encode(s.heartbeat(busy=1024))) == s.heartbeat(busy=1024)
    receipt = Receipt(bytes(32), 2, 255)
    assert codec.decode(codec.encode(s.receipts(receipts=(receipt,)))).receipts == (receipt,)
    held = Receipt(bytes(32), 3, 10, 2**63 - 1, 2**63 - 1)
    assert codec.decode(codec.encode(s.receipts(receipts=(held,)))).receipts == (held,)
    item = bytes(MAX_SUBMISSION_ITEM_BYTES)
    assert codec.decode(codec.encode(s.submission(items=(item,)))).items == (item,)


def test_all_signed_kinds_use_signature_as_last_field() -> None:
    for message in (s.transaction(), s.assignment(), s.verdict(), s.device_hello(),
                    s.heartbeat(), s.device_status(), s.receipts(), s.proposal(),
                    s.prevote(), s.precommit(), s.prevote_nil(),
                    s.precommit_nil()):  # fmt: skip
        assert message.to_wire()[-1] == message.signature
        assert len(message.signature) == 64


SIGNED_TYPES = (Transaction, Assignment, Verdict, DeviceHello, Heartbeat, DeviceStatus,
                Receipts, Proposal, Prevote, Precommit, DeviceApproval)  # fmt: skip
# A WorkBatch is covered by its signed Assignment (its tx_root names the transactions).
UNSIGNED_TYPES = (Submission, WorkBatch, BlockHeader, Block, SyncRequest, FraudReport)


def test_other_kinds_are_unsigned() -> None:
    assert set(SIGNED_TYPES) | set(UNSIGNED_TYPES) == set(TYPES)
    for message_type in UNSIGNED_TYPES:
        assert not hasattr(message_type, "signature")
    for message_type in SIGNED_TYPES:
        assert hasattr(message_type, "signer")
