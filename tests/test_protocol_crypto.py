"""Keys, domain-separated signatures, ids and RFC 6962 Merkle roots.

Longer than 400 lines because it holds the cryptography's edge cases (small-order keys,
non-canonical encodings, domain separation) that must not drift apart.
"""

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest
from framework import protocol_samples as s

from micromine.protocol import PROTOCOL_VERSION, cbor, codec, crypto
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.block import Block, CommitSignature, compute_commit_digest
from micromine.protocol.consensus import NIL, Precommit, Prevote
from micromine.protocol.crypto import DOMAIN_PREFIX, KeyPair, sha256, signing_bytes, verify
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import Kind
from micromine.protocol.merkle import leaf_hash, merkle_root, node_hash
from micromine.protocol.messages import Assignment, Verdict

# RFC 8032 section 7.1, TEST 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
DIGEST = sha256(b"some message id")


# --- keys and signing bytes ---------------------------------------------------------------


def test_public_key_matches_rfc8032() -> None:
    assert KeyPair(RFC8032_SEED).public == RFC8032_PUBLIC


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyPair(bytes(31))


def test_repr_hides_the_seed() -> None:
    key = KeyPair(RFC8032_SEED)
    assert RFC8032_SEED.hex() not in repr(key)
    assert RFC8032_SEED.hex()[:8] not in repr(key)
    assert key.public.hex()[:16] in repr(key)


def test_generated_keys_differ_and_sign() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    assert a.seed != b.seed
    assert verify(a.public, Kind.TRANSACTION, "c", DIGEST, a.sign(Kind.TRANSACTION, "c", DIGEST))


def test_signing_bytes_layout() -> None:
    data = signing_bytes(Kind.TRANSACTION, "testnet-1", DIGEST)
    assert DOMAIN_PREFIX == b"micromine\x00"
    assert PROTOCOL_VERSION == 1
    assert data == b"micromine\x00" + bytes([1, 1, 9]) + b"testnet-1" + DIGEST
    assert len(data) == 10 + 3 + 9 + 32


def test_signing_bytes_rejects_bad_digest() -> None:
    with pytest.raises(ValueError):
        signing_bytes(Kind.TRANSACTION, "c", bytes(31))


def test_signature_is_plain_ed25519_over_signing_bytes() -> None:
    key = KeyPair(RFC8032_SEED)
    signature = key.sign(Kind.VERDICT, "c", DIGEST)
    expected = nacl.signing.SigningKey(RFC8032_SEED).sign(signing_bytes(Kind.VERDICT, "c", DIGEST))
    assert signature == expected.signature
    assert len(signature) == 64
    nacl.signing.VerifyKey(key.public).verify(signing_bytes(Kind.VERDICT, "c", DIGEST), signature)


# --- domain separation --------------------------------------------------------------------

KEY = s.ALICE
SIG = KEY.sign(Kind.TRANSACTION, "testnet-1", DIGEST)


def test_signature_verifies_in_its_own_domain() -> None:
    assert verify(KEY.public, Kind.TRANSACTION, "testnet-1", DIGEST, SIG)


@pytest.mark.parametrize("kind", [k for k in Kind if k is not Kind.TRANSACTION])
def test_signature_does_not_verify_as_another_kind(kind: Kind) -> None:
    assert not verify(KEY.public, kind, "testnet-1", DIGEST, SIG)


@pytest.mark.parametrize("chain", ["testnet-2", "testnet", "testnet-10", "mainnet", "t"])
def test_signature_does_not_verify_on_another_chain(chain: str) -> None:
    assert not verify(KEY.public, Kind.TRANSACTION, chain, DIGEST, SIG)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_signature_does_not_cross_protocol_versions(version: int) -> None:
    ours = signing_bytes(Kind.TRANSACTION, "testnet-1", DIGEST)
    theirs = ours[:10] + bytes([version]) + ours[11:]
    assert ours[10] == PROTOCOL_VERSION
    # Our signature is not valid over the other version's bytes...
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(KEY.public).verify(theirs, SIG)
    # ...and the other version's signature does not verify here.
    foreign = nacl.signing.SigningKey(KEY.seed).sign(theirs).signature
    assert not verify(KEY.public, Kind.TRANSACTION, "testnet-1", DIGEST, foreign)


