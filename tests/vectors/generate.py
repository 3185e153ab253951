"""Write the protocol test vectors: keys.json, messages.json, merkle.json, invalid.json,
validation.json and assignment.json next to this file.

    python tests/vectors/generate.py

Deterministic: fixed seeds (``bytes(range(32))`` and SHA-256 of fixed labels), fixed
timestamps, and Ed25519 signatures are deterministic, so running it again rewrites the
same bytes.  The committed JSON files are the reference: tests/test_vectors.py checks the
code against them and never regenerates them.  Regenerate only on a deliberate protocol
change, and review the diff.

JSON conventions: byte strings are lowercase hex; integers are JSON numbers (some exceed
2^53, so parse them as unsigned 64-bit); a message's ``fields`` are its dataclass fields
in wire order, nested messages as objects, sequences as arrays.

Longer than 400 lines because every vector is built here, in the order PROTOCOL.md
presents them.
"""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from micromine.protocol import PROTOCOL_VERSION, auth, cbor, codec, crypto
from micromine.protocol.assignment import (
    ASSIGNMENT_DOMAIN,
    ENTITLED_PER_K,
    compute_assignment_score,
    compute_batch_root,
    compute_entitled,
    is_registry_height_in_window,
    rank_devices,
)
from micromine.protocol.block import (
    Block,
    BlockHeader,
    CommitSignature,
    FraudProof,
    FraudReport,
    Reward,
    compute_body_hash,
    compute_commit_digest,
    compute_tx_root,
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
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.errors import DecodeFailure
from micromine.protocol.kinds import Kind, Reason, ReceiptStatus
from micromine.protocol.limits import (
    MAX_BLOCK_APPROVALS,
    MAX_BLOCK_FRAUDS,
    MAX_BLOCK_REGISTRATIONS,
    MAX_TX_BYTES,
)
from micromine.protocol.merkle import leaf_hash, merkle_root
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

HERE = Path(__file__).resolve().parent
CHAIN = "devnet"
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in ms

# --- keys ---------------------------------------------------------------------------------


def labelled_seed(label: str) -> bytes:
    return hashlib.sha256(b"micromine/vectors/" + label.encode()).digest()


SEEDS: dict[str, bytes] = {
    "device": bytes(range(32)),
    "device-2": labelled_seed("device-2"),
    "device-3": labelled_seed("device-3"),
    "ledger": labelled_seed("ledger"),
    "alice": labelled_seed("alice"),
    "bob": labelled_seed("bob"),
    "operator": labelled_seed("operator"),
    "rfc8032-test-1": bytes.fromhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
    ),
}
KEYS = {name: KeyPair(seed) for name, seed in SEEDS.items()}
DEVICE, DEVICE_2, DEVICE_3 = KEYS["device"], KEYS["device-2"], KEYS["device-3"]
LEDGER = KEYS["ledger"]
REGISTRY_HEIGHT = 0  # the batch is ranked against the genesis registry
ALICE, BOB = KEYS["alice"], KEYS["bob"]
OPERATOR = KEYS["operator"]


def keys_json() -> dict[str, Any]:
    digest = sha256(b"micromine")
    examples = []
    for name, kind, chain in [
        ("device", Kind.VERDICT, CHAIN),
        ("alice", Kind.TRANSACTION, CHAIN),
        ("ledger", Kind.COMMIT, "a-32-character-chain-id-00000000"),
    ]:
        key = KEYS[name]
        examples.append(
            {
                "key": name,
                "seed": key.seed.hex(),
                "public": key.public.hex(),
                "kind": int(kind),
                "kind_name": kind.name,
                "chain_id": chain,
                "digest": digest.hex(),
                "signing_bytes": crypto.signing_bytes(kind, chain, digest).hex(),
                "signature": key.sign(kind, chain, digest).hex(),
            }
        )
    return {
        "description": "Ed25519 keys from 32-byte seeds (RFC 8032), and signatures over "
        "signing_bytes = 'micromine' 0x00 | version | kind | len(chain_id) | chain_id | digest",
        "protocol_version": PROTOCOL_VERSION,
        "keys": [
            {"name": name, "seed": key.seed.hex(), "public": key.public.hex()}
            for name, key in KEYS.items()
        ],
        "signatures": examples,
    }


# --- messages -----------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """A message as JSON; an optional field left at its default None is omitted (as it
    is on the wire: a receipt without its detail)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.init and not (f.default is None and getattr(value, f.name) is None)
        }
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, bool | int | str):
        return value
    raise TypeError(f"cannot render {value!r}")


