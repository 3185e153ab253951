"""Property tests: every valid message round-trips byte for byte, and no input whatever
makes ``codec.decode`` raise anything but ``DecodeError``.

Budget: a few hundred examples per property, the whole file in well under 30 s.

Longer than 400 lines because it holds one strategy per message kind, the ones the
round-trip and fuzz properties draw from.
"""

import dataclasses
from typing import Any

import cbor2
import pytest
from framework import protocol_samples
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from micromine.protocol import codec
from micromine.protocol.block import (
    Block,
    BlockHeader,
    CommitSignature,
    FraudProof,
    FraudReport,
    Reward,
)
from micromine.protocol.consensus import (
    MAX_ROUND,
    MAX_SYNC_BLOCKS,
    NIL,
    Precommit,
    Prevote,
    Proposal,
    SyncRequest,
)
from micromine.protocol.crypto import KeyPair
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.kinds import STATE_REASONS, ReceiptStatus
from micromine.protocol.limits import (
    MAX_AGENT_VERSION_LEN,
    MAX_BATCH_TXS,
    MAX_DEVICE_WINDOW,
    MAX_HEARTBEAT_BUSY,
    MAX_MEMO_BYTES,
    MAX_TIMESTAMP_MS,
    MAX_UINT,
)
from micromine.protocol.messages import (
    NO_SIGNATURE,
    Assignment,
    Judgement,
    Receipt,
    Receipts,
    Submission,
    Transaction,
    Verdict,
    WorkBatch,
)

settings.register_profile(
    "micromine-protocol",
    max_examples=300,
    deadline=None,  # the first Ed25519 signature or cbor2 call can be slow to warm up
    database=None,  # no files: these tests do no I/O
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("micromine-protocol")
FEW = settings(PROFILE, max_examples=50)  # per message kind, for the parametrized tests

MESSAGE_TYPES: list[type[Any]] = list(codec.MESSAGE_TYPES.values())

# --- field strategies ------------------------------------------------------------------

chain_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)
keys32 = st.binary(min_size=32, max_size=32)
hashes = keys32
signatures = st.binary(min_size=64, max_size=64)
seeds = st.binary(min_size=32, max_size=32)
uints = st.one_of(st.integers(0, 300), st.integers(0, MAX_UINT))
timestamps = st.integers(0, MAX_TIMESTAMP_MS)


def texts(max_utf8_bytes: int) -> st.SearchStrategy[str]:
    # Any code point (four UTF-8 bytes at most), or long ASCII up to the limit.
    return st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=max_utf8_bytes // 4),
        st.text(st.characters(codec="ascii"), max_size=max_utf8_bytes),
    )


def tuples(elements: st.SearchStrategy[Any], min_size: int, max_size: int) -> Any:
    return st.lists(elements, min_size=min_size, max_size=max_size).map(tuple)


def signed(draw: Any, message: Any, signer_field: str) -> Any:
    """Half the time, make ``message`` a genuinely signed one by a fresh key."""
    if not draw(st.booleans()):
        return message
    key = KeyPair(draw(seeds))
    return codec.sign(dataclasses.replace(message, **{signer_field: key.public}), key)


# --- message strategies ------------------------------------------------------------------


@st.composite
def transactions(draw: Any) -> Transaction:
    tx = Transaction(
        draw(chain_ids), draw(keys32), draw(keys32), draw(uints), draw(uints), draw(uints),
        draw(timestamps), draw(texts(MAX_MEMO_BYTES)), draw(signatures),
    )  # fmt: skip
    return signed(draw, tx, "sender")


@st.composite
def submissions(draw: Any) -> Submission:
    items = st.one_of(
        st.binary(max_size=600), transactions().map(codec.encode), st.binary(max_size=4096)
    )
    return Submission(draw(chain_ids), draw(st.binary(min_size=16, max_size=16)),
                      draw(tuples(items, 1, 4)))  # fmt: skip