def test_chain_length_byte_prevents_ambiguity() -> None:
    # Without the length byte "ab" + digest could equal "a" + (b + digest[:-1]).
    a = signing_bytes(Kind.TRANSACTION, "ab", DIGEST)
    b = signing_bytes(Kind.TRANSACTION, "a", b"b" + DIGEST[:-1])
    assert a != b


def test_signature_does_not_verify_for_other_digest_or_key() -> None:
    assert not verify(KEY.public, Kind.TRANSACTION, "testnet-1", sha256(b"x"), SIG)
    assert not verify(s.BOB.public, Kind.TRANSACTION, "testnet-1", DIGEST, SIG)


@pytest.mark.parametrize(
    ("public", "signature"),
    [
        (bytes(31), SIG),
        (bytes(33), SIG),
        (KEY.public, SIG[:-1]),
        (KEY.public, SIG + b"\x00"),
        (KEY.public, bytes(64)),
        (b"\xff" * 32, SIG),  # not a curve point
        (bytes(32), SIG),  # small-order point
    ],
)
def test_verify_rejects_malformed_inputs(public: bytes, signature: bytes) -> None:
    assert not verify(public, Kind.TRANSACTION, "testnet-1", DIGEST, signature)


def test_verify_rejects_non_canonical_s() -> None:
    # S + L (the group order) is the same scalar mod L; strict verifiers must refuse it.
    order = 2**252 + 27742317777372353535851937790883648493
    s_value = int.from_bytes(SIG[32:], "little") + order
    assert s_value < 2**256
    malleated = SIG[:32] + s_value.to_bytes(32, "little")
    assert not verify(KEY.public, Kind.TRANSACTION, "testnet-1", DIGEST, malleated)


def test_verify_handles_non_ascii_chain_id() -> None:
    assert not verify(KEY.public, Kind.TRANSACTION, "t\u00e9st", DIGEST, SIG)


# --- signed messages ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(s.SIGNED_BUILDERS))
def test_signed_messages_verify(name: str) -> None:
    message = s.SIGNED_BUILDERS[name]()
    assert codec.is_signature_valid(message)
    assert message.signature == crypto.KeyPair(
        {m.public: m.seed for m in (s.ALICE, s.LEDGER, s.DEVICE, s.OPERATOR)}[message.signer]
    ).sign(message.KIND, message.chain_id, message.id)


def test_sign_refuses_a_key_that_is_not_the_signer() -> None:
    with pytest.raises(ValueError, match="signer"):
        codec.sign(s.transaction(), s.BOB)


def test_unsigned_message_does_not_verify() -> None:
    tx = s.transaction(s.BOB, sender=s.ALICE.public)  # built, not signed by ALICE
    assert tx.signature == bytes(64)
    assert not codec.is_signature_valid(tx)


def _alternative(value: Any, name: str) -> Any:
    """A different valid value for a field, of the same type."""
    if type(value) is Block:  # a proposal's block: another block, as small
        header = dataclasses.replace(value.header, timestamp_ms=value.header.timestamp_ms + 1)
        return dataclasses.replace(value, header=header)
    if name == "chain_id":
        return value + "x" if len(value) < 32 else value[:-1]
    if type(value) is bool:
        return not value
    if type(value) is int:
        return value + 1 if value < 255 else value - 1
    if type(value) is bytes:
        return bytes([value[0] ^ 1]) + value[1:]
    if type(value) is str:
        return value + "!" if len(value) < 32 else value[:-1]
    if type(value) is Assignment:  # a nested signed message: another batch's
        return dataclasses.replace(value, seq=value.seq + 1)
    if type(value) is tuple:
        return value[:-1] if len(value) > 1 else value + value
    raise AssertionError(f"no alternative for {name}={value!r}")