def transactions() -> tuple[Transaction, Transaction, Transaction]:
    basic = Transaction(CHAIN, ALICE.public, BOB.public, 1000, 10, 0, T0 + 60_000, "coffee")
    # Head-size boundaries: 23/24 (1 byte), 255/256, 65535/65536, 2^32, 2^53, 2^63-1;
    # a 64-byte memo of 1-, 2-, 3- and 4-byte UTF-8 characters.
    memo = "a\u00e9\u20ac\U0001f600" * 6 + "z" * 4
    assert len(memo.encode()) == 64
    boundaries = Transaction(CHAIN, BOB.public, ALICE.public, 2**63 - 1, 65536, 2**32, 2**53, memo)
    expired = Transaction(CHAIN, ALICE.public, BOB.public, 24, 255, 1, T0 - 1, "")
    return (
        codec.sign(basic, ALICE),
        codec.sign(boundaries, BOB),
        codec.sign(expired, ALICE),
    )


def build_messages() -> list[tuple[str, Any]]:
    tx, tx_boundaries, tx_expired = transactions()
    submission = Submission(CHAIN, bytes(range(16)), (codec.encode(tx), b"\xff not a transaction"))
    batch = work_batch()
    judgements = (Judgement.of(tx, int(Reason.OK)), Judgement.of(tx_expired, int(Reason.EXPIRED)))
    verdict = codec.sign(Verdict(CHAIN, DEVICE.public, batch.assignment, judgements), DEVICE)
    verdict_2 = codec.sign(Verdict(CHAIN, DEVICE_2.public, batch.assignment, judgements), DEVICE_2)
    rewards = (Reward(DEVICE.public, 25), Reward(DEVICE_2.public, 25))
    block_txs = (tx,)
    block_verdicts = (verdict, verdict_2)
    # The block registers a third device (the first two are in the genesis registry).
    registration = codec.sign(
        DeviceHello(CHAIN, DEVICE_3.public, "micromine-c/0.1", 32, T0 + 500), DEVICE_3
    )
    registrations = (registration,)
    # An operator approves it in the same block (as "approved" enrollment requires).
    approvals = (
        codec.sign(
            DeviceApproval(CHAIN, OPERATOR.public, DEVICE_3.public, True, T0 + 400), OPERATOR
        ),
    )
    frauds = (fraud_proof(),)
    header = BlockHeader(
        CHAIN,
        1,
        bytes(32),
        compute_tx_root(block_txs),
        compute_body_hash(
            block_verdicts, rewards, registrations, approvals=approvals, frauds=frauds
        ),
        sha256(b"micromine/vectors/state"),
        T0 + 1000,
        LEDGER.public,
    )
    # Decided in round 1, as the consensus vectors below precommit it.
    certificate = (
        CommitSignature(LEDGER.public, codec.sign_commit(1, header.hash, CHAIN, LEDGER)),
    )
    block = Block(
        header, block_txs, block_verdicts, rewards, 1, certificate, registrations, approvals, frauds
    )
    hello = codec.sign(DeviceHello(CHAIN, DEVICE.public, "micromine-c/0.1", 64, T0), DEVICE)
    heartbeat = codec.sign(Heartbeat(CHAIN, DEVICE.public, 1, T0 + 2000, 0, 2), DEVICE)
    online = codec.sign(DeviceStatus(CHAIN, DEVICE.public, True, T0), DEVICE)
    offline = codec.sign(DeviceStatus(CHAIN, DEVICE.public, False, T0), DEVICE)
    receipts = codec.sign(
        Receipts(
            CHAIN,
            LEDGER.public,
            bytes(range(16)),
            T0 + 10,
            (
                Receipt(tx.id, int(ReceiptStatus.PENDING), 0),
                Receipt(sha256(submission.items[1]), int(ReceiptStatus.REJECTED), 1),
                Receipt(tx.id, int(ReceiptStatus.COMMITTED), 1),
            ),
        ),
        LEDGER,
    )
    # A receipt's detail: the committed height the sender's state was read at, and the
    # nonce the node needs next from it (HELD, and state-dependent rejections).
    detailed = codec.sign(
        Receipts(
            CHAIN,
            LEDGER.public,
            bytes(range(16)),
            T0 + 20,
            (
                Receipt(tx.id, int(ReceiptStatus.HELD), int(Reason.NONCE_GAP), 7, 0),
                Receipt(tx_expired.id, int(ReceiptStatus.HELD), int(Reason.CATCHING_UP), 5, 0),
                Receipt(sha256(b"used"), int(ReceiptStatus.REJECTED), int(Reason.BAD_NONCE), 9, 2),
                Receipt(tx.id, int(ReceiptStatus.REJECTED), int(Reason.NO_QUORUM)),
            ),
        ),
        LEDGER,
    )
    return [
        ("transaction", tx),
        ("transaction-boundaries", tx_boundaries),
        ("transaction-expired", tx_expired),
        ("submission", submission),
        ("assignment", batch.assignment),
        ("work-batch", batch),
        ("verdict", verdict),
        ("block-header", header),
        ("block", block),
        ("device-hello", hello),
        ("heartbeat", heartbeat),
        ("device-status-online", online),
        ("device-status-offline", offline),
        ("receipts", receipts),
        ("receipts-detailed", detailed),
        *consensus_messages(block),
        ("fraud-report", FraudReport(CHAIN, frauds[0])),
    ]


