"""Blocks: a header that commits to everything, a body, and a commit certificate.

The block hash is SHA-256 of the canonical header encoding.  The header commits to
the transactions (``tx_root``, an RFC 6962 Merkle root of their ids), to the body's
verdicts, rewards, device registrations, device approvals and fraud proofs
(``body_hash``) and to the post-state (``state_root``).

A fraud proof is a device's signed Verdict judging "valid" a transaction that fails a
check needing neither time nor state (validation.check_transaction_objective), with
that very transaction: proof enough to ban the device (ledger_node/chain/verify.py).

The certificate is outside the hash: ``commit_round`` and the ledger nodes' signatures
of kind COMMIT over ``compute_commit_digest(commit_round, block hash)``, which binds
each signature to the consensus round whose precommits it came from.  A decided block
holds > 2/3 of the validators' signatures, all of that one round (one suffices with a
single ledger node).  An uncertified block (a proposal's) has round 0 and none.

On the wire the body comes first and the certificate last: ``[6, header, txs,
verdicts, rewards, registrations, approvals, frauds, commit_round, certificate]``.
(In the dataclass ``registrations``, ``approvals`` and ``frauds`` are the last fields
only because they have defaults.)
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from micromine.protocol import cbor
from micromine.protocol.crypto import sha256
from micromine.protocol.device import DeviceHello
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.fields import array, check_bytes, check_chain_id, check_tuple, check_uint
from micromine.protocol.kinds import Kind
from micromine.protocol.limits import (
    HASH_LEN,
    MAX_BLOCK_APPROVALS,
    MAX_BLOCK_FRAUDS,
    MAX_BLOCK_REGISTRATIONS,
    MAX_BLOCK_REWARDS,
    MAX_BLOCK_TXS,
    MAX_BLOCK_VERDICTS,
    MAX_CERTIFICATE_SIGNATURES,
    MAX_ROUND,
    MAX_TIMESTAMP_MS,
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
)
from micromine.protocol.merkle import merkle_root
from micromine.protocol.messages import Transaction, Verdict, expect_tag

GENESIS_PARENT = bytes(HASH_LEN)  # prev_hash of height 1


@dataclass(frozen=True, slots=True)
class BlockHeader:
    KIND: ClassVar[Kind] = Kind.BLOCK_HEADER
    chain_id: str
    height: int  # the first block is height 1; genesis is height 0 and has no block
    prev_hash: bytes
    tx_root: bytes
    body_hash: bytes
    state_root: bytes
    timestamp_ms: int
    proposer: bytes

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_uint("height", self.height)
        check_bytes("prev_hash", self.prev_hash, HASH_LEN)
        check_bytes("tx_root", self.tx_root, HASH_LEN)
        check_bytes("body_hash", self.body_hash, HASH_LEN)
        check_bytes("state_root", self.state_root, HASH_LEN)
        check_uint("timestamp_ms", self.timestamp_ms, MAX_TIMESTAMP_MS)
        check_bytes("proposer", self.proposer, PUBLIC_KEY_LEN)

    def to_wire(self) -> list[Any]:
        return [
            int(self.KIND), self.chain_id, self.height, self.prev_hash, self.tx_root,
            self.body_hash, self.state_root, self.timestamp_ms, self.proposer,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 9)
        return cls(*items[1:])

    @property
    def hash(self) -> bytes:
        return sha256(cbor.encode(self.to_wire()))


@dataclass(frozen=True, slots=True)
class Reward:
    """Credit paid to a device's account in this block."""

    device: bytes
    amount: int

    def __post_init__(self) -> None:
        check_bytes("device", self.device, PUBLIC_KEY_LEN)
        check_uint("amount", self.amount)

    def to_wire(self) -> list[Any]:
        return [self.device, self.amount]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        pair = array("reward", items, 2)
        return cls(pair[0], pair[1])


@dataclass(frozen=True, slots=True)
class CommitSignature:
    """A ledger node's signature of kind COMMIT over (round, block hash): an entry of a
    certificate, whose round the block names (``Block.commit_round``)."""

    signer: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_bytes("signer", self.signer, PUBLIC_KEY_LEN)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    def to_wire(self) -> list[Any]:
        return [self.signer, self.signature]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        pair = array("commit signature", items, 2)
        return cls(pair[0], pair[1])


def compute_commit_digest(round: int, block_hash: bytes) -> bytes:
    """What a COMMIT signature covers (inside crypto.signing_bytes, kind COMMIT): SHA-256
    of the canonical encoding of ``[round, block_hash]``.  The round makes a certificate
    a quorum of *one* round; the height is in the block hash."""
    check_uint("round", round, MAX_ROUND, minimum=1)
    check_bytes("block_hash", block_hash, HASH_LEN)
    return sha256(cbor.encode([round, block_hash]))


def compute_tx_root(txs: Sequence[Transaction]) -> bytes:
    return merkle_root([tx.id for tx in txs])


@dataclass(frozen=True, slots=True)
class FraudProof:
    """A device's signed "valid" on ``tx``, which fails a stateless check: see the module
    docstring.  Wire form: ``[verdict, tx]``."""

    verdict: Verdict
    tx: Transaction

    def __post_init__(self) -> None:
        if type(self.verdict) is not Verdict:
            raise DecodeError(DecodeFailure.BAD_TYPE, "a fraud proof's verdict must be a Verdict")
        if type(self.tx) is not Transaction:
            raise DecodeError(DecodeFailure.BAD_TYPE, "a fraud proof's tx must be a Transaction")

    @property
    def device(self) -> bytes:
        return self.verdict.device

    def to_wire(self) -> list[Any]:
        return [self.verdict.to_wire(), self.tx.to_wire()]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        pair = array("fraud proof", items, 2)
        return cls(
            Verdict.from_wire(array("verdict", pair[0])),
            Transaction.from_wire(array("tx", pair[1])),
        )


