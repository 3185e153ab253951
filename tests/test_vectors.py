"""The committed test vectors in tests/vectors/*.json against the code, and docs/PROTOCOL.md
against protocol/limits.py.

These tests only read the JSON files; they never regenerate them (that would make them
pass by construction).  See tests/vectors/generate.py.

Longer than 400 lines because every vector file gets its checks here, side by side, so a
changed encoding shows in one place.
"""

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from micromine.protocol import assignment, cbor, codec, crypto, limits
from micromine.protocol import consensus as consensus_rules
from micromine.protocol.block import (
    Block,
    BlockHeader,
    compute_body_hash,
    compute_commit_digest,
    compute_tx_root,
)
from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal, SyncRequest
from micromine.protocol.crypto import KeyPair
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.kinds import Kind, Reason
from micromine.protocol.merkle import leaf_hash, merkle_root
from micromine.protocol.messages import Transaction, Verdict, WorkBatch
from micromine.protocol.validation import check_transaction

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
DOC = ROOT / "docs" / "PROTOCOL.md"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


KEYS = load("keys.json")
MESSAGES = load("messages.json")
MERKLE = load("merkle.json")
INVALID = load("invalid.json")
VALIDATION = load("validation.json")
ASSIGNMENT = load("assignment.json")


def from_json(cls: type[Any], value: Any) -> Any:
    """Rebuild a value of type ``cls`` from its JSON form (bytes as hex)."""
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.init]  # not memos (ids)
        # Optional fields (default None) may be left out, as on the wire.
        optional = {f.name for f in dataclasses.fields(cls) if f.default is None}
        present = [name for name in names if name in value]
        assert list(value) == present, f"{cls.__name__} fields out of order"
        assert set(names) - set(value) <= optional, f"{cls.__name__} fields missing"
        return cls(**{name: from_json(hints[name], value[name]) for name in present})
    if typing.get_origin(cls) in (typing.Union, types.UnionType):  # X | None
        (inner,) = [a for a in typing.get_args(cls) if a is not type(None)]
        return None if value is None else from_json(inner, value)
    if typing.get_origin(cls) is tuple:
        (element, _ellipsis) = typing.get_args(cls)
        return tuple(from_json(element, item) for item in value)
    if cls is bytes:
        assert value == value.lower()
        return bytes.fromhex(value)
    assert type(value) is cls, (cls, value)
    return value


# --- keys ---------------------------------------------------------------------------------


def test_rfc8032_key_is_present() -> None:
    by_name = {key["name"]: key for key in KEYS["keys"]}
    assert by_name["rfc8032-test-1"]["public"] == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert by_name["device"]["seed"] == bytes(range(32)).hex()
    assert KEYS["protocol_version"] == 1


@pytest.mark.parametrize("key", KEYS["keys"], ids=lambda k: k["name"])
def test_public_key_from_seed(key: dict[str, str]) -> None:
    assert KeyPair(bytes.fromhex(key["seed"])).public.hex() == key["public"]


@pytest.mark.parametrize("example", KEYS["signatures"], ids=lambda e: e["kind_name"])
def test_signature_examples(example: dict[str, Any]) -> None:
    key = KeyPair(bytes.fromhex(example["seed"]))
    digest = bytes.fromhex(example["digest"])
    kind = example["kind"]
    assert Kind(kind).name == example["kind_name"]
    signing = crypto.signing_bytes(kind, example["chain_id"], digest)
    assert signing.hex() == example["signing_bytes"]
    assert key.sign(kind, example["chain_id"], digest).hex() == example["signature"]
    assert crypto.verify(
        key.public, kind, example["chain_id"], digest, bytes.fromhex(example["signature"])
    )


# --- messages -----------------------------------------------------------------------------


def test_every_kind_has_a_vector() -> None:
    tags = {vector["tag"] for vector in MESSAGES["vectors"]}
    assert tags == set(codec.MESSAGE_TYPES)