@pytest.mark.parametrize("name", sorted(s.SIGNED_BUILDERS))
def test_tampering_any_field_invalidates_the_signature(name: str) -> None:
    message = s.SIGNED_BUILDERS[name]()
    tampered_fields = 0
    for field in [f for f in dataclasses.fields(message) if f.init]:  # not the id memo
        if field.name == "signature":
            continue
        nil_precommit = type(message) is Precommit and message.block_hash == NIL
        if type(message) is Verdict and field.name == "chain_id":
            # A verdict's chain is its assignment's: another one cannot even be built.
            with pytest.raises(DecodeError, match="another chain"):
                dataclasses.replace(message, chain_id="otherchain")
            tampered_fields += 1
            continue
        if nil_precommit and field.name == "commit_signature":
            # A nil precommit's commit_signature can only be zeros: no other value exists.
            with pytest.raises(DecodeError):
                dataclasses.replace(message, commit_signature=bytes([1]) + bytes(63))
            tampered_fields += 1
            continue
        changed = dataclasses.replace(
            message, **{field.name: _alternative(getattr(message, field.name), field.name)}
        )
        assert changed.id != message.id, field.name
        assert not codec.is_signature_valid(changed), field.name
        tampered_fields += 1
    assert tampered_fields == len(message.to_wire()) - 2  # minus kind tag and signature
    for i in range(64):
        flipped = bytearray(message.signature)
        flipped[i] ^= 0x01
        assert not codec.is_signature_valid(dataclasses.replace(message, signature=bytes(flipped)))


def test_tampering_a_nested_transaction_breaks_the_batchs_binding() -> None:
    """A WorkBatch is unsigned: its signed assignment's tx_root names every transaction,
    signature included, so any change to them no longer matches it."""
    batch = s.work_batch()
    assert compute_batch_root(batch.txs) == batch.assignment.tx_root
    first = batch.txs[0]
    for tampered in (
        dataclasses.replace(first, amount=first.amount + 1),
        dataclasses.replace(first, signature=bytes(64)),
    ):
        changed = dataclasses.replace(batch, txs=(tampered, *batch.txs[1:]))
        assert compute_batch_root(changed.txs) != batch.assignment.tx_root
    assert compute_batch_root(batch.txs[::-1]) != batch.assignment.tx_root
    assert compute_batch_root(batch.txs[:1]) != batch.assignment.tx_root


def test_commit_signature_domain() -> None:
    header = s.block_header()
    signature = codec.sign_commit(2, header.hash, s.CHAIN, s.LEDGER)
    digest = compute_commit_digest(2, header.hash)
    assert digest == sha256(cbor.encode([2, header.hash]))
    assert codec.is_commit_signature_valid(s.LEDGER.public, s.CHAIN, 2, header.hash, signature)
    assert verify(s.LEDGER.public, Kind.COMMIT, s.CHAIN, digest, signature)
    assert not codec.is_commit_signature_valid(s.LEDGER.public, "other", 2, header.hash, signature)
    assert not codec.is_commit_signature_valid(s.DEVICE.public, s.CHAIN, 2, header.hash, signature)
    other = s.block_header(height=2).hash
    assert not codec.is_commit_signature_valid(s.LEDGER.public, s.CHAIN, 2, other, signature)
    # Not over the bare block hash: that round-free form could mix rounds in a certificate.
    assert not verify(s.LEDGER.public, Kind.COMMIT, s.CHAIN, header.hash, signature)
    for kind in Kind:
        if kind is not Kind.COMMIT:
            assert not verify(s.LEDGER.public, kind, s.CHAIN, digest, signature)


@pytest.mark.parametrize("other_round", [1, 3, 2**31, 0, 2**31 + 1, -1])
def test_commit_signature_is_bound_to_its_round(other_round: int) -> None:
    header = s.block_header()
    signature = codec.sign_commit(2, header.hash, s.CHAIN, s.LEDGER)
    # Another round (or one out of range: never an exception, just not valid).
    assert not codec.is_commit_signature_valid(
        s.LEDGER.public, s.CHAIN, other_round, header.hash, signature
    )
    if 1 <= other_round <= 2**31:
        again = codec.sign_commit(other_round, header.hash, s.CHAIN, s.LEDGER)
        assert again != signature
        assert codec.is_commit_signature_valid(
            s.LEDGER.public, s.CHAIN, other_round, header.hash, again
        )
    else:
        with pytest.raises(DecodeError):
            codec.sign_commit(other_round, header.hash, s.CHAIN, s.LEDGER)


# --- consensus votes ----------------------------------------------------------------------


def _vote_fields(vote: Prevote | Precommit) -> dict[str, Any]:
    return {
        "chain_id": vote.chain_id,
        "height": vote.height,
        "round": vote.round,
        "block_hash": vote.block_hash,
        "voter": vote.voter,
    }