@dataclass(frozen=True, slots=True)
class FraudReport:
    """A fraud proof handed to the ledger nodes by whoever found it: a watcher that
    checked a committed block (``micromine blocks watch --verify``), say.  Unsigned: the
    proof carries its own evidence (the device's signature on its verdict, and a
    transaction anyone can check), so the nodes check it as a block's (``[REJECT]``
    rules of FraudProof) and need not trust the reporter.  Wire form:
    ``[18, chain_id, [verdict, tx]]``."""

    KIND: ClassVar[Kind] = Kind.FRAUD_REPORT
    chain_id: str
    proof: FraudProof

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        if type(self.proof) is not FraudProof:
            raise DecodeError(DecodeFailure.BAD_TYPE, "a fraud report holds a FraudProof")

    def to_wire(self) -> list[Any]:
        return [int(self.KIND), self.chain_id, self.proof.to_wire()]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 3)
        return cls(items[1], FraudProof.from_wire(array("fraud proof", items[2])))


def compute_body_hash(
    verdicts: Sequence[Verdict],
    rewards: Sequence[Reward],
    registrations: Sequence[DeviceHello],
    *,
    approvals: Sequence[DeviceApproval] = (),
    frauds: Sequence[FraudProof] = (),
) -> bytes:
    """SHA-256 of ``[[verdict...], [reward...], [registration...], [approval...],
    [fraud proof...]]``, canonical CBOR: always the five arrays, empty or not."""
    body = [
        [v.to_wire() for v in verdicts],
        [r.to_wire() for r in rewards],
        [h.to_wire() for h in registrations],
        [a.to_wire() for a in approvals],
        [f.to_wire() for f in frauds],
    ]
    return sha256(cbor.encode(body))


@dataclass(frozen=True, slots=True)
class Block:
    KIND: ClassVar[Kind] = Kind.BLOCK
    header: BlockHeader
    txs: tuple[Transaction, ...]
    verdicts: tuple[Verdict, ...]  # the signed verdicts that justify ``txs``
    rewards: tuple[Reward, ...]
    commit_round: int  # the round all of the certificate's signatures are for; 0: none
    certificate: tuple[CommitSignature, ...]  # empty exactly when commit_round is 0
    registrations: tuple[DeviceHello, ...] = ()  # devices this block registers
    approvals: tuple[DeviceApproval, ...] = ()  # operators' approvals/revocations it records
    frauds: tuple[FraudProof, ...] = ()  # proofs against devices this block bans

    def __post_init__(self) -> None:
        if type(self.header) is not BlockHeader:
            raise DecodeError(DecodeFailure.BAD_TYPE, "header must be a BlockHeader")
        check_tuple("txs", self.txs, 0, MAX_BLOCK_TXS)
        check_tuple("verdicts", self.verdicts, 0, MAX_BLOCK_VERDICTS)
        check_tuple("rewards", self.rewards, 0, MAX_BLOCK_REWARDS)
        check_uint("commit_round", self.commit_round, MAX_ROUND)
        check_tuple("certificate", self.certificate, 0, MAX_CERTIFICATE_SIGNATURES)
        check_tuple("registrations", self.registrations, 0, MAX_BLOCK_REGISTRATIONS)
        check_tuple("approvals", self.approvals, 0, MAX_BLOCK_APPROVALS)
        check_tuple("frauds", self.frauds, 0, MAX_BLOCK_FRAUDS)
        for name, items, kind in (
            ("txs", self.txs, Transaction),
            ("verdicts", self.verdicts, Verdict),
            ("rewards", self.rewards, Reward),
            ("certificate", self.certificate, CommitSignature),
            ("registrations", self.registrations, DeviceHello),
            ("approvals", self.approvals, DeviceApproval),
            ("frauds", self.frauds, FraudProof),
        ):
            if any(type(item) is not kind for item in items):
                raise DecodeError(DecodeFailure.BAD_TYPE, f"{name} must hold {kind.__name__}")
        if (self.commit_round == 0) != (not self.certificate):
            raise DecodeError(
                DecodeFailure.OUT_OF_RANGE,
                "a certificate names its round (1 or more); an uncertified block has round 0",
            )

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def to_wire(self) -> list[Any]:
        return [
            int(self.KIND),
            self.header.to_wire(),
            [tx.to_wire() for tx in self.txs],
            [v.to_wire() for v in self.verdicts],
            [r.to_wire() for r in self.rewards],
            [h.to_wire() for h in self.registrations],
            [a.to_wire() for a in self.approvals],
            [f.to_wire() for f in self.frauds],
            self.commit_round,
            [c.to_wire() for c in self.certificate],
        ]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 10)
        return cls(
            BlockHeader.from_wire(array("header", items[1])),
            tuple(Transaction.from_wire(array("tx", t)) for t in array("txs", items[2])),
            tuple(Verdict.from_wire(array("verdict", v)) for v in array("verdicts", items[3])),
            tuple(Reward.from_wire(r) for r in array("rewards", items[4])),
            items[8],
            tuple(CommitSignature.from_wire(c) for c in array("certificate", items[9])),
            tuple(
                DeviceHello.from_wire(array("registration", h))
                for h in array("registrations", items[5])
            ),
            tuple(
                DeviceApproval.from_wire(array("approval", a)) for a in array("approvals", items[6])
            ),
            tuple(FraudProof.from_wire(f) for f in array("frauds", items[7])),
        )