@pytest.mark.parametrize("vector", MESSAGES["vectors"], ids=lambda v: v["name"])
def test_message_vector(vector: dict[str, Any]) -> None:
    cls = codec.MESSAGE_TYPES[vector["tag"]]
    assert cls.__name__ == vector["kind"]
    message = from_json(cls, vector["fields"])
    encoding = bytes.fromhex(vector["encoding"])
    # Re-encode, and decode the committed bytes.
    assert codec.encode(message) == encoding
    assert codec.decode(encoding) == message
    assert codec.decode(encoding, cls) == message
    if "signing_bytes" in vector:
        unsigned = bytes.fromhex(vector["unsigned_encoding"])
        assert cbor.encode(message.unsigned_wire()) == unsigned
        assert message.id.hex() == vector["id"] == crypto.sha256(unsigned).hex()
        signer = getattr(message, vector["signer_field"])
        assert signer == message.signer
        signing = crypto.signing_bytes(cls.KIND, message.chain_id, message.id)
        assert signing.hex() == vector["signing_bytes"]
        assert message.signature.hex() == vector["signature"]
        assert codec.is_signature_valid(message)
    else:
        assert not hasattr(message, "signature")
    if isinstance(message, BlockHeader | Block):
        assert message.hash.hex() == vector["hash"]
    if isinstance(message, Block):
        header = message.header
        assert header.tx_root == compute_tx_root(message.txs)
        assert header.body_hash == compute_body_hash(
            message.verdicts,
            message.rewards,
            message.registrations,
            approvals=message.approvals,
            frauds=message.frauds,
        )
        assert message.frauds  # the vectors' block bans a device
        for proof in message.frauds:
            # The lie: a valid-looking verdict, judging valid a transaction whose
            # signature is not its sender's (so check_transaction says BAD_SIGNATURE).
            assert codec.is_signature_valid(proof.verdict)
            assert codec.is_signature_valid(proof.verdict.assignment)
            assert (proof.tx.id, crypto.sha256(proof.tx.signature), 0) in {
                (j.tx_id, j.signature_hash, j.reason) for j in proof.verdict.judgements
            }
            assert not codec.is_signature_valid(proof.tx)
        for hello in message.registrations:
            assert codec.is_signature_valid(hello)
        assert message.commit_round >= 1  # the vectors' block is certified
        check_commit_vector(vector, message.commit_round, message.hash)
        assert len(vector["commit_signing_bytes"]) == len(message.certificate)
        for entry, signing_hex in zip(
            message.certificate, vector["commit_signing_bytes"], strict=True
        ):
            digest = compute_commit_digest(message.commit_round, message.hash)
            signing = crypto.signing_bytes(Kind.COMMIT, header.chain_id, digest)
            assert signing.hex() == signing_hex
            assert codec.is_commit_signature_valid(
                entry.signer, header.chain_id, message.commit_round, message.hash, entry.signature
            )
        for verdict in message.verdicts:
            assert codec.is_signature_valid(verdict)
        for tx in message.txs:
            assert codec.is_signature_valid(tx)
    if isinstance(message, Proposal):
        block = message.block
        assert block.certificate == () and block.commit_round == 0
        assert block.hash.hex() == vector["block_hash"]
        assert message.pol_round < message.round
        assert block.header.tx_root == compute_tx_root(block.txs)
        assert block.header.body_hash == compute_body_hash(
            block.verdicts,
            block.rewards,
            block.registrations,
            approvals=block.approvals,
            frauds=block.frauds,
        )
        assert all(codec.is_signature_valid(m) for m in (*block.txs, *block.verdicts))
    if isinstance(message, Precommit):
        if message.block_hash == NIL:
            assert message.commit_signature == bytes(64)
            assert "commit_signing_bytes" not in vector
        else:
            check_commit_vector(vector, message.round, message.block_hash)
            digest = compute_commit_digest(message.round, message.block_hash)
            signing = crypto.signing_bytes(Kind.COMMIT, message.chain_id, digest)
            assert signing.hex() == vector["commit_signing_bytes"]
            assert codec.is_commit_signature_valid(
                message.voter,
                message.chain_id,
                message.round,
                message.block_hash,
                message.commit_signature,
            )


