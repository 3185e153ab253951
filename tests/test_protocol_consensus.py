"""The consensus messages' own rules: rounds, pol_round, a proposal's empty certificate,
nil precommits, SyncRequest ranges; each both when built and when decoded from bytes."""

import dataclasses
from typing import Any

import pytest
from framework import protocol_samples as s

from micromine.protocol import cbor, codec
from micromine.protocol.block import Block, CommitSignature
from micromine.protocol.consensus import (
    MAX_ROUND,
    MAX_SYNC_BLOCKS,
    NIL,
    Precommit,
    Prevote,
    Proposal,
    SyncRequest,
)
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.limits import HASH_LEN, MAX_UINT, SIGNATURE_LEN
from micromine.protocol.messages import NO_SIGNATURE

# Wire positions.
P_HEIGHT, P_ROUND, P_POL_ROUND, P_BLOCK, P_PROPOSER = 2, 3, 4, 5, 6
V_HEIGHT, V_ROUND, V_BLOCK_HASH, V_VOTER = 2, 3, 4, 5
C_COMMIT_SIGNATURE = 6
S_FROM, S_TO, S_REPLY_TO = 2, 3, 4


def failure(data: bytes, expected: type[Any] | None = None) -> DecodeFailure:
    with pytest.raises(DecodeError) as info:
        codec.decode(data, expected)
    return info.value.code


def uint(value: int) -> bytes:
    return cbor.encode(value)


def test_constants() -> None:
    assert bytes(HASH_LEN) == NIL
    assert MAX_ROUND == 2**31
    assert MAX_SYNC_BLOCKS == 64
    assert bytes(SIGNATURE_LEN) == NO_SIGNATURE


def test_wire_layouts() -> None:
    proposal = s.proposal()
    assert proposal.to_wire() == [
        12, s.CHAIN, 1, 2, 0, proposal.block.to_wire(), s.LEDGER.public, proposal.signature,
    ]  # fmt: skip
    prevote = s.prevote()
    assert prevote.to_wire() == [
        13, s.CHAIN, 1, 2, prevote.block_hash, s.LEDGER.public, prevote.signature,
    ]  # fmt: skip
    precommit = s.precommit()
    assert precommit.to_wire() == [
        14, s.CHAIN, 1, 2, precommit.block_hash, s.LEDGER.public, precommit.commit_signature,
        precommit.signature,
    ]  # fmt: skip
    assert s.sync_request().to_wire() == [15, s.CHAIN, 2, 9, s.REPLY_TO]
    for message in (proposal, prevote, precommit):
        assert message.unsigned_wire() == message.to_wire()[:-1]
        assert message.signer == s.LEDGER.public


def test_samples_are_what_they_claim() -> None:
    proposal = s.proposal()
    assert proposal.block.certificate == ()
    assert proposal.block.hash == s.block().hash  # the certificate is outside the hash
    assert s.prevote().block_hash == proposal.block.hash
    assert s.prevote_nil().block_hash == NIL
    assert s.precommit_nil().commit_signature == NO_SIGNATURE
    assert proposal.block.commit_round == 0 and s.block().commit_round == s.COMMIT_ROUND
    precommit = s.precommit()
    assert precommit.round == s.COMMIT_ROUND
    assert codec.is_commit_signature_valid(
        s.LEDGER.public, s.CHAIN, precommit.round, proposal.block.hash, precommit.commit_signature
    )


# --- built in Python --------------------------------------------------------------------

