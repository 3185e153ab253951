"""Transaction-path messages: Transaction, Submission, WorkBatch, Verdict, Receipts.

Each message is a frozen dataclass whose ``__post_init__`` checks every field, and
whose wire form is a CBOR array ``[kind tag, field, field, ...]`` in declaration order
(see docs/PROTOCOL.md).  A signed message's id is SHA-256 of the canonical encoding of
that array *without* its trailing signature; the signature covers
``crypto.signing_bytes(kind, chain_id, id)``.

Throughput shapes: a Submission carries up to 1024 transactions, a WorkBatch up to 256,
and a device answers a whole batch with one Verdict.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from micromine.protocol import cbor
from micromine.protocol.crypto import sha256
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.fields import (
    array,
    check_bytes,
    check_chain_id,
    check_max_bytes,
    check_text,
    check_tuple,
    check_uint,
)
from micromine.protocol.kinds import Kind
from micromine.protocol.limits import (
    HASH_LEN,
    MAX_BATCH_TXS,
    MAX_MEMO_BYTES,
    MAX_RECEIPT_ITEMS,
    MAX_SUBMISSION_ITEM_BYTES,
    MAX_SUBMISSION_TXS,
    MAX_TIMESTAMP_MS,
    PUBLIC_KEY_LEN,
    REPLY_TO_LEN,
    SIGNATURE_LEN,
)

NO_SIGNATURE = bytes(SIGNATURE_LEN)  # placeholder before signing


class SignedMessage:
    """Shared behaviour of every signed message: id, wire form, signer.

    Subclasses are frozen dataclasses that define ``KIND``, ``chain_id``, ``signature``,
    ``signer`` and ``unsigned_wire()``; the signature is always the last wire field.
    """

    __slots__ = ()
    KIND: ClassVar[Kind]
    chain_id: str
    signature: bytes

    @property
    def signer(self) -> bytes:
        raise NotImplementedError

    def unsigned_wire(self) -> list[Any]:
        raise NotImplementedError

    def to_wire(self) -> list[Any]:
        return [*self.unsigned_wire(), self.signature]

    @property
    def id(self) -> bytes:
        """SHA-256 of the canonical encoding without the signature."""
        return sha256(cbor.encode(self.unsigned_wire()))


def expect_tag(items: Sequence[Any], kind: Kind, length: int) -> None:
    """Check a decoded array's leading tag and arity before reading its fields."""
    if not items or type(items[0]) is not int:
        raise DecodeError(DecodeFailure.BAD_SHAPE, "message must start with a kind tag")
    if items[0] != kind:
        raise DecodeError(DecodeFailure.WRONG_KIND, f"expected {kind.name}, got tag {items[0]}")
    if len(items) != length:
        raise DecodeError(
            DecodeFailure.BAD_SHAPE, f"{kind.name} has {length} items, not {len(items)}"
        )


@dataclass(frozen=True, slots=True)
class Transaction(SignedMessage):
    """A transfer of ``amount`` from ``sender`` to ``recipient``, paying ``fee``."""

    KIND: ClassVar[Kind] = Kind.TRANSACTION
    chain_id: str
    sender: bytes  # Ed25519 public key; also the account address
    recipient: bytes  # account address (a public key)
    amount: int
    fee: int
    nonce: int  # the sender's count of committed transactions before this one
    expiry_ms: int  # invalid in any block whose timestamp is later
    memo: str
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("sender", self.sender, PUBLIC_KEY_LEN)
        check_bytes("recipient", self.recipient, PUBLIC_KEY_LEN)
        check_uint("amount", self.amount)
        check_uint("fee", self.fee)
        check_uint("nonce", self.nonce)
        check_uint("expiry_ms", self.expiry_ms, MAX_TIMESTAMP_MS)
        check_text("memo", self.memo, MAX_MEMO_BYTES)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.sender

    def unsigned_wire(self) -> list[Any]:
        return [
            int(self.KIND), self.chain_id, self.sender, self.recipient,
            self.amount, self.fee, self.nonce, self.expiry_ms, self.memo,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 10)
        return cls(*items[1:])


@dataclass(frozen=True, slots=True)
class Submission:
    """Transactions a client hands to the ledger nodes, as raw encoded items.

    Items stay opaque bytes so that the ledger can report on each one, malformed or
    oversized ones included (by SHA-256 of the item), on ``receipts/<reply_to>``.
    Unsigned: each transaction carries its own signature.
    """

    KIND: ClassVar[Kind] = Kind.SUBMISSION
    chain_id: str
    reply_to: bytes  # 16 random bytes naming the submitter's receipt topic
    items: tuple[bytes, ...]

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("reply_to", self.reply_to, REPLY_TO_LEN)
        check_tuple("items", self.items, 1, MAX_SUBMISSION_TXS)
        for item in self.items:
            check_max_bytes("item", item, MAX_SUBMISSION_ITEM_BYTES)

    def to_wire(self) -> list[Any]:
        return [int(self.KIND), self.chain_id, self.reply_to, list(self.items)]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 4)
        return cls(items[1], items[2], tuple(array("items", items[3])))


