"""Deterministic, valid, signed sample messages of every kind for the protocol tests.

Pure values: no clock, no randomness (keys come from fixed seeds), no I/O.  Each
builder takes keyword overrides so that a test can change one field and keep the rest.

Longer than 400 lines because it builds one sample of every message kind, each with its
fields spelled out; splitting it would scatter the one list the vectors and codec tests
iterate over.
"""

import dataclasses
from typing import Any

from micromine.protocol import cbor, codec
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.block import (
    Block,
    BlockHeader,
    CommitSignature,
    FraudProof,
    FraudReport,
    Reward,
    compute_body_hash,
    compute_tx_root,
)
from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal, SyncRequest
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.kinds import ReceiptStatus
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

CHAIN = "testnet-1"
NOW_MS = 1_700_000_000_000
REPLY_TO = bytes(range(16))


def key(name: str) -> KeyPair:
    return KeyPair(sha256(b"micromine-test-key/" + name.encode()))


ALICE = key("alice")
BOB = key("bob")
LEDGER = key("ledger")
DEVICE = key("device")
OTHER_DEVICE = key("device-2")
OPERATOR = key("operator")


def transaction(signer: KeyPair = ALICE, **overrides: Any) -> Transaction:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "sender": signer.public,
        "recipient": BOB.public,
        "amount": 1_000,
        "fee": 10,
        "nonce": 0,
        "expiry_ms": NOW_MS + 60_000,
        "memo": "coffee",
    }
    fields.update(overrides)
    tx = Transaction(**fields)
    return codec.sign(tx, signer) if tx.sender == signer.public else tx


def submission(**overrides: Any) -> Submission:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "reply_to": REPLY_TO,
        "items": (codec.encode(transaction()), b"not a transaction"),
    }
    fields.update(overrides)
    return Submission(**fields)


def signed_batch(
    issuer: KeyPair,
    *,
    seq: int,
    registry_height: int,
    deadline_ms: int,
    txs: tuple[Transaction, ...],
    chain_id: str = CHAIN,
) -> WorkBatch:
    """A WorkBatch of ``txs`` under an assignment ``issuer`` signed, as a ledger makes it."""
    root = compute_batch_root(txs)
    unsigned = Assignment(chain_id, issuer.public, seq, registry_height, deadline_ms, root)
    return WorkBatch(codec.sign(unsigned, issuer), txs)


def assignment(**overrides: Any) -> Assignment:
    txs = (transaction(), transaction(nonce=1, memo=""))
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "issuer": LEDGER.public,
        "seq": 7,
        "registry_height": 12,
        "deadline_ms": NOW_MS + 5_000,
        "tx_root": compute_batch_root(txs),
    }
    fields.update(overrides)
    return codec.sign(Assignment(**fields), LEDGER)


def work_batch(**overrides: Any) -> WorkBatch:
    fields: dict[str, Any] = {
        "assignment": assignment(),
        "txs": (transaction(), transaction(nonce=1, memo="")),
    }
    fields.update(overrides)
    return WorkBatch(**fields)


def verdict(batch: WorkBatch | None = None, signer: KeyPair = DEVICE, **overrides: Any) -> Verdict:
    batch = batch if batch is not None else work_batch()
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "device": signer.public,
        "assignment": batch.assignment,
        "judgements": tuple(Judgement.of(tx, 0) for tx in batch.txs),
    }
    fields.update(overrides)
    return codec.sign(Verdict(**fields), signer)


def block_header(**overrides: Any) -> BlockHeader:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "height": 1,
        "prev_hash": bytes(32),
        "tx_root": sha256(b"tx root"),
        "body_hash": sha256(b"body"),
        "state_root": sha256(b"state"),
        "timestamp_ms": NOW_MS,
        "proposer": LEDGER.public,
    }
    fields.update(overrides)
    return BlockHeader(**fields)


COMMIT_ROUND = 2  # the sample block is decided in round 2, as the sample precommit votes


def fraud_proof() -> FraudProof:
    """A device's "valid" on a transaction whose signature is not its sender's."""
    forged = dataclasses.replace(transaction(nonce=9), signature=bytes(64))
    batch = signed_batch(
        LEDGER, seq=8, registry_height=12, deadline_ms=NOW_MS + 5_000, txs=(forged,)
    )
    return FraudProof(verdict(batch, OTHER_DEVICE), forged)


def fraud_report() -> FraudReport:
    return FraudReport(CHAIN, fraud_proof())


def block() -> Block:
    batch = work_batch()
    verdicts = (verdict(batch), verdict(batch, OTHER_DEVICE))
    rewards = (Reward(DEVICE.public, 3), Reward(OTHER_DEVICE.public, 3))
    registrations = (device_hello(),)
    approvals = (device_approval(),)
    frauds = (fraud_proof(),)
    header = block_header(
        tx_root=compute_tx_root(batch.txs),
        body_hash=compute_body_hash(
            verdicts, rewards, registrations, approvals=approvals, frauds=frauds
        ),
    )
    certificate = (
        CommitSignature(LEDGER.public, codec.sign_commit(COMMIT_ROUND, header.hash, CHAIN, LEDGER)),
    )
    return Block(
        header,
        batch.txs,
        verdicts,
        rewards,
        COMMIT_ROUND,
        certificate,
        registrations,
        approvals,
        frauds,
    )


def device_hello(**overrides: Any) -> DeviceHello:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "device": DEVICE.public,
        "agent_version": "micromine-c/0.1",
        "capacity": 64,
        "timestamp_ms": NOW_MS,
    }
    fields.update(overrides)
    return codec.sign(DeviceHello(**fields), DEVICE)