CONSTRUCTION_CASES: list[tuple[str, Any, DecodeFailure]] = [
    ("proposal round 0", lambda: s.proposal(round=0), DecodeFailure.OUT_OF_RANGE),
    ("proposal round MAX+1", lambda: s.proposal(round=MAX_ROUND + 1), DecodeFailure.OUT_OF_RANGE),
    ("pol_round = round", lambda: s.proposal(round=2, pol_round=2), DecodeFailure.OUT_OF_RANGE),
    ("pol_round > round", lambda: s.proposal(round=2, pol_round=3), DecodeFailure.OUT_OF_RANGE),
    ("pol_round 1 in round 1", lambda: s.proposal(round=1, pol_round=1),
     DecodeFailure.OUT_OF_RANGE),
    ("negative pol_round", lambda: s.proposal(pol_round=-1), DecodeFailure.OUT_OF_RANGE),
    ("bool round", lambda: s.proposal(round=True), DecodeFailure.BAD_TYPE),
    ("proposal height -1", lambda: s.proposal(height=-1), DecodeFailure.OUT_OF_RANGE),
    (
        "proposal with a certificate",
        lambda: s.proposal(block=s.block()),
        DecodeFailure.OUT_OF_RANGE,
    ),
    ("proposal of a header", lambda: s.proposal(block=s.block_header()), DecodeFailure.BAD_TYPE),
    ("proposer of 31 bytes", lambda: Proposal(s.CHAIN, 1, 1, 0, s.proposed_block(), bytes(31)),
     DecodeFailure.OUT_OF_RANGE),
    ("prevote round 0", lambda: s.prevote(round=0), DecodeFailure.OUT_OF_RANGE),
    ("prevote round MAX+1", lambda: s.prevote(round=MAX_ROUND + 1), DecodeFailure.OUT_OF_RANGE),
    ("prevote hash of 31", lambda: s.prevote(block_hash=bytes(31)), DecodeFailure.OUT_OF_RANGE),
    ("prevote str hash", lambda: s.prevote(block_hash="00" * 32), DecodeFailure.BAD_TYPE),
    ("precommit round 0", lambda: s.precommit(round=0), DecodeFailure.OUT_OF_RANGE),
    (
        "nil precommit with a commit signature",
        lambda: s.precommit_nil(commit_signature=b"\x01" + bytes(63)),
        DecodeFailure.OUT_OF_RANGE,
    ),
    (
        "nil precommit with a genuine commit signature",
        lambda: s.precommit_nil(commit_signature=codec.sign_commit(2, NIL, s.CHAIN, s.LEDGER)),
        DecodeFailure.OUT_OF_RANGE,
    ),
    ("commit signature of 63", lambda: s.precommit(commit_signature=bytes(63)),
     DecodeFailure.OUT_OF_RANGE),
    ("sync from 0", lambda: s.sync_request(from_height=0, to_height=3),
     DecodeFailure.OUT_OF_RANGE),
    ("sync to < from", lambda: s.sync_request(from_height=5, to_height=4),
     DecodeFailure.OUT_OF_RANGE),
    ("sync 65 blocks", lambda: s.sync_request(from_height=1, to_height=MAX_SYNC_BLOCKS + 1),
     DecodeFailure.OUT_OF_RANGE),
    ("sync to above MAX_UINT", lambda: s.sync_request(from_height=MAX_UINT,
                                                     to_height=MAX_UINT + 1),
     DecodeFailure.OUT_OF_RANGE),
    ("sync negative to", lambda: s.sync_request(to_height=-1), DecodeFailure.OUT_OF_RANGE),
    ("sync reply_to of 15", lambda: s.sync_request(reply_to=bytes(15)),
     DecodeFailure.OUT_OF_RANGE),
    ("sync bool from", lambda: s.sync_request(from_height=True), DecodeFailure.BAD_TYPE),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "code"), [c[1:] for c in CONSTRUCTION_CASES], ids=[c[0] for c in CONSTRUCTION_CASES]
)
def test_invalid_construction_raises_decode_error(build: Any, code: DecodeFailure) -> None:
    with pytest.raises(DecodeError) as info:
        build()
    assert info.value.code is code


VALID_EDGES: list[tuple[str, Any]] = [
    ("round 1, no polka", lambda: s.proposal(round=1, pol_round=0)),
    ("pol_round = round - 1", lambda: s.proposal(round=7, pol_round=6)),
    ("round MAX_ROUND", lambda: s.proposal(round=MAX_ROUND, pol_round=MAX_ROUND - 1)),
    ("height 0 proposal", lambda: s.proposal(height=0)),
    ("height MAX_UINT prevote", lambda: s.prevote(height=MAX_UINT)),
    ("prevote round MAX_ROUND", lambda: s.prevote(round=MAX_ROUND)),
    ("precommit round MAX_ROUND", lambda: s.precommit(round=MAX_ROUND)),
    ("nil prevote", s.prevote_nil),
    ("nil precommit", s.precommit_nil),
    ("precommit with zero commit signature", lambda: s.precommit(commit_signature=bytes(64))),
    ("sync one block", lambda: s.sync_request(from_height=1, to_height=1)),
    ("sync 64 blocks", lambda: s.sync_request(from_height=1, to_height=MAX_SYNC_BLOCKS)),
    ("sync 64 blocks high", lambda: s.sync_request(from_height=1000, to_height=1063)),
    ("sync at MAX_UINT", lambda: s.sync_request(from_height=MAX_UINT, to_height=MAX_UINT)),
]