@st.composite
def assignments(draw: Any, chain_id: str | None = None) -> Assignment:
    assignment = Assignment(
        chain_id if chain_id is not None else draw(chain_ids), draw(keys32), draw(uints),
        draw(uints), draw(timestamps), draw(hashes), draw(signatures),
    )  # fmt: skip
    return signed(draw, assignment, "issuer")


@st.composite
def work_batches(draw: Any) -> WorkBatch:
    return WorkBatch(draw(assignments()), draw(tuples(transactions(), 1, 4)))


judgements = st.builds(Judgement, hashes, hashes, st.integers(0, 255))


@st.composite
def verdicts(draw: Any) -> Verdict:
    chain_id = draw(chain_ids)
    verdict = Verdict(
        chain_id, draw(keys32), draw(assignments(chain_id)),
        draw(tuples(judgements, 1, 8)), draw(signatures),
    )  # fmt: skip
    return signed(draw, verdict, "device")


headers = st.builds(
    BlockHeader, chain_ids, uints, hashes, hashes, hashes, hashes, timestamps, keys32
)
rewards = st.builds(Reward, keys32, uints)
commit_signatures = st.builds(CommitSignature, keys32, signatures)


@st.composite
def hellos(draw: Any) -> DeviceHello:
    hello = DeviceHello(
        draw(chain_ids), draw(keys32), draw(texts(MAX_AGENT_VERSION_LEN)),
        draw(st.integers(1, MAX_BATCH_TXS)), draw(timestamps), draw(signatures),
    )  # fmt: skip
    return signed(draw, hello, "device")


@st.composite
def approvals(draw: Any) -> DeviceApproval:
    approval = DeviceApproval(
        draw(chain_ids), draw(keys32), draw(keys32), draw(st.booleans()), draw(timestamps),
        draw(signatures),
    )  # fmt: skip
    return signed(draw, approval, "operator")


# A certificate names its round (1..MAX_ROUND); an uncertified block has round 0.
blocks = tuples(commit_signatures, 0, 2).flatmap(
    lambda certificate: st.builds(
        Block,
        headers,
        tuples(transactions(), 0, 3),
        tuples(verdicts(), 0, 2),
        tuples(rewards, 0, 3),
        st.one_of(st.integers(1, 5), st.integers(1, MAX_ROUND)) if certificate else st.just(0),
        st.just(certificate),
        tuples(hellos(), 0, 2),
        tuples(approvals(), 0, 2),
        tuples(st.builds(FraudProof, verdicts(), transactions()), 0, 2),
    )
)


@st.composite
def heartbeats(draw: Any) -> Heartbeat:
    beat = Heartbeat(
        draw(chain_ids), draw(keys32), draw(uints), draw(timestamps),
        draw(st.integers(0, MAX_HEARTBEAT_BUSY)), draw(st.integers(0, MAX_DEVICE_WINDOW)),
        draw(signatures),
    )  # fmt: skip
    return signed(draw, beat, "device")


@st.composite
def statuses(draw: Any) -> DeviceStatus:
    status = DeviceStatus(
        draw(chain_ids), draw(keys32), draw(st.booleans()), draw(timestamps), draw(signatures)
    )
    return signed(draw, status, "device")


@st.composite
def receipt_items(draw: Any) -> Receipt:
    """Statuses 0-2; a state-dependent rejection carries its detail, as it must."""
    item, status, value = draw(hashes), draw(st.integers(0, 2)), draw(uints)
    if status == ReceiptStatus.REJECTED and value in STATE_REASONS:
        return Receipt(item, status, value, draw(uints), draw(uints))
    return Receipt(item, status, value)


@st.composite
def receipts(draw: Any) -> Receipts:
    message = Receipts(
        draw(chain_ids), draw(keys32), draw(st.binary(min_size=16, max_size=16)),
        draw(timestamps), draw(tuples(receipt_items(), 1, 6)), draw(signatures),
    )  # fmt: skip
    return signed(draw, message, "issuer")


rounds = st.one_of(st.integers(1, 5), st.integers(1, MAX_ROUND))
vote_hashes = st.one_of(st.just(NIL), hashes)