def fraud_proof() -> FraudProof:
    """The block bans device-2: it judged "valid" a transfer out of alice's account that
    bob signed (BAD_SIGNATURE), in a batch of its own (seq 43)."""
    base = Transaction(CHAIN, ALICE.public, BOB.public, 500, 10, 1, T0 + 60_000, "stolen")
    forged = dataclasses.replace(base, signature=BOB.sign(Kind.TRANSACTION, CHAIN, base.id))
    root = compute_batch_root((forged,))
    assignment = codec.sign(
        Assignment(CHAIN, LEDGER.public, 43, REGISTRY_HEIGHT, T0 + 3000, root), LEDGER
    )
    lie = (Judgement.of(forged, int(Reason.OK)),)
    return FraudProof(
        codec.sign(Verdict(CHAIN, DEVICE_2.public, assignment, lie), DEVICE_2), forged
    )


def work_batch() -> WorkBatch:
    tx, _, tx_expired = transactions()
    txs = (tx, tx_expired)
    root = compute_batch_root(txs)
    unsigned = Assignment(CHAIN, LEDGER.public, 42, REGISTRY_HEIGHT, T0 + 3000, root)
    return WorkBatch(codec.sign(unsigned, LEDGER), txs)


def consensus_messages(block: Block) -> list[tuple[str, Any]]:
    """Messages of height 1, all signed by the ledger key: a round-1 proposal and one
    with a pol_round, votes for the block and nil votes, and a sync request."""
    proposed = dataclasses.replace(block, commit_round=0, certificate=())
    block_hash = proposed.hash
    commit = codec.sign_commit(1, block_hash, CHAIN, LEDGER)
    assert commit == block.certificate[0].signature  # the round-1 certificate is made of these

    def signed(message: Any) -> Any:
        return codec.sign(message, LEDGER)

    return [
        ("proposal", signed(Proposal(CHAIN, 1, 1, 0, proposed, LEDGER.public))),
        ("proposal-pol-round", signed(Proposal(CHAIN, 1, 3, 2, proposed, LEDGER.public))),
        ("prevote", signed(Prevote(CHAIN, 1, 1, block_hash, LEDGER.public))),
        ("prevote-nil", signed(Prevote(CHAIN, 1, 2, NIL, LEDGER.public))),
        ("precommit", signed(Precommit(CHAIN, 1, 1, block_hash, LEDGER.public, commit))),
        ("precommit-nil", signed(Precommit(CHAIN, 1, 2, NIL, LEDGER.public, NO_SIGNATURE))),
        ("sync-request", SyncRequest(CHAIN, 1, MAX_SYNC_BLOCKS, bytes(range(16, 32)))),
        ("device-approval", codec.sign(
            DeviceApproval(CHAIN, OPERATOR.public, DEVICE.public, True, 1_700_000_000_000),
            OPERATOR,
        )),
    ]  # fmt: skip


SIGNER_FIELDS = {
    Transaction: "sender",
    Assignment: "issuer",
    Verdict: "device",
    DeviceHello: "device",
    Heartbeat: "device",
    DeviceStatus: "device",
    Receipts: "issuer",
    Proposal: "proposer",
    Prevote: "voter",
    Precommit: "voter",
    DeviceApproval: "operator",
}


def message_vector(name: str, message: Any) -> dict[str, Any]:
    vector: dict[str, Any] = {
        "name": name,
        "kind": type(message).__name__,
        "tag": int(message.KIND),
        "fields": to_json(message),
        "encoding": codec.encode(message).hex(),
    }
    if type(message) in SIGNER_FIELDS:
        vector["id"] = message.id.hex()
        vector["unsigned_encoding"] = cbor.encode(message.unsigned_wire()).hex()
        vector["signer_field"] = SIGNER_FIELDS[type(message)]
        vector["signing_bytes"] = crypto.signing_bytes(
            message.KIND, message.chain_id, message.id
        ).hex()
        vector["signature"] = message.signature.hex()
    if isinstance(message, BlockHeader | Block):
        vector["hash"] = message.hash.hex()
    if isinstance(message, Block) and message.certificate:
        vector.update(commit_vector(message.header.chain_id, message.commit_round, message.hash))
        # One entry per certificate signature: all sign the same bytes.
        vector["commit_signing_bytes"] = [vector["commit_signing_bytes"]] * len(message.certificate)
    if isinstance(message, Proposal):
        vector["block_hash"] = message.block.hash.hex()
    if isinstance(message, Precommit) and message.block_hash != NIL:
        vector.update(commit_vector(message.chain_id, message.round, message.block_hash))
    return vector


def commit_vector(chain_id: str, round: int, block_hash: bytes) -> dict[str, str]:
    """What a COMMIT signature covers: the payload [round, block_hash], its SHA-256
    digest, and the signing bytes around that digest."""
    digest = compute_commit_digest(round, block_hash)
    assert digest == sha256(cbor.encode([round, block_hash]))
    return {
        "commit_payload": cbor.encode([round, block_hash]).hex(),
        "commit_digest": digest.hex(),
        "commit_signing_bytes": crypto.signing_bytes(Kind.COMMIT, chain_id, digest).hex(),
    }