@pytest.mark.parametrize("build", [c[1] for c in VALID_EDGES], ids=[c[0] for c in VALID_EDGES])
def test_edges_of_the_ranges_are_valid(build: Any) -> None:
    message = build()
    data = codec.encode(message)
    assert codec.decode(data, type(message)) == message
    assert codec.decode(data) == message


def test_a_precommit_without_commit_signature_is_structurally_valid() -> None:
    # The decoder only forbids a commit signature on a nil vote; whether a non-nil
    # precommit's commit signature verifies is the receiver's (consensus) check.
    precommit = s.precommit(commit_signature=bytes(64))
    assert codec.is_signature_valid(precommit)
    assert not codec.is_commit_signature_valid(
        precommit.voter, s.CHAIN, precommit.round, precommit.block_hash, precommit.commit_signature
    )


# --- decoded from bytes -----------------------------------------------------------------

PROPOSAL = s.proposal()
PREVOTE = s.prevote()
PRECOMMIT = s.precommit()
NIL_PRECOMMIT = s.precommit_nil()
SYNC = s.sync_request()
CERTIFIED_BLOCK = cbor.encode(s.block().to_wire())


def byte_string(value: bytes) -> bytes:
    return s.head(2, len(value)) + value


DECODE_CASES: list[tuple[str, bytes, type[Any] | None, DecodeFailure]] = [
    ("proposal round 0, so no pol_round fits", s.with_field(PROPOSAL, P_ROUND, uint(0)),
     Proposal,
     DecodeFailure.OUT_OF_RANGE),
    ("proposal round 2^31+1", s.with_field(PROPOSAL, P_ROUND, uint(MAX_ROUND + 1)), None,
     DecodeFailure.OUT_OF_RANGE),
    ("proposal pol_round = round", s.with_field(PROPOSAL, P_POL_ROUND, uint(2)), Proposal,
     DecodeFailure.OUT_OF_RANGE),
    ("proposal pol_round > round", s.with_field(PROPOSAL, P_POL_ROUND, uint(3)), None,
     DecodeFailure.OUT_OF_RANGE),
    ("proposal negative pol_round", s.with_field(PROPOSAL, P_POL_ROUND, b"\x20"), None,
     DecodeFailure.OUT_OF_RANGE),
    ("proposal with a certified block", s.with_field(PROPOSAL, P_BLOCK, CERTIFIED_BLOCK),
     Proposal, DecodeFailure.OUT_OF_RANGE),
    ("proposal of a header", s.with_field(PROPOSAL, P_BLOCK, codec.encode(s.block_header())),
     None, DecodeFailure.WRONG_KIND),
    ("proposal block not an array", s.with_field(PROPOSAL, P_BLOCK, uint(6)), None,
     DecodeFailure.BAD_SHAPE),
    ("proposal without signature", s.raw_array(s.wire_items(PROPOSAL)[:-1]), None,
     DecodeFailure.BAD_SHAPE),
    ("proposal round as text", s.with_field(PROPOSAL, P_ROUND, cbor.encode("2")), None,
     DecodeFailure.BAD_TYPE),
    ("prevote round 0", s.with_field(PREVOTE, V_ROUND, uint(0)), Prevote,
     DecodeFailure.OUT_OF_RANGE),
    ("prevote round 2^31+1", s.with_field(PREVOTE, V_ROUND, uint(MAX_ROUND + 1)), None,
     DecodeFailure.OUT_OF_RANGE),
    ("prevote 31-byte hash", s.with_field(PREVOTE, V_BLOCK_HASH, byte_string(bytes(31))),
     None, DecodeFailure.OUT_OF_RANGE),
    ("prevote true as round", s.with_field(PREVOTE, V_ROUND, b"\xf5"), None,
     DecodeFailure.BAD_TYPE),
    ("prevote with a commit signature", s.raw_array(
        [*s.wire_items(PREVOTE)[:-1], byte_string(bytes(64)), s.wire_items(PREVOTE)[-1]]),
     None, DecodeFailure.BAD_SHAPE),
    ("precommit round 0", s.with_field(PRECOMMIT, V_ROUND, uint(0)), Precommit,
     DecodeFailure.OUT_OF_RANGE),
    ("nil precommit with a commit signature",
     s.with_field(NIL_PRECOMMIT, C_COMMIT_SIGNATURE, byte_string(PRECOMMIT.commit_signature)),
     Precommit, DecodeFailure.OUT_OF_RANGE),
    ("precommit without commit signature", s.raw_array(
        [*s.wire_items(PRECOMMIT)[:C_COMMIT_SIGNATURE], s.wire_items(PRECOMMIT)[-1]]),
     Precommit, DecodeFailure.BAD_SHAPE),
    ("precommit 63-byte commit signature",
     s.with_field(PRECOMMIT, C_COMMIT_SIGNATURE, byte_string(bytes(63))), None,
     DecodeFailure.OUT_OF_RANGE),
    ("prevote where a precommit is expected", codec.encode(PREVOTE), Precommit,
     DecodeFailure.WRONG_KIND),
    ("precommit where a prevote is expected", codec.encode(PRECOMMIT), Prevote,
     DecodeFailure.WRONG_KIND),
    ("proposal where a block is expected", codec.encode(PROPOSAL), Block,
     DecodeFailure.WRONG_KIND),
    ("sync from 0", s.with_field(SYNC, S_FROM, uint(0)), SyncRequest,
     DecodeFailure.OUT_OF_RANGE),
    ("sync to < from", s.with_field(SYNC, S_TO, uint(1)), SyncRequest,
     DecodeFailure.OUT_OF_RANGE),
    ("sync 65 blocks", s.with_field(SYNC, S_TO, uint(2 + MAX_SYNC_BLOCKS)), None,
     DecodeFailure.OUT_OF_RANGE),
    ("sync 2^64-1 to", s.with_field(SYNC, S_TO, s.head(0, 2**64 - 1)), None,
     DecodeFailure.OUT_OF_RANGE),
    ("sync 32-byte reply_to", s.with_field(SYNC, S_REPLY_TO, byte_string(bytes(32))), None,
     DecodeFailure.OUT_OF_RANGE),
    ("sync with a signature", s.raw_array([*s.wire_items(SYNC), byte_string(bytes(64))]),
     None, DecodeFailure.BAD_SHAPE),
    ("sync wide from", s.with_field(SYNC, S_FROM, s.head(0, 2, 1)), None,
     DecodeFailure.NOT_CANONICAL),
    ("prevote wide round", s.with_field(PREVOTE, V_ROUND, s.head(0, 2, 4)), None,
     DecodeFailure.NOT_CANONICAL),
    ("prevote too large", s.with_field(PREVOTE, V_BLOCK_HASH, byte_string(bytes(1024))),
     Prevote, DecodeFailure.TOO_LARGE),
    ("kind 19", s.raw_array([uint(19), *s.wire_items(SYNC)[1:]]), None,
     DecodeFailure.UNKNOWN_KIND),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "expected", "code"), [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES]
)
def test_crafted_input_fails_with_its_code(
    data: bytes, expected: type[Any] | None, code: DecodeFailure
) -> None:
    assert failure(data, expected) is code