@st.composite
def proposals(draw: Any) -> Proposal:
    round_ = draw(rounds)
    pol_round = draw(st.one_of(st.just(0), st.just(round_ - 1), st.integers(0, round_ - 1)))
    block = draw(blocks.map(lambda b: dataclasses.replace(b, commit_round=0, certificate=())))
    proposal = Proposal(
        draw(chain_ids), draw(uints), round_, pol_round, block, draw(keys32), draw(signatures)
    )
    return signed(draw, proposal, "proposer")


@st.composite
def prevotes(draw: Any) -> Prevote:
    vote = Prevote(
        draw(chain_ids), draw(uints), draw(rounds), draw(vote_hashes), draw(keys32),
        draw(signatures),
    )  # fmt: skip
    return signed(draw, vote, "voter")


@st.composite
def precommits(draw: Any) -> Precommit:
    chain_id, block_hash = draw(chain_ids), draw(vote_hashes)
    commit = NO_SIGNATURE if block_hash == NIL else draw(signatures)
    vote = Precommit(
        chain_id, draw(uints), draw(rounds), block_hash, draw(keys32), commit, draw(signatures)
    )
    if not draw(st.booleans()):
        return vote
    key = KeyPair(draw(seeds))  # a genuine precommit: commit signature and vote signature
    if block_hash != NIL:
        commit = codec.sign_commit(vote.round, block_hash, chain_id, key)
    return codec.sign(dataclasses.replace(vote, voter=key.public, commit_signature=commit), key)


@st.composite
def sync_requests(draw: Any) -> SyncRequest:
    first = draw(st.one_of(st.integers(1, 300), st.integers(1, MAX_UINT)))
    last = draw(st.integers(first, min(first + MAX_SYNC_BLOCKS - 1, MAX_UINT)))
    return SyncRequest(draw(chain_ids), first, last, draw(st.binary(min_size=16, max_size=16)))


STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    Transaction: transactions(),
    Submission: submissions(),
    WorkBatch: work_batches(),
    Verdict: verdicts(),
    Assignment: assignments(),
    BlockHeader: headers,
    Block: blocks,
    DeviceHello: hellos(),
    Heartbeat: heartbeats(),
    DeviceStatus: statuses(),
    Receipts: receipts(),
    Proposal: proposals(),
    Prevote: prevotes(),
    Precommit: precommits(),
    SyncRequest: sync_requests(),
    DeviceApproval: approvals(),
    FraudReport: st.builds(
        FraudReport, chain_ids, st.builds(FraudProof, verdicts(), transactions())
    ),
}
messages = st.one_of(*STRATEGIES.values())
expected_types = st.sampled_from([None, *MESSAGE_TYPES])


def test_every_kind_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(MESSAGE_TYPES)


def decode_or_error(data: bytes, expected: type[Any] | None = None) -> Any:
    """Decode; DecodeError (with a DecodeFailure code) is fine, any other exception fails."""
    try:
        return codec.decode(data, expected)
    except DecodeError as exc:
        assert isinstance(exc.code, DecodeFailure)
        return None


# --- (a) round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
@FEW
@given(data=st.data())
def test_valid_messages_round_trip(message_type: type[Any], data: st.DataObject) -> None:
    message = data.draw(STRATEGIES[message_type])
    encoded = codec.encode(message)
    assert len(encoded) <= codec.max_bytes(message_type)
    decoded = codec.decode(encoded)
    assert decoded == message
    assert type(decoded) is message_type
    assert codec.decode(encoded, message_type) == message
    assert codec.encode(decoded) == encoded
    if hasattr(message, "signer"):
        assert decoded.id == message.id
        assert codec.is_signature_valid(decoded) == codec.is_signature_valid(message)
    if isinstance(message, Block | BlockHeader):
        assert decoded.hash == message.hash


@PROFILE
@given(messages)
def test_generated_signatures_verify(message: Any) -> None:
    if hasattr(message, "signer") and any(message.signature):
        # Random 64-byte signatures essentially never verify; real ones always do.
        encoded = codec.encode(message)
        assert codec.is_signature_valid(codec.decode(encoded)) == codec.is_signature_valid(message)