def messages_json() -> dict[str, Any]:
    return {
        "description": "One or more valid messages of every kind: fields, canonical "
        "encoding, id (SHA-256 of unsigned_encoding), signing_bytes and signature",
        "chain_id": CHAIN,
        "vectors": [message_vector(name, m) for name, m in build_messages()],
    }


# --- Merkle -------------------------------------------------------------------------------


def merkle_json() -> dict[str, Any]:
    leaf_sets: list[list[bytes]] = [[sha256(bytes([i])) for i in range(n)] for n in
                                    (0, 1, 2, 3, 4, 5, 7, 8, 9)]  # fmt: skip
    leaf_sets.append([b"", b"\x00", b"a"])
    return {
        "description": "RFC 6962 roots: leaf = SHA-256(0x00 | data), node = SHA-256(0x01 | "
        "left | right), left subtree = largest power of two < n leaves, root of [] = SHA-256('')",
        "vectors": [
            {
                "leaves": [leaf.hex() for leaf in leaves],
                "leaf_hashes": [leaf_hash(leaf).hex() for leaf in leaves],
                "root": merkle_root(leaves).hex(),
            }
            for leaves in leaf_sets
        ],
    }


# --- invalid inputs -----------------------------------------------------------------------


def _head(major: int, value: int, width: int | None = None) -> bytes:
    if width is None:
        width = 0 if value < 24 else 1 if value < 256 else 2 if value < 65536 else 4
        if value >= 2**32:
            width = 8
    if width == 0:
        return bytes([major << 5 | value])
    return bytes([major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[width]]) + value.to_bytes(width, "big")


def _array(items: list[bytes], width: int | None = None) -> bytes:
    return _head(4, len(items), width) + b"".join(items)


def _text(value: str, width: int | None = None) -> bytes:
    return _head(3, len(value.encode()), width) + value.encode()


def _bytes(value: bytes, width: int | None = None) -> bytes:
    return _head(2, len(value), width) + value