def check_commit_vector(vector: dict[str, Any], round: int, block_hash: bytes) -> None:
    """A COMMIT signature covers SHA-256 of the canonical CBOR of [round, block_hash]."""
    payload = bytes.fromhex(vector["commit_payload"])
    assert payload == cbor.encode([round, block_hash])
    assert vector["commit_digest"] == crypto.sha256(payload).hex()
    assert compute_commit_digest(round, block_hash).hex() == vector["commit_digest"]


def _vectors_of(cls: type[Any]) -> dict[str, Any]:
    return {
        v["name"]: from_json(cls, v["fields"]) for v in MESSAGES["vectors"] if v["tag"] == cls.KIND
    }


def test_consensus_vectors_cover_nil_votes_and_pol_rounds() -> None:
    for cls in (Prevote, Precommit):
        hashes = [vote.block_hash for vote in _vectors_of(cls).values()]
        assert NIL in hashes, cls.__name__
        assert any(h != NIL for h in hashes), cls.__name__
    assert {p.pol_round == 0 for p in _vectors_of(Proposal).values()} == {True, False}
    assert _vectors_of(SyncRequest)


def test_consensus_vectors_are_one_height_of_one_chain() -> None:
    (block,) = _vectors_of(Block).values()
    proposals = _vectors_of(Proposal).values()
    assert all(p.block.hash == block.hash and p.height == block.height for p in proposals)
    for vote in (*_vectors_of(Prevote).values(), *_vectors_of(Precommit).values()):
        assert vote.block_hash in (block.hash, NIL)
        assert vote.height == block.height
    # A precommit's commit signature of the certificate's round is a certificate entry,
    # byte for byte.
    certificate = {(c.signer, c.signature) for c in block.certificate}
    for vote in _vectors_of(Precommit).values():
        if vote.block_hash != NIL:
            assert vote.round == block.commit_round
            assert (vote.voter, vote.commit_signature) in certificate


# --- Merkle -------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", MERKLE["vectors"], ids=lambda v: f"{len(v['leaves'])}-leaves")
def test_merkle_vector(vector: dict[str, Any]) -> None:
    leaves = [bytes.fromhex(leaf) for leaf in vector["leaves"]]
    assert [leaf_hash(leaf).hex() for leaf in leaves] == vector["leaf_hashes"]
    assert merkle_root(leaves).hex() == vector["root"]


def test_merkle_vectors_include_the_edge_cases() -> None:
    counts = {len(v["leaves"]) for v in MERKLE["vectors"]}
    assert {0, 1, 2, 3, 5, 7} <= counts


# --- invalid inputs -----------------------------------------------------------------------

BY_NAME = {cls.__name__: cls for cls in codec.MESSAGE_TYPES.values()}


@pytest.mark.parametrize("vector", INVALID["vectors"], ids=lambda v: v["name"])
def test_invalid_vector(vector: dict[str, Any]) -> None:
    code = DecodeFailure[vector["failure"]]
    assert int(code) == vector["code"]
    expected = BY_NAME[vector["expected"]] if vector["expected"] is not None else None
    with pytest.raises(DecodeError) as info:
        codec.decode(bytes.fromhex(vector["hex"]), expected)
    assert info.value.code is code


def test_invalid_vectors_cover_every_failure_code() -> None:
    assert {v["failure"] for v in INVALID["vectors"]} == {code.name for code in DecodeFailure}


def test_invalid_vectors_cover_the_consensus_rules() -> None:
    expected = {v["expected"] for v in INVALID["vectors"]}
    assert {"Proposal", "Prevote", "Precommit", "SyncRequest"} <= expected
    names = " | ".join(v["name"] for v in INVALID["vectors"])
    for rule in ("round 0", "pol_round equal to its round", "block with a certificate",
                 "nil precommit with a commit signature", "from height 0",
                 "to_height below from_height", "65 blocks",
                 "certificate with commit_round 0", "uncertified block with commit_round 1",
                 "commit_round 2^31 + 1"):  # fmt: skip
        assert rule in names, rule