@dataclass(frozen=True, slots=True)
class WorkBatch(SignedMessage):
    """Transactions a ledger node asks devices to judge before ``deadline_ms``.

    Device-independent: the same signed batch goes to each of the k devices chosen for
    it; a re-dispatch after a missed deadline is a new batch (new seq, new id).  Which
    devices may judge it follows from its id and ``registry_height`` (assignment.py).
    """

    KIND: ClassVar[Kind] = Kind.WORK_BATCH
    chain_id: str
    issuer: bytes  # the ledger node's public key
    seq: int  # issuer-local counter, makes ids unique
    deadline_ms: int
    txs: tuple[Transaction, ...]
    # The chain height whose device registry ranked the devices entitled to judge this
    # batch (protocol/assignment.py); a device copies it into its Verdict unchanged.
    registry_height: int
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("issuer", self.issuer, PUBLIC_KEY_LEN)
        check_uint("seq", self.seq)
        check_uint("deadline_ms", self.deadline_ms, MAX_TIMESTAMP_MS)
        check_tuple("txs", self.txs, 1, MAX_BATCH_TXS)
        for tx in self.txs:
            if type(tx) is not Transaction:
                raise DecodeError(DecodeFailure.BAD_TYPE, "txs must hold Transactions")
        check_uint("registry_height", self.registry_height)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.issuer

    def unsigned_wire(self) -> list[Any]:
        txs = [tx.to_wire() for tx in self.txs]
        return [
            int(self.KIND), self.chain_id, self.issuer, self.seq, self.deadline_ms, txs,
            self.registry_height,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 8)
        txs = tuple(Transaction.from_wire(array("tx", t)) for t in array("txs", items[5]))
        return cls(items[1], items[2], items[3], items[4], txs, items[6], items[7])


@dataclass(frozen=True, slots=True)
class Judgement:
    """One device's finding on one transaction: ``reason`` 0 means valid."""

    tx_id: bytes
    reason: int

    def __post_init__(self) -> None:
        check_bytes("tx_id", self.tx_id, HASH_LEN)
        check_uint("reason", self.reason, 255)

    def to_wire(self) -> list[Any]:
        return [self.tx_id, self.reason]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        pair = array("judgement", items, 2)
        return cls(pair[0], pair[1])


@dataclass(frozen=True, slots=True)
class Verdict(SignedMessage):
    """A device's signed findings on every transaction of one batch, in batch order."""

    KIND: ClassVar[Kind] = Kind.VERDICT
    chain_id: str
    batch_id: bytes
    device: bytes  # the device's public key
    judgements: tuple[Judgement, ...]
    registry_height: int  # the batch's registry_height, copied unchanged
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("batch_id", self.batch_id, HASH_LEN)
        check_bytes("device", self.device, PUBLIC_KEY_LEN)
        check_tuple("judgements", self.judgements, 1, MAX_BATCH_TXS)
        for judgement in self.judgements:
            if type(judgement) is not Judgement:
                raise DecodeError(DecodeFailure.BAD_TYPE, "judgements must hold Judgements")
        check_uint("registry_height", self.registry_height)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.device

    def unsigned_wire(self) -> list[Any]:
        judgements = [j.to_wire() for j in self.judgements]
        return [
            int(self.KIND), self.chain_id, self.batch_id, self.device, judgements,
            self.registry_height,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 7)
        judgements = tuple(Judgement.from_wire(j) for j in array("judgements", items[4]))
        return cls(items[1], items[2], items[3], judgements, items[5], items[6])


@dataclass(frozen=True, slots=True)
class Receipt:
    """The fate of one submitted item: see kinds.ReceiptStatus for ``value``."""

    item_id: bytes  # transaction id, or SHA-256 of an item that is not a transaction
    status: int
    value: int

    def __post_init__(self) -> None:
        check_bytes("item_id", self.item_id, HASH_LEN)
        check_uint("status", self.status, 2)
        check_uint("value", self.value)

    def to_wire(self) -> list[Any]:
        return [self.item_id, self.status, self.value]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        triple = array("receipt", items, 3)
        return cls(triple[0], triple[1], triple[2])


@dataclass(frozen=True, slots=True)
class Receipts(SignedMessage):
    """A ledger node's signed report on submitted items, for one reply channel."""

    KIND: ClassVar[Kind] = Kind.RECEIPTS
    chain_id: str
    issuer: bytes
    reply_to: bytes
    timestamp_ms: int
    receipts: tuple[Receipt, ...]
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("issuer", self.issuer, PUBLIC_KEY_LEN)
        check_bytes("reply_to", self.reply_to, REPLY_TO_LEN)
        check_uint("timestamp_ms", self.timestamp_ms, MAX_TIMESTAMP_MS)
        check_tuple("receipts", self.receipts, 1, MAX_RECEIPT_ITEMS)
        for receipt in self.receipts:
            if type(receipt) is not Receipt:
                raise DecodeError(DecodeFailure.BAD_TYPE, "receipts must hold Receipts")
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.issuer

    def unsigned_wire(self) -> list[Any]:
        receipts = [r.to_wire() for r in self.receipts]
        return [
            int(self.KIND), self.chain_id, self.issuer, self.reply_to,
            self.timestamp_ms, receipts,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 7)
        receipts = tuple(Receipt.from_wire(r) for r in array("receipts", items[5]))
        return cls(items[1], items[2], items[3], items[4], receipts, items[6])
