"""Light-client certificate checks."""

from dataclasses import replace

from micromine.ledger_node.certificate import check_certificate, quorum
from micromine.protocol.block import Block, BlockHeader, CommitSignature
from micromine.protocol.codec import sign_block_hash
from micromine.protocol.crypto import KeyPair, sha256

KEYS = [KeyPair(sha256(b"validator %d" % i)) for i in range(4)]
VALIDATORS = sorted(k.public for k in KEYS)
HEADER = BlockHeader("certchain", 7, bytes(32), bytes(32), bytes(32), bytes(32), 1, KEYS[0].public)


def certified(signers: list[KeyPair]) -> Block:
    certificate = tuple(
        CommitSignature(k.public, sign_block_hash(HEADER.hash, "certchain", k)) for k in signers
    )
    return Block(HEADER, (), (), (), certificate)


def test_quorum_is_more_than_two_thirds() -> None:
    assert [quorum(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 3, 3, 4, 5, 5]


def test_three_of_four_verifies_and_two_does_not() -> None:
    assert check_certificate(certified(KEYS[:3]), VALIDATORS).ok
    short = check_certificate(certified(KEYS[:2]), VALIDATORS)
    assert not short.ok and "short certificate" in short.describe()


def test_duplicates_outsiders_and_forgeries_do_not_count() -> None:
    outsider = KeyPair(sha256(b"outsider"))
    block = certified([KEYS[0], KEYS[0], outsider, KEYS[1]])
    check = check_certificate(block, VALIDATORS)
    assert not check.ok and check.signers == 2
    forged = certified(KEYS[:3])
    bad = replace(forged.certificate[2], signature=bytes(64))
    check = check_certificate(
        replace(forged, certificate=(*forged.certificate[:2], bad)), VALIDATORS
    )
    assert not check.ok and any("bad signature" in p for p in check.problems)


def test_a_signature_for_another_block_does_not_count() -> None:
    other = replace(HEADER, height=8)
    certificate = tuple(
        CommitSignature(k.public, sign_block_hash(other.hash, "certchain", k)) for k in KEYS
    )
    assert not check_certificate(Block(HEADER, (), (), (), certificate), VALIDATORS).ok
