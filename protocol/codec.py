"""Bytes <-> messages, through one table from wire tag to class.

``decode`` is the only way untrusted bytes become messages.  It raises ``DecodeError``
and nothing else; it rejects any input that is not byte-for-byte the canonical encoding
of the message it decodes to (so every message has exactly one encoding, and ids and
signatures can be computed over re-encodings safely).
"""

import dataclasses
from typing import Any, TypeVar, cast

from micromine.protocol import cbor
from micromine.protocol.block import Block, BlockHeader, FraudReport, compute_commit_digest
from micromine.protocol.consensus import Precommit, Prevote, Proposal, SyncRequest
from micromine.protocol.crypto import KeyPair, verify
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.kinds import Kind
from micromine.protocol.limits import MAX_ANY_MESSAGE_BYTES, MAX_MESSAGE_BYTES
from micromine.protocol.messages import (
    Assignment,
    Receipts,
    SignedMessage,
    Submission,
    Transaction,
    Verdict,
    WorkBatch,
)

Message = (
    Transaction | Submission | WorkBatch | Verdict | BlockHeader | Block
    | DeviceHello | Heartbeat | DeviceStatus | Receipts
    | Proposal | Prevote | Precommit | SyncRequest | Assignment
    | DeviceApproval | FraudReport
)  # fmt: skip

MESSAGE_TYPES: dict[int, type[Any]] = {
    Kind.TRANSACTION: Transaction,
    Kind.SUBMISSION: Submission,
    Kind.WORK_BATCH: WorkBatch,
    Kind.VERDICT: Verdict,
    Kind.BLOCK_HEADER: BlockHeader,
    Kind.BLOCK: Block,
    Kind.DEVICE_HELLO: DeviceHello,
    Kind.HEARTBEAT: Heartbeat,
    Kind.DEVICE_STATUS: DeviceStatus,
    Kind.RECEIPTS: Receipts,
    Kind.PROPOSAL: Proposal,
    Kind.PREVOTE: Prevote,
    Kind.PRECOMMIT: Precommit,
    Kind.SYNC_REQUEST: SyncRequest,
    Kind.DEVICE_APPROVAL: DeviceApproval,
    Kind.ASSIGNMENT: Assignment,
    Kind.FRAUD_REPORT: FraudReport,
}

_SIZE_NAMES: dict[type[Any], str] = {
    Transaction: "transaction",
    Submission: "submission",
    WorkBatch: "work_batch",
    Verdict: "verdict",
    BlockHeader: "block_header",
    Block: "block",
    DeviceHello: "device_hello",
    Heartbeat: "heartbeat",
    DeviceStatus: "device_status",
    Receipts: "receipts",
    Proposal: "proposal",
    Prevote: "prevote",
    Precommit: "precommit",
    SyncRequest: "sync_request",
    DeviceApproval: "device_approval",
    Assignment: "assignment",
    FraudReport: "fraud_report",
}

M = TypeVar("M")


def encode(message: Message) -> bytes:
    """The canonical encoding of a message (its only valid encoding)."""
    return cbor.encode(message.to_wire())


def max_bytes(message_type: type[Any]) -> int:
    return MAX_MESSAGE_BYTES[_SIZE_NAMES[message_type]]


def decode(data: bytes, expected: type[M] | None = None) -> M:
    """Decode untrusted bytes into a message (of type ``expected`` when given).

    Raises DecodeError (only) when the bytes are too large, not strict canonical CBOR,
    of an unknown or unexpected kind, or any field is of the wrong type or range.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(DecodeFailure.BAD_TYPE, "input must be bytes")
    data = bytes(data)
    limit = max_bytes(expected) if expected is not None else MAX_ANY_MESSAGE_BYTES
    value = cbor.decode(data, limit)
    if type(value) is not list or not value or type(value[0]) is not int:
        raise DecodeError(DecodeFailure.BAD_SHAPE, "a message is an array led by a kind tag")
    message_type = MESSAGE_TYPES.get(value[0])
    if message_type is None:
        raise DecodeError(DecodeFailure.UNKNOWN_KIND, f"unknown kind tag {value[0]}")
    if expected is not None and message_type is not expected:
        raise DecodeError(
            DecodeFailure.WRONG_KIND, f"expected {expected.__name__}, got {message_type.__name__}"
        )
    if expected is None and len(data) > max_bytes(message_type):
        raise DecodeError(DecodeFailure.TOO_LARGE, f"{message_type.__name__} too large")
    try:
        message = message_type.from_wire(value)
    except RecursionError:  # pragma: no cover - depth is capped before this
        raise DecodeError(DecodeFailure.TOO_DEEP, "nesting too deep") from None
    # Re-encoding the decoded tree, not the message, is the same check (every from_wire
    # keeps its items' exact types and values: fields.py) at a fraction of the cost of
    # rebuilding the wire tree of a proposal's thousands of transactions and judgements.
    if cbor.encode(value) != data:
        raise DecodeError(DecodeFailure.NOT_CANONICAL, "not the canonical encoding")
    return cast(M, message)


S = TypeVar("S", bound=SignedMessage)


def sign(message: S, key: KeyPair) -> S:
    """Return ``message`` with its signature set; ``key`` must be the message's signer."""
    if key.public != message.signer:
        raise ValueError("the key does not belong to the message's signer")
    signature = key.sign(message.KIND, message.chain_id, message.id)
    return dataclasses.replace(message, signature=signature)  # type: ignore[type-var]


def is_signature_valid(message: SignedMessage) -> bool:
    return verify(message.signer, message.KIND, message.chain_id, message.id, message.signature)


def sign_commit(round: int, block_hash: bytes, chain_id: str, key: KeyPair) -> bytes:
    """A COMMIT signature over (round, block hash): what a precommit carries and a
    certificate of that round holds.  Raises DecodeError for a round outside 1..MAX_ROUND."""
    return key.sign(Kind.COMMIT, chain_id, compute_commit_digest(round, block_hash))


def is_commit_signature_valid(
    signer: bytes, chain_id: str, round: int, block_hash: bytes, signature: bytes
) -> bool:
    """True when ``signer`` signed COMMIT over exactly this round and block hash."""
    try:
        digest = compute_commit_digest(round, block_hash)
    except DecodeError:
        return False
    return verify(signer, Kind.COMMIT, chain_id, digest, signature)