def test_a_decoded_proposal_keeps_the_block_intact() -> None:
    decoded = codec.decode(codec.encode(PROPOSAL), Proposal)
    assert decoded.block == PROPOSAL.block
    assert decoded.block.hash == s.block().hash
    for verdict in decoded.block.verdicts:
        assert codec.is_signature_valid(verdict)
    # Adding a certificate of the precommit's round gives the block as published.
    certificate = (CommitSignature(PRECOMMIT.voter, PRECOMMIT.commit_signature),)
    certified = dataclasses.replace(
        decoded.block, commit_round=PRECOMMIT.round, certificate=certificate
    )
    assert certified == s.block()


def test_proposal_and_certificate_overheads_stated_in_the_doc() -> None:
    # A proposal wraps a block: its own fields cost at most 155 bytes on top of it.
    largest = s.proposal(
        chain_id="a" * 32, height=MAX_UINT, round=MAX_ROUND, pol_round=MAX_ROUND - 1
    )
    assert len(codec.encode(largest)) - len(codec.encode(largest.block)) == 155
    assert len(codec.encode(PROPOSAL)) - len(codec.encode(PROPOSAL.block)) < 155
    # Committing adds the certificate: 101 bytes per signature, plus the array head,
    # and the round grows from 1 byte (0) to at most 5 (rounds above 65535).
    entry = CommitSignature(PRECOMMIT.voter, PRECOMMIT.commit_signature)
    assert len(cbor.encode(entry.to_wire())) == 101
    committed = dataclasses.replace(PROPOSAL.block, commit_round=2, certificate=(entry,) * 3)
    assert len(codec.encode(committed)) - len(codec.encode(PROPOSAL.block)) == 3 * 101
    late = dataclasses.replace(committed, commit_round=MAX_ROUND)
    assert len(codec.encode(late)) - len(codec.encode(committed)) == 4
    assert codec.max_bytes(Proposal) == codec.max_bytes(Block)
