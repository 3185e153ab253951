"""Consensus messages exchanged by the ledger nodes: Proposal, Prevote, Precommit, and the
SyncRequest a lagging node uses to fetch committed blocks from its peers.

Rounds are numbered from 1; a ``pol_round`` of 0 means "none" (Tendermint's -1), so
every field stays an unsigned integer.  A nil vote has ``block_hash`` all zeros.

Every vote is signed over ``signing_bytes(kind, chain_id, id)`` where the id covers the
height, the round and the block hash, so a vote cannot be replayed at another height,
round, step or chain.  A non-nil Precommit also carries a ``commit_signature``: the
voter's COMMIT-kind signature over (its round, the block hash), see
``block.compute_commit_digest``.  More than 2/3 of them *of one round* form the block's
certificate, which names that round (``Block.commit_round``): with at most f of
n = 3f + 1 validators faulty, no two blocks at one height can both gather 2f + 1
precommits in one round, and a block that did is decided.  Signatures of different
rounds never add up: each verifies only for its own round (see docs/CONSENSUS.md).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from micromine.protocol.block import Block
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.fields import array, check_bytes, check_chain_id, check_uint
from micromine.protocol.kinds import Kind
from micromine.protocol.limits import (
    HASH_LEN,
    MAX_ROUND,
    PUBLIC_KEY_LEN,
    REPLY_TO_LEN,
    SIGNATURE_LEN,
)
from micromine.protocol.messages import NO_SIGNATURE, SignedMessage, expect_tag, memoise_id

NIL = bytes(HASH_LEN)  # block_hash of a nil vote
MAX_SYNC_BLOCKS = 64  # most blocks one SyncRequest may ask for


@dataclass(frozen=True, slots=True)
class Proposal(SignedMessage):
    """The round's proposer offers ``block`` (its certificate empty) for this height."""

    KIND: ClassVar[Kind] = Kind.PROPOSAL
    chain_id: str
    height: int
    round: int
    pol_round: int  # round of the polka that justifies re-proposing; 0 = none
    block: Block
    proposer: bytes
    signature: bytes = NO_SIGNATURE

    # Its id covers the whole block: checked by the replica and the consensus core.
    _id: bytes = field(default=b"", init=False, repr=False, compare=False)  # memoise_id

    @property
    def id(self) -> bytes:
        return self._id or memoise_id(self)

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_uint("height", self.height)
        check_uint("round", self.round, MAX_ROUND, minimum=1)
        check_uint("pol_round", self.pol_round, MAX_ROUND)
        if self.pol_round >= self.round:
            raise DecodeError(DecodeFailure.OUT_OF_RANGE, "pol_round must precede round")
        if type(self.block) is not Block:
            raise DecodeError(DecodeFailure.BAD_TYPE, "block must be a Block")
        if self.block.certificate:
            raise DecodeError(DecodeFailure.OUT_OF_RANGE, "a proposed block has no certificate")
        check_bytes("proposer", self.proposer, PUBLIC_KEY_LEN)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.proposer

    def unsigned_wire(self) -> list[Any]:
        return [
            int(self.KIND), self.chain_id, self.height, self.round, self.pol_round,
            self.block.to_wire(), self.proposer,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 8)
        block = Block.from_wire(array("block", items[5]))
        return cls(items[1], items[2], items[3], items[4], block, items[6], items[7])


@dataclass(frozen=True, slots=True)
class Prevote(SignedMessage):
    KIND: ClassVar[Kind] = Kind.PREVOTE
    chain_id: str
    height: int
    round: int
    block_hash: bytes  # NIL for a nil vote
    voter: bytes
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_uint("height", self.height)
        check_uint("round", self.round, MAX_ROUND, minimum=1)
        check_bytes("block_hash", self.block_hash, HASH_LEN)
        check_bytes("voter", self.voter, PUBLIC_KEY_LEN)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.voter

    def unsigned_wire(self) -> list[Any]:
        return [
            int(self.KIND), self.chain_id, self.height, self.round, self.block_hash, self.voter,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 7)
        return cls(*items[1:])


@dataclass(frozen=True, slots=True)
class Precommit(SignedMessage):
    KIND: ClassVar[Kind] = Kind.PRECOMMIT
    chain_id: str
    height: int
    round: int
    block_hash: bytes  # NIL for a nil vote
    voter: bytes
    commit_signature: bytes  # COMMIT-kind, over (round, block_hash); zeros when nil
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_uint("height", self.height)
        check_uint("round", self.round, MAX_ROUND, minimum=1)
        check_bytes("block_hash", self.block_hash, HASH_LEN)
        check_bytes("voter", self.voter, PUBLIC_KEY_LEN)
        check_bytes("commit_signature", self.commit_signature, SIGNATURE_LEN)
        if self.block_hash == NIL and self.commit_signature != NO_SIGNATURE:
            raise DecodeError(DecodeFailure.OUT_OF_RANGE, "a nil precommit commits to nothing")
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.voter

    def unsigned_wire(self) -> list[Any]:
        return [
            int(self.KIND), self.chain_id, self.height, self.round, self.block_hash, self.voter,
            self.commit_signature,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 8)
        return cls(*items[1:])


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Ask peers for committed blocks ``from_height..to_height``; they answer with Block
    messages on ``sync/<reply_to>``.  Unsigned: the blocks carry their certificates."""

    KIND: ClassVar[Kind] = Kind.SYNC_REQUEST
    chain_id: str
    from_height: int
    to_height: int
    reply_to: bytes

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_uint("from_height", self.from_height, minimum=1)
        check_uint("to_height", self.to_height)
        if not self.from_height <= self.to_height < self.from_height + MAX_SYNC_BLOCKS:
            raise DecodeError(
                DecodeFailure.OUT_OF_RANGE, f"ask for 1..{MAX_SYNC_BLOCKS} blocks in order"
            )
        check_bytes("reply_to", self.reply_to, REPLY_TO_LEN)

    def to_wire(self) -> list[Any]:
        return [int(self.KIND), self.chain_id, self.from_height, self.to_height, self.reply_to]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 5)
        return cls(*items[1:])