# --- (b) random bytes ----------------------------------------------------------------------


@PROFILE
@given(st.binary(max_size=1024), expected_types)
def test_random_bytes_raise_only_decode_error(data: bytes, expected: Any) -> None:
    decode_or_error(data, expected)


# A plausible head (an array of the right arity led by a real kind tag) makes random
# tails reach the field checks instead of failing at the first byte.
ARITIES = {
    1: 10, 2: 4, 3: 3, 4: 6, 5: 9, 6: 10, 7: 7, 8: 8, 9: 6, 10: 7, 12: 8, 13: 7, 14: 8, 15: 5,
    16: 8, 17: 7, 18: 3,
}  # fmt: skip
HEADS = [bytes([0x80 | arity, tag]) for tag, arity in ARITIES.items()]


def test_heads_match_the_wire_arity() -> None:
    for sample in protocol_samples.all_messages():
        assert len(sample.to_wire()) == ARITIES[sample.KIND]
    assert set(ARITIES) == set(codec.MESSAGE_TYPES)


@PROFILE
@given(st.sampled_from(HEADS), st.binary(max_size=512), expected_types)
def test_random_fields_raise_only_decode_error(head: bytes, tail: bytes, expected: Any) -> None:
    decode_or_error(head + tail, expected)


# --- (c) mutated valid encodings -----------------------------------------------------------

mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice", "duplicate"]),
        st.integers(0, 2**16),  # position, reduced modulo the length
        st.integers(0, 255),  # byte value or bit number
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, ops: list[tuple[str, int, int]], donor: bytes) -> bytes:
    out = bytearray(data)
    for op, position, value in ops:
        i = position % (len(out) + 1)
        if op == "flip" and i < len(out):
            out[i] ^= 1 << (value % 8)
        elif op == "set" and i < len(out):
            out[i] = value
        elif op == "insert":
            out[i:i] = bytes([value])
        elif op == "delete" and i < len(out):
            del out[i]
        elif op == "truncate":
            del out[i:]
        elif op == "splice":
            j = value % (len(donor) + 1)
            out[i:] = donor[j:]
        elif op == "duplicate":
            out[i:i] = out[i : i + 1 + value % 16]
    return bytes(out)


@PROFILE
@given(messages, messages, mutations)
def test_mutated_encodings_fail_cleanly_or_stay_canonical(
    message: Any, donor: Any, ops: list[tuple[str, int, int]]
) -> None:
    original = codec.encode(message)
    mutated = mutate(original, ops, codec.encode(donor))
    for expected in (None, type(message)):
        decoded = decode_or_error(mutated, expected)
        if decoded is not None:
            # Whatever decodes is the one canonical encoding of what it decoded to.
            assert codec.encode(decoded) == mutated
            assert codec.decode(mutated, type(decoded)) == decoded


# --- (d) arbitrary CBOR trees --------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=40),
    st.text(max_size=20),
)
map_keys = st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=8), st.binary(max_size=8))
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(map_keys, children, max_size=4),
    ),
    max_leaves=24,
)


@PROFILE
@given(trees, st.booleans(), expected_types)
def test_arbitrary_cbor_trees_raise_only_decode_error(
    tree: Any, canonical: bool, expected: Any
) -> None:
    data = cbor2.dumps(tree, canonical=canonical)
    decoded = decode_or_error(data, expected)
    if decoded is not None:  # pragma: no cover - a random tree is almost never a message
        assert codec.encode(decoded) == data


@PROFILE
@given(st.integers(0, 17), st.lists(trees, max_size=10), st.booleans(), expected_types)
def test_message_shaped_trees_raise_only_decode_error(
    tag: int, fields: list[Any], canonical: bool, expected: Any
) -> None:
    data = cbor2.dumps([tag, *fields], canonical=canonical)
    decoded = decode_or_error(data, expected)
    if decoded is not None:  # pragma: no cover
        assert codec.encode(decoded) == data