def heartbeat(**overrides: Any) -> Heartbeat:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "device": DEVICE.public,
        "seq": 3,
        "timestamp_ms": NOW_MS,
        "busy": 1,
        "window": 2,
    }
    fields.update(overrides)
    return codec.sign(Heartbeat(**fields), DEVICE)


def device_status(**overrides: Any) -> DeviceStatus:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "device": DEVICE.public,
        "online": False,
        "timestamp_ms": NOW_MS,
    }
    fields.update(overrides)
    return codec.sign(DeviceStatus(**fields), DEVICE)


def receipts(**overrides: Any) -> Receipts:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "issuer": LEDGER.public,
        "reply_to": REPLY_TO,
        "timestamp_ms": NOW_MS,
        "receipts": (
            Receipt(transaction().id, int(ReceiptStatus.PENDING), 0),
            Receipt(sha256(b"not a transaction"), int(ReceiptStatus.REJECTED), 1),
            Receipt(transaction(nonce=1).id, int(ReceiptStatus.COMMITTED), 12),
        ),
    }
    fields.update(overrides)
    return codec.sign(Receipts(**fields), LEDGER)


# --- consensus ------------------------------------------------------------------------


def proposed_block() -> Block:
    """The sample block as a proposer offers it: everything but the certificate."""
    return dataclasses.replace(block(), commit_round=0, certificate=())


def proposal(signer: KeyPair = LEDGER, **overrides: Any) -> Proposal:
    # Round 2 with no polka: a re-proposal after a round that timed out.
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "height": 1,
        "round": 2,
        "pol_round": 0,
        "block": proposed_block(),
        "proposer": signer.public,
    }
    fields.update(overrides)
    return codec.sign(Proposal(**fields), signer)


def prevote(signer: KeyPair = LEDGER, **overrides: Any) -> Prevote:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "height": 1,
        "round": 2,
        "block_hash": proposed_block().hash,
        "voter": signer.public,
    }
    fields.update(overrides)
    return codec.sign(Prevote(**fields), signer)


def precommit(signer: KeyPair = LEDGER, **overrides: Any) -> Precommit:
    """A precommit whose commit_signature is genuine (or zeros, for a nil vote)."""
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "height": 1,
        "round": 2,
        "block_hash": proposed_block().hash,
        "voter": signer.public,
    }
    fields.update(overrides)
    if "commit_signature" not in fields:
        fields["commit_signature"] = (
            NO_SIGNATURE
            if fields["block_hash"] == NIL
            else codec.sign_commit(
                fields["round"], fields["block_hash"], fields["chain_id"], signer
            )
        )
    return codec.sign(Precommit(**fields), signer)


def prevote_nil(**overrides: Any) -> Prevote:
    return prevote(block_hash=NIL, **overrides)


def precommit_nil(**overrides: Any) -> Precommit:
    return precommit(block_hash=NIL, **overrides)


def sync_request(**overrides: Any) -> SyncRequest:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "from_height": 2,
        "to_height": 9,
        "reply_to": REPLY_TO,
    }
    fields.update(overrides)
    return SyncRequest(**fields)


def device_approval(signer: KeyPair = OPERATOR, **overrides: Any) -> DeviceApproval:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "operator": signer.public,
        "device": DEVICE.public,
        "approve": True,
        "timestamp_ms": NOW_MS,
    }
    fields.update(overrides)
    return codec.sign(DeviceApproval(**fields), signer)


def all_messages() -> list[Any]:
    """One valid message of every kind, in kind-tag order."""
    return [
        transaction(),
        submission(),
        work_batch(),
        verdict(),
        block_header(),
        block(),
        device_hello(),
        heartbeat(),
        device_status(),
        receipts(),
        proposal(),
        prevote(),
        precommit(),
        sync_request(),
        assignment(),
        device_approval(),
        fraud_report(),
    ]


def variant_messages() -> dict[str, Any]:
    """Further valid messages whose kind already has a sample: the nil votes."""
    return {"Prevote-nil": prevote_nil(), "Precommit-nil": precommit_nil()}


SIGNED_BUILDERS = {
    "transaction": transaction,
    "assignment": assignment,
    "verdict": verdict,
    "device_hello": device_hello,
    "heartbeat": heartbeat,
    "device_status": device_status,
    "receipts": receipts,
    "proposal": proposal,
    "prevote": prevote,
    "prevote_nil": prevote_nil,
    "precommit": precommit,
    "precommit_nil": precommit_nil,
    "device_approval": device_approval,
}


# --- hand-made CBOR, for inputs the canonical encoder refuses to produce ----------------


def head(major: int, value: int, width: int | None = None) -> bytes:
    """A CBOR head; ``width`` (0, 1, 2, 4 or 8 argument bytes) forces a non-shortest form."""
    if width is None:
        width = 0 if value < 24 else 1 if value < 2**8 else 2 if value < 2**16 else 4
        if value >= 2**32:
            width = 8
    if width == 0:
        return bytes([major << 5 | value])
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | info]) + value.to_bytes(width, "big")


def raw_array(items: list[bytes], width: int | None = None) -> bytes:
    """An array of already-encoded items."""
    return head(4, len(items), width) + b"".join(items)


def wire_items(message: Any) -> list[bytes]:
    """The encoded top-level items of a message's wire array, one bytes per field."""
    return [cbor.encode(item) for item in message.to_wire()]


def with_field(message: Any, index: int, encoded: bytes) -> bytes:
    """The message's encoding with wire item ``index`` replaced by raw CBOR ``encoded``."""
    items = wire_items(message)
    items[index] = encoded
    return raw_array(items)


def replace(message: Any, **changes: Any) -> Any:
    return dataclasses.replace(message, **changes)