def invalid_json() -> dict[str, Any]:
    tx = transactions()[0]
    items = [cbor.encode(item) for item in tx.to_wire()]
    # Transaction wire positions
    chain, sender, amount, fee, nonce, expiry, memo, signature = 1, 2, 4, 5, 6, 7, 8, 9

    def tx_with(index: int, encoded: bytes) -> bytes:
        changed = list(items)
        changed[index] = encoded
        return _array(changed)

    good = codec.encode(tx)
    hb = codec.sign(Heartbeat(CHAIN, DEVICE.public, 1, T0, 0, 2), DEVICE)
    assignment = Assignment(CHAIN, LEDGER.public, 1, 5, T0, compute_batch_root((tx,)))
    batch = WorkBatch(codec.sign(assignment, LEDGER), (tx,))
    batch_items = [cbor.encode(item) for item in batch.to_wire()]

    def batch_with(index: int, encoded: bytes) -> bytes:
        changed = list(batch_items)
        changed[index] = encoded
        return _array(changed)

    def batch_with_txs(txs: list[bytes]) -> bytes:
        return batch_with(2, _array(txs))

    wide_nonce_tx = Transaction(CHAIN, ALICE.public, BOB.public, 1000, 10, 1, T0, "")
    wide_items = [cbor.encode(item) for item in codec.sign(wide_nonce_tx, ALICE).to_wire()]
    wide_items[nonce] = b"\x18\x01"

    fail = DecodeFailure
    tx_t, batch_t, none = "Transaction", "WorkBatch", None
    cases: list[tuple[str, bytes, str | None, DecodeFailure]] = [
        ("513 bytes, a transaction expected", bytes(MAX_TX_BYTES + 1), tx_t, fail.TOO_LARGE),
        ("empty input", b"", none, fail.NOT_CBOR),
        ("lone break byte", b"\xff", none, fail.NOT_CBOR),
        ("reserved additional information 28", b"\x1c", none, fail.NOT_CBOR),
        ("transaction missing its last byte", good[:-1], tx_t, fail.NOT_CBOR),
        ("array head promising more items than present", b"\x8a\x01", none, fail.NOT_CBOR),
        ("invalid UTF-8 in the memo", tx_with(memo, b"\x61\xff"), tx_t, fail.NOT_CBOR),
        ("8 nested arrays", b"\x81" * 8 + b"\x00", none, fail.TOO_DEEP),
        ("indefinite-length transaction array", b"\x9f" + b"".join(items) + b"\xff", tx_t,
         fail.INDEFINITE_LENGTH),
        ("indefinite-length text memo", tx_with(memo, b"\x7f\x61a\xff"), tx_t,
         fail.INDEFINITE_LENGTH),
        ("indefinite-length byte string sender",
         tx_with(sender, b"\x5f" + _bytes(tx.sender) + b"\xff"), tx_t, fail.INDEFINITE_LENGTH),
        ("map with a duplicate key as the memo", tx_with(memo, b"\xa2\x01\x00\x01\x00"), tx_t,
         fail.DUPLICATE_KEY),
        ("one byte after a valid transaction", good + b"\x00", tx_t, fail.TRAILING_BYTES),
        ("nonce 1 encoded as 0x18 0x01", _array(wide_items), tx_t, fail.NOT_CANONICAL),
        ("amount 1000 in a 4-byte head", tx_with(amount, _head(0, 1000, 4)), tx_t,
         fail.NOT_CANONICAL),
        ("kind tag 1 encoded as 0x18 0x01", tx_with(0, b"\x18\x01"), tx_t, fail.NOT_CANONICAL),
        ("chain id length in a 1-byte head", tx_with(chain, _text(CHAIN, 1)), tx_t,
         fail.NOT_CANONICAL),
        ("sender length in a 2-byte head", tx_with(sender, _bytes(tx.sender, 2)), tx_t,
         fail.NOT_CANONICAL),
        ("array length in a 1-byte head", _array(items, 1), tx_t, fail.NOT_CANONICAL),
        ("kind tag 0", _array([b"\x00"]), none, fail.UNKNOWN_KIND),
        ("kind tag 11 (COMMIT is a signature kind only)", _array([b"\x0b"]), none,
         fail.UNKNOWN_KIND),
        ("kind tag 99", _array([b"\x18\x63"]), tx_t, fail.UNKNOWN_KIND),
        ("a heartbeat where a transaction is expected", codec.encode(hb), tx_t, fail.WRONG_KIND),
        ("a heartbeat inside a work batch", batch_with_txs([codec.encode(hb)]), batch_t,
         fail.WRONG_KIND),
        ("bare integer", b"\x01", none, fail.BAD_SHAPE),
        ("empty array", b"\x80", none, fail.BAD_SHAPE),
        ("map", b"\xa1\x01\x02", none, fail.BAD_SHAPE),
        ("text kind tag", _array([_text("tx")]), none, fail.BAD_SHAPE),
        ("transaction without its signature", _array(items[:-1]), tx_t, fail.BAD_SHAPE),
        ("transaction with an extra field", _array([*items, b"\x00"]), tx_t, fail.BAD_SHAPE),
        ("work batch txs field is an integer", batch_with(2, b"\x01"), batch_t,
         fail.BAD_SHAPE),
        ("half float 1.0 as the amount", tx_with(amount, b"\xf9\x3c\x00"), tx_t, fail.BAD_TYPE),
        ("true as the amount", tx_with(amount, b"\xf5"), tx_t, fail.BAD_TYPE),
        ("null as the fee", tx_with(fee, b"\xf6"), tx_t, fail.BAD_TYPE),
        ("empty map as the amount", tx_with(amount, b"\xa0"), tx_t, fail.BAD_TYPE),
        ("tag 1 around the expiry", tx_with(expiry, b"\xc1" + _head(0, tx.expiry_ms)), tx_t,
         fail.BAD_TYPE),
        ("bignum tag 2 as the amount", tx_with(amount, b"\xc2" + _bytes(b"\x03\xe8")), tx_t,
         fail.BAD_TYPE),
        ("byte string as the memo", tx_with(memo, _bytes(b"coffee")), tx_t, fail.BAD_TYPE),
        ("text as the sender", tx_with(sender, _text("k" * 32)), tx_t, fail.BAD_TYPE),
        ("amount 2^63", tx_with(amount, _head(0, 2**63)), tx_t, fail.OUT_OF_RANGE),
        ("negative amount -1", tx_with(amount, b"\x20"), tx_t, fail.OUT_OF_RANGE),
        ("expiry 2^53 + 1", tx_with(expiry, _head(0, 2**53 + 1)), tx_t, fail.OUT_OF_RANGE),
        ("31-byte sender", tx_with(sender, _bytes(bytes(31))), tx_t, fail.OUT_OF_RANGE),
        ("63-byte signature", tx_with(signature, _bytes(bytes(63))), tx_t, fail.OUT_OF_RANGE),
        ("65-byte memo", tx_with(memo, _text("m" * 65)), tx_t, fail.OUT_OF_RANGE),
        ("upper-case chain id", tx_with(chain, _text("Devnet")), tx_t, fail.OUT_OF_RANGE),
        ("empty chain id", tx_with(chain, _text("")), tx_t, fail.OUT_OF_RANGE),
        ("33-character chain id", tx_with(chain, _text("a" * 33)), tx_t, fail.OUT_OF_RANGE),
        ("work batch with no transactions", batch_with_txs([]), batch_t, fail.OUT_OF_RANGE),
        *consensus_invalid_cases(),
        *registry_invalid_cases(),
    ]  # fmt: skip
    return {
        "description": "Inputs that each break exactly one rule; decode(hex, expected) must "
        "fail with `failure` (expected null: decode without an expected kind)",
        "vectors": [
            {
                "name": name,
                "hex": data.hex(),
                "expected": expected,
                "failure": code.name,
                "code": int(code),
            }
            for name, data, expected, code in cases
        ],
    }