@PROFILE
@given(messages, st.integers(0, 20), trees)
def test_one_field_replaced_by_any_tree(message: Any, index: int, tree: Any) -> None:
    """Each field position receiving any CBOR value: a clean failure or a valid message."""
    wire = message.to_wire()
    i = 1 + index % (len(wire) - 1)
    assume(not (type(tree) is type(wire[i]) and tree == wire[i]))
    wire[i] = tree
    data = cbor2.dumps(wire, canonical=True)
    decoded = decode_or_error(data)
    if decoded is not None:
        assert type(decoded) is type(message)
        assert codec.encode(decoded) == data


# --- (e) the consensus range rules ---------------------------------------------------------

any_rounds = st.one_of(st.integers(0, 8), st.integers(0, 2**64 - 1), st.integers(-3, -1))


def check_built_and_decoded_alike(
    message: Any, valid: bool, wire_items: dict[int, Any], fields: dict[str, Any]
) -> None:
    """``message`` with ``fields`` changed is built exactly when ``valid``, and its wire
    array with ``wire_items`` changed then decodes to it; otherwise both fail with
    OUT_OF_RANGE."""
    wire = message.to_wire()
    for index, value in wire_items.items():
        wire[index] = value
    data = cbor2.dumps(wire, canonical=True)
    try:
        built = dataclasses.replace(message, **fields)
    except DecodeError as exc:
        assert not valid
        assert exc.code is DecodeFailure.OUT_OF_RANGE
        assert decode_or_error(data) is None
        return
    assert valid
    assert codec.decode(data, type(message)) == built


@PROFILE
@given(any_rounds, any_rounds)
def test_proposal_rounds_accepted_exactly_when_in_range(round_: int, pol_round: int) -> None:
    """Valid iff 1 <= round <= MAX_ROUND and 0 <= pol_round < round, built or decoded."""
    valid = 1 <= round_ <= MAX_ROUND and 0 <= pol_round < round_
    check_built_and_decoded_alike(
        protocol_samples.proposal(),
        valid,
        {3: round_, 4: pol_round},
        {"round": round_, "pol_round": pol_round},
    )


@PROFILE
@given(any_rounds, st.booleans())
def test_commit_round_accepted_exactly_when_in_range(round_: int, certified: bool) -> None:
    """A block's commit_round: 1..MAX_ROUND with a certificate, 0 without one; built or
    decoded alike."""
    sample = protocol_samples.block()
    certificate = sample.certificate if certified else ()
    valid = 1 <= round_ <= MAX_ROUND if certified else round_ == 0
    check_built_and_decoded_alike(
        sample,
        valid,
        {8: round_, 9: [entry.to_wire() for entry in certificate]},
        {"commit_round": round_, "certificate": certificate},
    )


heights = st.one_of(st.integers(0, 300), st.integers(0, MAX_UINT + 1))


@PROFILE
@given(heights, st.one_of(heights, st.integers(-2, MAX_SYNC_BLOCKS + 1)), st.booleans())
def test_sync_range_accepted_exactly_when_valid(first: int, other: int, relative: bool) -> None:
    last = first + other if relative else other  # near first, or anywhere
    assume(last >= 0)
    valid = 1 <= first <= last < first + MAX_SYNC_BLOCKS and last <= MAX_UINT
    data = cbor2.dumps([15, "c", first, last, bytes(16)], canonical=True)
    decoded = decode_or_error(data, SyncRequest)
    assert (decoded is not None) == valid
    if decoded is not None:
        assert (decoded.from_height, decoded.to_height) == (first, last)


@PROFILE
@given(vote_hashes, st.one_of(st.just(NO_SIGNATURE), signatures))
def test_precommit_commit_signature_only_for_a_block(block_hash: bytes, commit: bytes) -> None:
    valid = block_hash != NIL or commit == NO_SIGNATURE
    data = cbor2.dumps([14, "c", 1, 1, block_hash, bytes(32), commit, bytes(64)], canonical=True)
    assert (decode_or_error(data, Precommit) is not None) == valid