# --- device assignment --------------------------------------------------------------------


def test_binding_vector() -> None:
    """tx_root over tx_id | SHA-256(signature), from the transactions and from the
    judgements of the vectors' verdict (which judges the vectors' batch)."""
    binding = ASSIGNMENT["binding"]
    txs = [codec.decode(bytes.fromhex(t), Transaction) for t in binding["txs"]]
    leaves = [tx.id + crypto.sha256(tx.signature) for tx in txs]
    assert [leaf.hex() for leaf in leaves] == binding["leaves"]
    assert [leaf_hash(leaf).hex() for leaf in leaves] == binding["leaf_hashes"]
    assert assignment.compute_batch_root(txs).hex() == binding["tx_root"]
    (verdict,) = _vectors_of(Verdict).values()
    (batch,) = _vectors_of(WorkBatch).values()
    assert list(batch.txs) == txs and verdict.assignment == batch.assignment
    assert verdict.assignment.tx_root.hex() == binding["tx_root"]
    assert assignment.compute_judgements_root(verdict.judgements).hex() == binding["tx_root"]
    assert codec.is_signature_valid(verdict.assignment)


@pytest.mark.parametrize("vector", ASSIGNMENT["rankings"], ids=lambda v: v["assignment_id"][:8])
def test_assignment_vector(vector: dict[str, Any]) -> None:
    assert bytes.fromhex(ASSIGNMENT["domain"]) == assignment.ASSIGNMENT_DOMAIN
    assert assignment.ASSIGNMENT_DOMAIN == b"micromine-assign"
    batch_id = bytes.fromhex(vector["assignment_id"])
    registry = [bytes.fromhex(d) for d in vector["registry"]]
    for device in registry:
        score = crypto.sha256(b"micromine-assign" + batch_id + device)
        assert score == assignment.compute_assignment_score(batch_id, device)
        assert score.hex() == vector["scores"][device.hex()]
    ranked = assignment.rank_devices(batch_id, registry)
    assert [d.hex() for d in ranked] == vector["ranking"]
    assert ranked == sorted(registry, key=lambda d: vector["scores"][d.hex()])
    for k, entitled in vector["entitled"].items():
        expected = vector["ranking"][: ASSIGNMENT["entitled_per_k"] * int(k)]
        assert entitled == expected
        computed = assignment.compute_entitled(batch_id, registry, int(k))
        assert [d.hex() for d in computed] == entitled


def test_assignment_vectors_rank_differently_per_batch() -> None:
    first, second = (v["ranking"] for v in ASSIGNMENT["rankings"])
    assert sorted(first) == sorted(second) and first != second


@pytest.mark.parametrize("vector", ASSIGNMENT["windows"], ids=str)
def test_registry_window_vector(vector: dict[str, Any]) -> None:
    assert vector["in_window"] == assignment.is_registry_height_in_window(
        vector["registry_height"], vector["block_height"], vector["window"]
    )


# --- stateless validation -----------------------------------------------------------------


@pytest.mark.parametrize("vector", VALIDATION["vectors"], ids=lambda v: v["name"])
def test_validation_vector(vector: dict[str, Any]) -> None:
    tx = codec.decode(bytes.fromhex(vector["tx"]), Transaction)
    reason = check_transaction(
        tx, VALIDATION["chain_id"], VALIDATION["now_ms"], VALIDATION["min_fee"]
    )
    assert reason is Reason[vector["reason"]]
    assert int(reason) == vector["code"]


def test_validation_vectors_cover_every_device_reason() -> None:
    reasons = {v["reason"] for v in VALIDATION["vectors"]}
    assert reasons == {"OK", "WRONG_CHAIN", "BAD_AMOUNT", "BAD_FEE", "SELF_TRANSFER",
                       "EXPIRED", "BAD_SIGNATURE"}  # fmt: skip


# --- docs/PROTOCOL.md repeats the limits --------------------------------------------------