def _with_item(message: Any, index: int, encoded: bytes) -> bytes:
    """The message's encoding with wire item ``index`` replaced by raw CBOR."""
    items = [cbor.encode(item) for item in message.to_wire()]
    items[index] = encoded
    return _array(items)


def consensus_invalid_cases() -> list[tuple[str, bytes, str | None, DecodeFailure]]:
    by_name = dict(build_messages())
    proposal, prevote = by_name["proposal-pol-round"], by_name["prevote"]
    precommit, nil_precommit = by_name["precommit"], by_name["precommit-nil"]
    sync, block = by_name["sync-request"], by_name["block"]
    short_sync = SyncRequest(CHAIN, 1, 3, sync.reply_to)  # from 0 to 3: one rule broken
    uncertified = dataclasses.replace(block, commit_round=0, certificate=())
    # Wire positions: Proposal round 3, pol_round 4, block 5; votes round 3; Precommit
    # commit_signature 6; SyncRequest from_height 2, to_height 3; Block commit_round 7,
    # certificate 8.  Each case breaks one rule only, so there is no "proposal round 0":
    # no pol_round is below round 0.
    fail = DecodeFailure
    p_t, v_t, c_t, s_t, b_t = "Proposal", "Prevote", "Precommit", "SyncRequest", "Block"
    precommit_items = [cbor.encode(item) for item in precommit.to_wire()]
    return [
        ("kind tag 19", _array([_head(0, 19)]), None, fail.UNKNOWN_KIND),
        ("a prevote where a precommit is expected", codec.encode(prevote), c_t,
         fail.WRONG_KIND),
        ("precommit without its commit signature",
         _array(precommit_items[:6] + precommit_items[7:]), c_t, fail.BAD_SHAPE),
        ("proposal round 2^31 + 1", _with_item(proposal, 3, _head(0, MAX_ROUND + 1)), p_t,
         fail.OUT_OF_RANGE),
        ("proposal pol_round equal to its round", _with_item(proposal, 4, _head(0, 3)), p_t,
         fail.OUT_OF_RANGE),
        ("proposal pol_round above its round", _with_item(proposal, 4, _head(0, 4)), p_t,
         fail.OUT_OF_RANGE),
        ("proposal of a block with a certificate",
         _with_item(proposal, 5, cbor.encode(block.to_wire())), p_t, fail.OUT_OF_RANGE),
        ("prevote round 0", _with_item(prevote, 3, _head(0, 0)), v_t, fail.OUT_OF_RANGE),
        ("precommit round 0", _with_item(precommit, 3, _head(0, 0)), c_t, fail.OUT_OF_RANGE),
        ("nil precommit with a commit signature",
         _with_item(nil_precommit, 6, _bytes(precommit.commit_signature)), c_t,
         fail.OUT_OF_RANGE),
        ("block certificate with commit_round 0", _with_item(block, 8, _head(0, 0)), b_t,
         fail.OUT_OF_RANGE),
        ("block commit_round 2^31 + 1", _with_item(block, 8, _head(0, MAX_ROUND + 1)), b_t,
         fail.OUT_OF_RANGE),
        ("uncertified block with commit_round 1", _with_item(uncertified, 8, _head(0, 1)),
         b_t, fail.OUT_OF_RANGE),
        ("block commit_round as text", _with_item(block, 8, _text("1")), b_t, fail.BAD_TYPE),
        ("sync request from height 0", _with_item(short_sync, 2, _head(0, 0)), s_t,
         fail.OUT_OF_RANGE),
        ("sync request to_height below from_height",
         _with_item(sync, 3, _head(0, 0)), s_t,
         fail.OUT_OF_RANGE),
        ("sync request for 65 blocks", _with_item(sync, 3, _head(0, MAX_SYNC_BLOCKS + 1)),
         s_t, fail.OUT_OF_RANGE),
    ]  # fmt: skip


