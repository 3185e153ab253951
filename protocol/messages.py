"""Transaction-path messages: Transaction, Submission, Assignment, WorkBatch, Verdict,
Receipts.

Each message is a frozen dataclass whose ``__post_init__`` checks every field, and
whose wire form is a CBOR array ``[kind tag, field, field, ...]`` in declaration order
(see docs/PROTOCOL.md).  A signed message's id is SHA-256 of the canonical encoding of
that array *without* its trailing signature; the signature covers
``crypto.signing_bytes(kind, chain_id, id)``.

Throughput shapes: a Submission carries up to 1024 transactions, a WorkBatch up to 256,
and a device answers a whole batch with one Verdict.  A batch travels under an
Assignment its issuer signed, which the device copies into its Verdict.

Longer than 400 lines because each message's checks sit in its own dataclass, and the
transaction path's six messages are one subject that a firmware author reads in order.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
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
from micromine.protocol.kinds import FINAL_STATUSES, STATE_REASONS, Kind, ReceiptStatus
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
from micromine.protocol.merkle import merkle_root

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


def memoise_id(message: SignedMessage) -> bytes:
    """Compute a message's id once and keep it on the (immutable) message, in its
    ``_id`` field (``field(default=b"", init=False, repr=False, compare=False)``).

    A ledger asks a transaction's id at admission, in the tally, when ordering, rooting
    and checking a block, and again for every node's copy of a proposal; a verdict's
    covers its 64 judgements, a proposal's its whole block.  The memo is not a field of
    the wire form, equality or repr, and ``dataclasses.replace`` starts the copy
    without it."""
    value = sha256(cbor.encode(message.unsigned_wire()))
    object.__setattr__(message, "_id", value)
    return value


def compute_judgements_root(judgements: Sequence["Judgement"]) -> bytes:
    """The root a verdict's judgements name; equal to its assignment's ``tx_root`` exactly
    when they judge the assignment's transactions, all of them, in order."""
    return merkle_root([j.tx_id + j.signature_hash for j in judgements])


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

    _id: bytes = field(default=b"", init=False, repr=False, compare=False)  # memoise_id

    @property
    def id(self) -> bytes:
        return self._id or memoise_id(self)

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
class Assignment(SignedMessage):
    """A ledger node's signed statement "I gave these transactions to be judged".

    It names the batch's transactions by ``tx_root`` (protocol/assignment.py: the Merkle
    root over ``tx_id | SHA-256(tx signature)`` in batch order), the registry that ranks
    the devices entitled to judge them, and the deadline.  Its id seeds that ranking.  A
    device copies it unchanged into its Verdict, so any node can check, without the
    batch, that a validator made the batch and that the verdict judges exactly its
    transactions (by recomputing ``tx_root`` from the judgements).
    """

    KIND: ClassVar[Kind] = Kind.ASSIGNMENT
    chain_id: str
    issuer: bytes  # the ledger node's public key; must be a validator's
    seq: int  # issuer-local counter, makes ids unique
    # The chain height whose device registry ranks the devices entitled to judge the
    # batch (protocol/assignment.py).
    registry_height: int
    deadline_ms: int
    tx_root: bytes
    signature: bytes = NO_SIGNATURE

    _id: bytes = field(default=b"", init=False, repr=False, compare=False)  # memoise_id

    @property
    def id(self) -> bytes:
        return self._id or memoise_id(self)

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("issuer", self.issuer, PUBLIC_KEY_LEN)
        check_uint("seq", self.seq)
        check_uint("registry_height", self.registry_height)
        check_uint("deadline_ms", self.deadline_ms, MAX_TIMESTAMP_MS)
        check_bytes("tx_root", self.tx_root, HASH_LEN)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.issuer

    def unsigned_wire(self) -> list[Any]:
        return [
            int(self.KIND), self.chain_id, self.issuer, self.seq, self.registry_height,
            self.deadline_ms, self.tx_root,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 8)
        return cls(*items[1:])


def _nested_assignment(value: Any) -> Assignment:
    return Assignment.from_wire(array("assignment", value))


def _check_assignment(value: Any) -> None:
    if type(value) is not Assignment:
        raise DecodeError(DecodeFailure.BAD_TYPE, "assignment must be an Assignment")


@dataclass(frozen=True, slots=True)
class WorkBatch:
    """Transactions a ledger node asks devices to judge, under its signed Assignment.

    Not signed itself: the assignment's signature covers ``tx_root``, which commits to
    every transaction (id and signature), so a second signature would add nothing.  A
    device checks that ``tx_root`` is the root of ``txs`` before judging.  The same
    batch goes to each of the k devices chosen for it; a re-dispatch is a new
    assignment (new seq, new id, so a new ranking).
    """

    KIND: ClassVar[Kind] = Kind.WORK_BATCH
    assignment: Assignment
    txs: tuple[Transaction, ...]

    def __post_init__(self) -> None:
        _check_assignment(self.assignment)
        check_tuple("txs", self.txs, 1, MAX_BATCH_TXS)
        for tx in self.txs:
            if type(tx) is not Transaction:
                raise DecodeError(DecodeFailure.BAD_TYPE, "txs must hold Transactions")

    @property
    def chain_id(self) -> str:
        return self.assignment.chain_id

    @property
    def id(self) -> bytes:
        """The batch is named by its assignment's id."""
        return self.assignment.id

    def to_wire(self) -> list[Any]:
        return [int(self.KIND), self.assignment.to_wire(), [tx.to_wire() for tx in self.txs]]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 3)
        txs = tuple(Transaction.from_wire(array("tx", t)) for t in array("txs", items[2]))
        return cls(_nested_assignment(items[1]), txs)