@pytest.mark.parametrize("nil", [False, True], ids=["block", "nil"])
def test_prevote_signature_is_not_a_precommit_signature(nil: bool) -> None:
    prevote = s.prevote_nil() if nil else s.prevote()
    assert codec.is_signature_valid(prevote)
    # The same vote fields, as a precommit carrying the prevote's signature.
    commit = (
        bytes(64)
        if nil
        else codec.sign_commit(prevote.round, prevote.block_hash, s.CHAIN, s.LEDGER)
    )
    forged = Precommit(**_vote_fields(prevote), commit_signature=commit,
                       signature=prevote.signature)  # fmt: skip
    assert not codec.is_signature_valid(forged)
    # Even over the prevote's own id, the PRECOMMIT domain refuses it (and vice versa).
    assert not verify(prevote.voter, Kind.PRECOMMIT, s.CHAIN, prevote.id, prevote.signature)
    precommit = s.precommit_nil() if nil else s.precommit()
    assert codec.is_signature_valid(precommit)
    assert not verify(precommit.voter, Kind.PREVOTE, s.CHAIN, precommit.id, precommit.signature)
    back = Prevote(**_vote_fields(precommit), signature=precommit.signature)
    assert back.id == prevote.id
    assert not codec.is_signature_valid(back)


@pytest.mark.parametrize("builder", [s.prevote, s.precommit, s.prevote_nil, s.precommit_nil])
@pytest.mark.parametrize(
    "changes",
    [{"round": 1}, {"round": 3}, {"height": 2}, {"height": 0}, {"chain_id": "testnet-2"}],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_vote_signature_is_bound_to_its_height_round_and_chain(
    builder: Any, changes: dict[str, Any]
) -> None:
    vote = builder()
    replayed = dataclasses.replace(vote, **changes)
    assert replayed.id != vote.id
    assert not codec.is_signature_valid(replayed)
    assert codec.is_signature_valid(builder(**changes))  # the honest vote for it does verify


def test_vote_signature_is_bound_to_its_block() -> None:
    for vote in (s.prevote(), s.precommit()):
        nil: dict[str, Any] = {"block_hash": NIL}
        if type(vote) is Precommit:
            nil["commit_signature"] = bytes(64)  # a nil precommit carries none
        as_nil = dataclasses.replace(vote, **nil)
        assert not codec.is_signature_valid(as_nil)
        other = dataclasses.replace(vote, block_hash=sha256(b"another block"))
        assert not codec.is_signature_valid(other)
    for vote in (s.prevote_nil(), s.precommit_nil()):
        assert not codec.is_signature_valid(dataclasses.replace(vote, block_hash=DIGEST))


def test_precommit_commit_signature_is_a_commit_not_a_vote() -> None:
    precommit = s.precommit()
    voter, round_ = precommit.voter, precommit.round
    block_hash, commit = precommit.block_hash, precommit.commit_signature
    assert codec.is_commit_signature_valid(voter, s.CHAIN, round_, block_hash, commit)
    assert commit == codec.sign_commit(round_, block_hash, s.CHAIN, s.LEDGER)
    # Not a vote: neither as the precommit's own signature nor in any vote domain.
    assert not codec.is_signature_valid(dataclasses.replace(precommit, signature=commit))
    digest = compute_commit_digest(round_, block_hash)
    for kind in (Kind.PREVOTE, Kind.PRECOMMIT, Kind.PROPOSAL, Kind.BLOCK):
        assert not verify(voter, kind, s.CHAIN, digest, commit)
        assert not verify(voter, kind, s.CHAIN, precommit.id, commit)
    # ...and the vote signature is no commit signature: it cannot enter a certificate.
    vote_signature = precommit.signature
    assert not codec.is_commit_signature_valid(voter, s.CHAIN, round_, block_hash, vote_signature)
    assert not codec.is_commit_signature_valid(voter, "testnet-2", round_, block_hash, commit)
    assert not codec.is_commit_signature_valid(s.BOB.public, s.CHAIN, round_, block_hash, commit)


def test_precommit_commit_signature_is_bound_to_its_round_and_block_hash() -> None:
    # The same block precommitted in two rounds: two commit signatures, neither of which
    # verifies for the other round, so they can never be counted together.
    first, later = s.precommit(round=1), s.precommit(round=5)
    assert first.commit_signature != later.commit_signature
    assert first.signature != later.signature
    for vote, other_round in ((first, 5), (later, 1)):
        assert codec.is_commit_signature_valid(
            vote.voter, s.CHAIN, vote.round, vote.block_hash, vote.commit_signature
        )
        assert not codec.is_commit_signature_valid(
            vote.voter, s.CHAIN, other_round, vote.block_hash, vote.commit_signature
        )
    other = s.precommit(block_hash=sha256(b"another block"))
    assert not codec.is_commit_signature_valid(
        other.voter, s.CHAIN, other.round, first.block_hash, other.commit_signature
    )


def test_precommit_commit_signatures_form_the_block_certificate() -> None:
    validators = [s.LEDGER, s.key("ledger-2"), s.key("ledger-3")]
    block = s.proposed_block()
    precommits = [s.precommit(signer=v, block_hash=block.hash) for v in validators]
    certificate = tuple(CommitSignature(p.voter, p.commit_signature) for p in precommits)
    committed = dataclasses.replace(block, commit_round=2, certificate=certificate)
    assert codec.decode(codec.encode(committed), Block) == committed
    for entry in committed.certificate:
        assert codec.is_commit_signature_valid(
            entry.signer, s.CHAIN, 2, block.hash, entry.signature
        )
        assert not codec.is_commit_signature_valid(
            entry.signer, s.CHAIN, 3, block.hash, entry.signature
        )
    # The single-node certificate of the sample block is the same bytes as the precommit's.
    assert s.block().certificate[0].signature == precommits[0].commit_signature


def test_proposal_signature_does_not_vouch_for_the_block() -> None:
    proposal = s.proposal()
    assert codec.is_signature_valid(proposal)
    block_hash = proposal.block.hash
    assert not codec.is_commit_signature_valid(
        proposal.proposer, s.CHAIN, proposal.round, block_hash, proposal.signature
    )
    assert not verify(proposal.proposer, Kind.PROPOSAL, s.CHAIN, block_hash, proposal.signature)
    for kind in (Kind.PREVOTE, Kind.PRECOMMIT):
        assert not verify(proposal.proposer, kind, s.CHAIN, proposal.id, proposal.signature)


def test_ids_are_sha256_of_the_unsigned_encoding() -> None:
    for name, build in s.SIGNED_BUILDERS.items():
        message = build()
        unsigned = codec.encode(message)[:-66]  # drop the 0x58 0x40 + 64-byte signature
        # The array head counts one item fewer without the signature.
        head_less = bytes([unsigned[0] - 1]) + unsigned[1:]
        assert message.id == hashlib.sha256(head_less).digest(), name


# --- Merkle roots -------------------------------------------------------------------------


def rfc6962_root(leaves: Sequence[bytes]) -> bytes:
    """MTH from RFC 6962 section 2.1, written out literally."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    left = rfc6962_root(leaves[:k])
    right = rfc6962_root(leaves[k:])
    return hashlib.sha256(b"\x01" + left + right).digest()


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(bytes([i])).digest() for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 33])
def test_merkle_root_matches_rfc6962(n: int) -> None:
    assert merkle_root(_leaves(n)) == rfc6962_root(_leaves(n))


def test_merkle_small_trees_by_hand() -> None:
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = (hashlib.sha256(b"\x00" + x).digest() for x in (a, b, c))
    assert merkle_root([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle_root([a]) == la == leaf_hash(a)
    assert merkle_root([a, b]) == hashlib.sha256(b"\x01" + la + lb).digest()
    assert merkle_root([a, b, c]) == node_hash(node_hash(la, lb), lc)
    assert merkle_root([b""]) == hashlib.sha256(b"\x00").digest()


def test_merkle_root_is_order_and_count_sensitive() -> None:
    leaves = _leaves(5)
    assert merkle_root(leaves) != merkle_root(leaves[::-1])
    assert merkle_root(leaves) != merkle_root([*leaves, leaves[-1]])  # no odd-leaf duplication


def test_merkle_prefixes_stop_second_preimages() -> None:
    a, b = _leaves(2)
    # An inner node's preimage presented as a leaf does not give the same root.
    assert merkle_root([leaf_hash(a) + leaf_hash(b)]) != merkle_root([a, b])
    assert merkle_root([a]) != a