def _limit_constants() -> list[tuple[str, int]]:
    found = [
        (name, value)
        for name, value in vars(limits).items()
        if name.isupper() and type(value) is int
    ]
    found += [(f"MAX_MESSAGE_BYTES[{k}]", v) for k, v in limits.MAX_MESSAGE_BYTES.items()]
    # MAX_SYNC_BLOCKS lives next to the message it bounds (protocol/consensus.py); MAX_ROUND
    # is in limits.py, since a block's certificate names a round too.
    found += [("MAX_SYNC_BLOCKS", consensus_rules.MAX_SYNC_BLOCKS)]
    return found


@pytest.mark.parametrize(("name", "value"), _limit_constants(), ids=str)
def test_doc_states_each_limit(name: str, value: int) -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert re.search(rf"(?<![0-9]){value}(?![0-9])", doc), f"{name} = {value} not in the doc"
    # "MAX_MESSAGE_BYTES[work_batch]" is named in the doc by its key, "work_batch".
    named = name.removeprefix("MAX_MESSAGE_BYTES[").removesuffix("]")
    assert named in doc, f"{named} not named in the doc"


def test_doc_states_the_key_limits() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for name, value in [("MAX_TX_BYTES", 512), ("MAX_MEMO_BYTES", 64), ("MAX_BATCH_TXS", 256),
                        ("MAX_SUBMISSION_TXS", 1024), ("MAX_CHAIN_ID_LEN", 32),
                        ("MAX_DEPTH", 7)]:  # fmt: skip
        assert getattr(limits, name) == value
        assert re.search(rf"{name}\W[^\n]*\b{value}\b", doc), name


def test_doc_states_the_consensus_limits() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for name, value in [("MAX_ROUND", 2**31), ("MAX_SYNC_BLOCKS", 64)]:
        assert getattr(consensus_rules, name) == value
        assert re.search(rf"\|\s*`{name}`\s*\|\s*{value}\s*\|", doc), name


def test_doc_has_a_section_for_every_kind() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for tag, cls in codec.MESSAGE_TYPES.items():
        assert re.search(rf"^### 6\.\d+ {cls.__name__} — kind {tag}$", doc, re.M), cls.__name__
        assert re.search(rf"\b{tag} {cls.__name__}\b", doc), f"kind tag list: {cls.__name__}"


def test_doc_lists_every_failure_and_reason_code() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for code in DecodeFailure:
        assert re.search(rf"\|\s*{int(code)}\s*\|\s*`?{code.name}`?", doc), code.name
    for reason in Reason:
        assert re.search(rf"\|\s*{int(reason)}\s*\|\s*`?{reason.name}`?", doc), reason.name


# --- broker login tokens (login.json) ---------------------------------------------------

LOGIN = load("login.json")


@pytest.mark.parametrize("example", LOGIN["examples"], ids=lambda e: f"{e['key']}-{e['client_id']}")
def test_login_vectors(example: dict[str, Any]) -> None:
    from micromine.protocol import auth  # noqa: PLC0415

    assert LOGIN["kind"] == Kind.LOGIN and LOGIN["window_ms"] == auth.LOGIN_WINDOW_MS
    key = bytes.fromhex(example["username"])
    seeds = {k["name"]: k["seed"] for k in KEYS["keys"]}
    assert KeyPair(bytes.fromhex(seeds[example["key"]])).public == key
    chain, client_id, stamp = example["chain_id"], example["client_id"], example["timestamp_ms"]
    array = cbor.encode([int(Kind.LOGIN), chain, key, client_id, stamp])
    assert array.hex() == example["signed_array"]
    digest = auth.compute_login_digest(chain, key, client_id, stamp)
    assert digest == crypto.sha256(array) and digest.hex() == example["digest"]
    assert crypto.signing_bytes(Kind.LOGIN, chain, digest).hex() == example["signing_bytes"]
    if client_id:
        request = auth.LoginRequest(example["username"], example["password"], client_id)
        assert auth.check_login(request, chain, stamp, auth.ReplayCache()) == key
    else:
        assert auth.is_static_password_valid(key, chain, example["password"])