@dataclass(frozen=True, slots=True)
class Judgement:
    """One device's finding on one transaction: ``reason`` 0 means valid.

    ``signature_hash`` is SHA-256 of the 64-byte signature of the transaction judged: the
    id does not cover the signature, and a finding must name the exact bytes judged (a
    "valid" finding on a copy whose signature is garbage proves nothing against the
    device; see docs/PROTOCOL.md, fraud proofs).
    """

    tx_id: bytes
    signature_hash: bytes
    reason: int

    def __post_init__(self) -> None:
        check_bytes("tx_id", self.tx_id, HASH_LEN)
        check_bytes("signature_hash", self.signature_hash, HASH_LEN)
        check_uint("reason", self.reason, 255)

    @classmethod
    def of(cls, tx: Transaction, reason: int) -> "Judgement":
        """The judgement of ``tx`` (its id and the hash of its signature) with ``reason``."""
        return cls(tx.id, sha256(tx.signature), reason)

    def to_wire(self) -> list[Any]:
        return [self.tx_id, self.signature_hash, self.reason]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        triple = array("judgement", items, 3)
        return cls(triple[0], triple[1], triple[2])


@dataclass(frozen=True, slots=True)
class Verdict(SignedMessage):
    """A device's signed findings on every transaction of one batch, in batch order,
    under the batch's Assignment (copied unchanged)."""

    KIND: ClassVar[Kind] = Kind.VERDICT
    chain_id: str
    device: bytes  # the device's public key
    assignment: Assignment
    judgements: tuple[Judgement, ...]
    signature: bytes = NO_SIGNATURE

    _id: bytes = field(default=b"", init=False, repr=False, compare=False)  # memoise_id
    _judgements_root: bytes = field(default=b"", init=False, repr=False, compare=False)

    @property
    def id(self) -> bytes:
        return self._id or memoise_id(self)

    @property
    def judgements_root(self) -> bytes:
        """``compute_judgements_root(self.judgements)``, computed once: every check of
        the verdict's binding needs it (a proposer's selection, the state transition,
        each node's check of each proposal), 64 hashes and a Merkle tree each time."""
        if not self._judgements_root:
            object.__setattr__(self, "_judgements_root", compute_judgements_root(self.judgements))
        return self._judgements_root

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("device", self.device, PUBLIC_KEY_LEN)
        _check_assignment(self.assignment)
        if self.assignment.chain_id != self.chain_id:
            raise DecodeError(DecodeFailure.OUT_OF_RANGE, "the assignment is for another chain")
        check_tuple("judgements", self.judgements, 1, MAX_BATCH_TXS)
        for judgement in self.judgements:
            if type(judgement) is not Judgement:
                raise DecodeError(DecodeFailure.BAD_TYPE, "judgements must hold Judgements")
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.device

    @property
    def batch_id(self) -> bytes:
        """The id of the batch judged: its assignment's id."""
        return self.assignment.id

    @property
    def registry_height(self) -> int:
        return self.assignment.registry_height

    def unsigned_wire(self) -> list[Any]:
        judgements = [j.to_wire() for j in self.judgements]
        return [int(self.KIND), self.chain_id, self.device, self.assignment.to_wire(), judgements]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 6)
        judgements = tuple(Judgement.from_wire(j) for j in array("judgements", items[4]))
        return cls(items[1], items[2], _nested_assignment(items[3]), judgements, items[5])


@dataclass(frozen=True, slots=True)
class Receipt:
    """The fate of one submitted item: see kinds.ReceiptStatus for ``value``.

    The detail (``height``, ``next_nonce``) says what state a judgement rests on: the
    committed height the node read the sender's account at, and the nonce the node
    needs next from the sender there (the committed nonce, plus the sender's
    transactions pending at the node in sequence).  Every HELD receipt has it, and a
    REJECTED one has it exactly when its reason is one of kinds.STATE_REASONS; on the
    wire it is two more items, so a receipt without it keeps the 3-item form.
    """

    item_id: bytes  # transaction id, or SHA-256 of an item that is not a transaction
    status: int
    value: int
    height: int | None = None
    next_nonce: int | None = None

    def __post_init__(self) -> None:
        check_bytes("item_id", self.item_id, HASH_LEN)
        check_uint("status", self.status, int(ReceiptStatus.HELD))
        check_uint("value", self.value)
        detailed = self.height is not None or self.next_nonce is not None
        if detailed:
            check_uint("height", self.height)
            check_uint("next_nonce", self.next_nonce)
        # [REJECT] The detail comes exactly with a HELD status or a state-dependent
        # rejection (one canonical form per receipt).
        wanted = self.status == ReceiptStatus.HELD or (
            self.status == ReceiptStatus.REJECTED and self.value in STATE_REASONS
        )
        if detailed != wanted:
            raise DecodeError(
                DecodeFailure.BAD_SHAPE,
                f"receipt detail {'missing' if wanted else 'not allowed'} for status "
                f"{self.status} value {self.value}",
            )

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_wire(self) -> list[Any]:
        if self.height is None:
            return [self.item_id, self.status, self.value]
        return [self.item_id, self.status, self.value, self.height, self.next_nonce]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        fields = array("receipt", items)
        if len(fields) not in (3, 5):
            raise DecodeError(
                DecodeFailure.BAD_SHAPE, f"receipt must have 3 or 5 items, has {len(fields)}"
            )
        return cls(*fields)


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