def registry_invalid_cases() -> list[tuple[str, bytes, str | None, DecodeFailure]]:
    """The fields of device assignment: the Assignment (alone, in a WorkBatch, in a
    Verdict), judgements, and a block's registrations."""
    by_name = dict(build_messages())
    assignment, batch = by_name["assignment"], by_name["work-batch"]
    verdict, block = by_name["verdict"], by_name["block"]
    hello, heartbeat = by_name["device-hello"], by_name["heartbeat"]
    assignment_items = [cbor.encode(item) for item in assignment.to_wire()]
    other_chain = codec.sign(dataclasses.replace(assignment, chain_id="othernet"), LEDGER)
    judgement = [cbor.encode(item) for item in verdict.judgements[0].to_wire()]
    hello_bytes = codec.encode(hello)
    fraud = cbor.encode(block.frauds[0].to_wire())
    fraud_items = [cbor.encode(item) for item in block.frauds[0].to_wire()]
    approval = cbor.encode(block.approvals[0].to_wire())
    fail = DecodeFailure
    # Wire positions: Assignment registry_height 4, tx_root 6; WorkBatch assignment 1;
    # Verdict assignment 3, judgements 4; Block registrations 5, approvals 6, frauds 7.
    return [
        ("assignment without its tx_root",
         _array(assignment_items[:6] + assignment_items[7:]), "Assignment", fail.BAD_SHAPE),
        ("assignment registry_height 2^63", _with_item(assignment, 4, _head(0, 2**63)),
         "Assignment", fail.OUT_OF_RANGE),
        ("assignment tx_root of 31 bytes", _with_item(assignment, 6, _bytes(bytes(31))),
         "Assignment", fail.OUT_OF_RANGE),
        ("a transaction where a work batch's assignment is",
         _with_item(batch, 1, codec.encode(batch.txs[0])), "WorkBatch", fail.WRONG_KIND),
        ("text as a verdict's assignment", _with_item(verdict, 3, _text("0")), "Verdict",
         fail.BAD_SHAPE),
        ("verdict with an assignment of another chain",
         _with_item(verdict, 3, codec.encode(other_chain)), "Verdict", fail.OUT_OF_RANGE),
        ("judgement without its signature_hash",
         _with_item(verdict, 4, _array([_array([judgement[0], judgement[2]])])), "Verdict",
         fail.BAD_SHAPE),
        ("judgement signature_hash of 33 bytes",
         _with_item(verdict, 4, _array([_array([judgement[0], _bytes(bytes(33)),
                                                judgement[2]])])),
         "Verdict", fail.OUT_OF_RANGE),
        (f"block with {MAX_BLOCK_REGISTRATIONS + 1} registrations",
         _with_item(block, 5, _array([hello_bytes] * (MAX_BLOCK_REGISTRATIONS + 1))),
         "Block", fail.OUT_OF_RANGE),
        ("a heartbeat among a block's registrations",
         _with_item(block, 5, _array([codec.encode(heartbeat)])), "Block", fail.WRONG_KIND),
        (f"block with {MAX_BLOCK_APPROVALS + 1} approvals",
         _with_item(block, 6, _array([approval] * (MAX_BLOCK_APPROVALS + 1))), "Block",
         fail.OUT_OF_RANGE),
        ("a heartbeat among a block's approvals",
         _with_item(block, 6, _array([codec.encode(heartbeat)])), "Block", fail.WRONG_KIND),
        (f"block with {MAX_BLOCK_FRAUDS + 1} fraud proofs",
         _with_item(block, 7, _array([fraud] * (MAX_BLOCK_FRAUDS + 1))), "Block",
         fail.OUT_OF_RANGE),
        ("fraud proof without its transaction",
         _with_item(block, 7, _array([_array([fraud_items[0]])])), "Block", fail.BAD_SHAPE),
        ("a heartbeat as a fraud proof's transaction",
         _with_item(block, 7, _array([_array([fraud_items[0], codec.encode(heartbeat)])])),
         "Block", fail.WRONG_KIND),
    ]  # fmt: skip


# --- device assignment --------------------------------------------------------------------


def assignment_json() -> dict[str, Any]:
    """The binding roots of the vectors' batch, rankings of a registry for two assignment
    ids, and the registry-height window."""
    batch = work_batch()
    other = dataclasses.replace(batch.assignment, seq=43)
    batch_ids = [batch.assignment.id, other.id]
    registry = sorted([DEVICE.public, DEVICE_2.public, DEVICE_3.public] + [
        KeyPair(labelled_seed(f"registered-{i}")).public for i in range(7)
    ])  # fmt: skip
    rankings = []
    for batch_id in batch_ids:
        ranked = rank_devices(batch_id, registry)
        rankings.append({
            "assignment_id": batch_id.hex(),
            "registry": [device.hex() for device in registry],
            "scores": {d.hex(): compute_assignment_score(batch_id, d).hex() for d in registry},
            "ranking": [device.hex() for device in ranked],
            "entitled": {
                str(k): [d.hex() for d in compute_entitled(batch_id, registry, k)]
                for k in (1, 2, 3, 5, 6)
            },
        })  # fmt: skip
    window = 64
    windows = [
        {"registry_height": r, "block_height": h, "window": window,
         "in_window": is_registry_height_in_window(r, h, window)}
        for r, h in ((0, 1), (0, 64), (0, 65), (100, 164), (99, 164), (164, 164), (165, 164))
    ]  # fmt: skip
    leaves = [tx.id + sha256(tx.signature) for tx in batch.txs]
    binding = {
        "txs": [codec.encode(tx).hex() for tx in batch.txs],
        "leaves": [leaf.hex() for leaf in leaves],
        "leaf_hashes": [leaf_hash(leaf).hex() for leaf in leaves],
        "tx_root": compute_batch_root(batch.txs).hex(),
    }
    assert binding["tx_root"] == batch.assignment.tx_root.hex() == merkle_root(leaves).hex()
    return {
        "description": "tx_root = Merkle root over leaves tx_id | SHA-256(tx signature), in "
        "batch order (a verdict's judgements give the same leaves); score = "
        "SHA-256('micromine-assign' | assignment_id | device); ranking = "
        "registry by ascending score (ties: lower key); entitled = the first "
        f"{ENTITLED_PER_K}k of the ranking; a verdict's registry_height r is usable in a "
        "block at height h when h - window <= r < h",
        "binding": binding,
        "domain": ASSIGNMENT_DOMAIN.hex(),
        "entitled_per_k": ENTITLED_PER_K,
        "rankings": rankings,
        "windows": windows,
    }


