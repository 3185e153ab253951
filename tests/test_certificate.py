"""Light-client certificate checks, and the canonical certificate nodes converge on."""

from dataclasses import replace

import pytest

from micromine.ledger_node.consensus.certificate import (
    CommitPool,
    check_certificate,
    quorum,
)
from micromine.protocol.block import Block, BlockHeader, CommitSignature
from micromine.protocol.codec import sign_commit
from micromine.protocol.crypto import KeyPair, sha256

KEYS = [KeyPair(sha256(b"validator %d" % i)) for i in range(4)]
VALIDATORS = sorted(k.public for k in KEYS)
HEADER = BlockHeader("certchain", 7, bytes(32), bytes(32), bytes(32), bytes(32), 1, KEYS[0].public)
OTHER_HASH = replace(HEADER, height=8).hash


def entry(key: KeyPair, round: int, block_hash: bytes = HEADER.hash) -> CommitSignature:
    return CommitSignature(key.public, sign_commit(round, block_hash, "certchain", key))


def certified(signers: list[KeyPair], round: int = 1, signed_in: list[int] | None = None) -> Block:
    """A block whose certificate names ``round``; each signer signs in its ``signed_in``
    round (by default the named one)."""
    rounds = signed_in or [round] * len(signers)
    certificate = tuple(entry(k, r) for k, r in zip(signers, rounds, strict=True))
    return Block(HEADER, (), (), (), round, certificate)


def test_quorum_is_more_than_two_thirds() -> None:
    assert [quorum(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 3, 3, 4, 5, 5]


def test_three_of_four_verifies_and_two_does_not() -> None:
    check = check_certificate(certified(KEYS[:3], round=4), VALIDATORS)
    assert check.ok and check.round == 4 and "round 4" in check.describe()
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
    certificate = tuple(entry(k, 1, OTHER_HASH) for k in KEYS)
    assert not check_certificate(Block(HEADER, (), (), (), 1, certificate), VALIDATORS).ok


def test_signatures_of_another_round_do_not_count() -> None:
    # Three valid COMMIT signatures over this block, but of rounds 1, 1 and 3: only two
    # are of the round the certificate names, whichever of them it names.
    for named in (1, 3):
        check = check_certificate(certified(KEYS[:3], named, signed_in=[1, 1, 3]), VALIDATORS)
        assert not check.ok
        assert check.signers == (2 if named == 1 else 1)
        assert any(f"for round {named}" in p for p in check.problems)
    # The same signatures relabelled as another round's: none counts.
    relabelled = replace(certified(KEYS[:3], 2), commit_round=5)
    check = check_certificate(relabelled, VALIDATORS)
    assert not check.ok and check.signers == 0
    assert check_certificate(certified(KEYS[:3], 2), VALIDATORS).ok


def test_an_uncertified_block_is_not_certified() -> None:
    check = check_certificate(Block(HEADER, (), (), (), 0, ()), VALIDATORS)
    assert not check.ok and check.round == 0 and "not certified" in check.describe()


# ---- the canonical certificate -------------------------------------------------------


def pool_with(*entries: tuple[int, KeyPair, bytes]) -> CommitPool:
    pool = CommitPool("certchain", VALIDATORS)
    for round, key, block_hash in entries:
        assert pool.offer(
            key.public, round, block_hash, sign_commit(round, block_hash, "certchain", key)
        )
    return pool


def canonical(pool: CommitPool) -> tuple[int, tuple[CommitSignature, ...]]:
    found = pool.certificate(HEADER.hash)
    assert found is not None
    return found


def test_the_lowest_round_with_a_quorum_wins_with_all_its_signatures() -> None:
    h = HEADER.hash
    pool = pool_with((3, KEYS[0], h), (3, KEYS[1], h), (3, KEYS[2], h), (2, KEYS[3], h))
    assert canonical(pool)[0] == 3 and len(canonical(pool)[1]) == 3
    # Round 2 gains a quorum later: it becomes the canonical round.
    pool.offer(KEYS[0].public, 2, h, sign_commit(2, h, "certchain", KEYS[0]))
    assert canonical(pool)[0] == 3
    pool.offer(KEYS[2].public, 2, h, sign_commit(2, h, "certchain", KEYS[2]))
    round, signatures = canonical(pool)
    assert round == 2
    assert [e.signer for e in signatures] == sorted(k.public for k in (KEYS[0], KEYS[2], KEYS[3]))
    assert check_certificate(Block(HEADER, (), (), (), round, signatures), VALIDATORS).ok
    # A fourth signature of that round joins; later rounds are of no further use.
    pool.offer(KEYS[1].public, 2, h, sign_commit(2, h, "certchain", KEYS[1]))
    pool.forget_above(2)
    assert canonical(pool)[0] == 2 and len(canonical(pool)[1]) == 4


def test_the_canonical_certificate_does_not_depend_on_arrival_order() -> None:
    h = HEADER.hash
    votes = [(r, k, h) for r in (1, 2) for k in KEYS[:3]] + [(1, KEYS[3], OTHER_HASH)]
    first = pool_with(*votes).certificate(h)
    second = pool_with(*reversed(votes)).certificate(h)
    assert first == second and first is not None and first[0] == 1


def test_the_pool_refuses_what_it_cannot_use() -> None:
    h = HEADER.hash
    pool = CommitPool("certchain", VALIDATORS)
    outsider = KeyPair(sha256(b"outsider"))
    good = sign_commit(1, h, "certchain", KEYS[0])
    assert not pool.offer(outsider.public, 1, h, sign_commit(1, h, "certchain", outsider))
    assert not pool.offer(KEYS[0].public, 2, h, good)  # made for round 1
    assert not pool.offer(KEYS[0].public, 1, OTHER_HASH, good)
    assert not pool.offer(KEYS[0].public, 1, bytes(32), bytes(64))  # a nil vote
    assert pool.offer(KEYS[0].public, 1, h, good)
    assert not pool.offer(KEYS[0].public, 1, h, good)  # known
    # At most two block hashes per voter and round (an honest one signs one).
    for n in range(3):
        other = sha256(b"other %d" % n)
        offered = pool.offer(KEYS[0].public, 1, other, sign_commit(1, other, "certchain", KEYS[0]))
        assert offered == (n == 0)
    assert pool.certificate(h) is None  # one signer is no quorum


@pytest.mark.parametrize("order", ["decided first", "offered first"])
def test_a_decided_certificate_is_always_kept(order: str) -> None:
    h = HEADER.hash
    block = certified(KEYS[:3], 4)
    pool = CommitPool("certchain", VALIDATORS)
    if order == "decided first":
        pool.add(4, h, block.certificate)
    for n in range(2):  # the per-voter bound is full before the decided signature arrives
        other = sha256(b"other %d" % n)
        pool.offer(KEYS[0].public, 4, other, sign_commit(4, other, "certchain", KEYS[0]))
    if order == "offered first":
        pool.add(4, h, block.certificate)
    assert canonical(pool) == (4, tuple(sorted(block.certificate, key=lambda e: e.signer)))