# --- stateless validation -----------------------------------------------------------------


def validation_json() -> dict[str, Any]:
    """Transactions with the Reason check_transaction gives, one per rule, in rule order."""
    now = T0

    def tx(signer: KeyPair = ALICE, **changes: Any) -> Transaction:
        base = Transaction(CHAIN, ALICE.public, BOB.public, 1000, 10, 7, now + 60_000, "v")
        changed = dataclasses.replace(base, **changes)
        return codec.sign(changed, signer) if changed.sender == signer.public else changed

    good = tx()
    cases = [
        ("valid", good, Reason.OK),
        ("valid, expiry equal to now", tx(expiry_ms=now), Reason.OK),
        ("another chain", tx(chain_id="othernet"), Reason.WRONG_CHAIN),
        ("amount 0", tx(amount=0), Reason.BAD_AMOUNT),
        ("amount above 10^15", tx(amount=10**15 + 1), Reason.BAD_AMOUNT),
        ("fee above 10^12", tx(fee=10**12 + 1), Reason.BAD_FEE),
        ("sender = recipient", tx(recipient=ALICE.public), Reason.SELF_TRANSFER),
        ("expired 1 ms ago", tx(expiry_ms=now - 1), Reason.EXPIRED),
        ("zero signature", dataclasses.replace(good, signature=bytes(64)), Reason.BAD_SIGNATURE),
        ("signed by the recipient", tx(BOB, sender=ALICE.public, signature=BOB.sign(
            Kind.TRANSACTION, CHAIN, good.id)), Reason.BAD_SIGNATURE),
        ("signed as another kind", dataclasses.replace(
            good, signature=ALICE.sign(Kind.VERDICT, CHAIN, good.id)), Reason.BAD_SIGNATURE),
        ("wrong chain and amount 0: the first rule wins", tx(chain_id="othernet", amount=0),
         Reason.WRONG_CHAIN),
        ("amount 0 and expired: the first rule wins", tx(amount=0, expiry_ms=0),
         Reason.BAD_AMOUNT),
        ("expired and unsigned: the first rule wins", dataclasses.replace(
            tx(expiry_ms=0), signature=bytes(64)), Reason.EXPIRED),
    ]  # fmt: skip
    return {
        "description": "check_transaction(tx, chain_id, now_ms, min_fee=0): the first rule "
        "broken, in the order chain, amount, fee, self transfer, expiry, signature",
        "chain_id": CHAIN,
        "now_ms": now,
        "min_fee": 0,
        "vectors": [
            {"name": name, "tx": codec.encode(t).hex(), "reason": reason.name, "code": int(reason)}
            for name, t, reason in cases
        ],
    }


def login_json() -> dict[str, Any]:
    """Broker login tokens (protocol/auth.py): the array, digest, signed bytes, password."""
    examples = []
    for name, client_id, timestamp in [
        ("device", "mmd" + DEVICE.public.hex()[:20], T0),
        ("ledger", "ledger-" + LEDGER.public.hex()[:16] + "-0a1b2c", T0 + 1),
        ("device", "", 0),  # the static (Mosquitto) password, epoch 0
    ]:
        key = KEYS[name]
        array = cbor.encode([int(Kind.LOGIN), CHAIN, key.public, client_id, timestamp])
        digest = auth.compute_login_digest(CHAIN, key.public, client_id, timestamp)
        token = auth.make_login_token(key, CHAIN, client_id, timestamp)
        examples.append(
            {
                "key": name,
                "chain_id": CHAIN,
                "username": key.public.hex(),
                "client_id": client_id,
                "timestamp_ms": timestamp,
                "signed_array": array.hex(),
                "digest": digest.hex(),
                "signing_bytes": crypto.signing_bytes(Kind.LOGIN, CHAIN, digest).hex(),
                "password": str(token),
            }
        )
    return {"kind": int(Kind.LOGIN), "window_ms": auth.LOGIN_WINDOW_MS, "examples": examples}


def write(name: str, content: dict[str, Any]) -> None:
    text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    (HERE / name).write_text(text, encoding="utf-8")
    print(f"wrote {HERE / name}")


def main() -> None:
    write("keys.json", keys_json())
    write("messages.json", messages_json())
    write("merkle.json", merkle_json())
    write("invalid.json", invalid_json())
    write("validation.json", validation_json())
    write("assignment.json", assignment_json())
    write("login.json", login_json())


if __name__ == "__main__":
    main()
