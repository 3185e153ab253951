"""A block's commit certificate: checking it the way a light client does, and the
canonical certificate that every ledger node converges on.

A certificate is valid for a validator set of n keys when the block names a round
(``commit_round`` >= 1) and holds valid COMMIT-kind signatures over (that round, the
block hash) from more than 2/3 of them (2n//3 + 1), each validator counted once.  That
is 2f + 1 precommits for the block in *one* round, which is a Tendermint decision: with
at most f of n = 3f + 1 validators faulty, two different blocks at one height can
never both have such a certificate (docs/CONSENSUS.md, "Certificates").  Signatures
from keys outside the set are ignored, not fatal; a signature made for another round
does not verify, so it counts as a bad one.

``CommitPool`` keeps the COMMIT signatures a node has seen for one height, so that
nodes which decided the same block in different rounds, or saw different late
precommits, still store the same certificate (see its docstring).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from micromine.protocol.block import Block, CommitSignature
from micromine.protocol.codec import is_commit_signature_valid
from micromine.protocol.consensus import NIL

MAX_VALUES_PER_VOTER = 2  # block hashes kept per (round, voter): an honest one signs one


def quorum(validator_count: int) -> int:
    """The least number of validators that is more than two thirds of them."""
    return 2 * validator_count // 3 + 1


@dataclass(frozen=True, slots=True)
class CertificateCheck:
    ok: bool
    round: int  # the round the certificate names (0: the block is not certified)
    signers: int  # distinct validators with a valid signature for that round
    needed: int
    problems: tuple[str, ...]
    valid: tuple[CommitSignature, ...]  # the counted entries, one per validator, by signer

    def describe(self) -> str:
        verdict = "verified" if self.ok else "REJECTED"
        detail = f" ({'; '.join(self.problems)})" if self.problems else ""
        return (
            f"{verdict}: round {self.round}, {self.signers}/{self.needed} needed signatures{detail}"
        )


def check_certificate(block: Block, validators: Sequence[bytes]) -> CertificateCheck:
    needed = quorum(len(validators))
    members = set(validators)
    chain_id, block_hash, round = block.header.chain_id, block.hash, block.commit_round
    valid: dict[bytes, CommitSignature] = {}
    problems: list[str] = []
    for entry in block.certificate:
        name = entry.signer.hex()[:16]
        if entry.signer not in members:
            problems.append(f"{name} is not a validator")
        elif entry.signer in valid:
            problems.append(f"{name} signed twice")
        # [REJECT] Every signature is over this block hash *and* the certificate's round.
        elif not is_commit_signature_valid(
            entry.signer, chain_id, round, block_hash, entry.signature
        ):
            problems.append(f"bad signature from {name} for round {round}")
        else:
            valid[entry.signer] = entry
    if round == 0:
        problems.insert(0, "not certified")
    elif len(valid) < needed:
        problems.insert(0, "short certificate")
    entries = tuple(valid[signer] for signer in sorted(valid))
    ok = round > 0 and len(valid) >= needed
    return CertificateCheck(ok, round, len(valid), needed, tuple(problems), entries)


class CommitPool:
    """The COMMIT signatures a node knows for one height, by round, voter and block hash.

    The **canonical certificate** of block B is: the lowest round r in which more than
    2/3 of the validators signed COMMIT over (r, B); every validator's signature known
    for (r, B) (the lowest bytes if one has several: a faulty signer can make many
    valid ones); sorted by signer.  It is a function of the set of signatures known,
    not of their arrival order or of the round in which this node decided, so nodes
    that learn the same signatures store byte-identical blocks.  Learning more can only
    lower r (or add signatures of r), so rounds above r are of no further use and
    ``forget_above`` drops them.

    Bounded: the caller offers rounds up to a limit it chooses (rounds really reached),
    and each voter keeps at most MAX_VALUES_PER_VOTER block hashes per round.  Nil votes
    commit to nothing and are ignored.
    """

    def __init__(self, chain_id: str, validators: Sequence[bytes]) -> None:
        self.chain_id = chain_id
        self.validators = frozenset(validators)
        self.quorum = quorum(len(self.validators))
        self._rounds: dict[int, dict[bytes, dict[bytes, bytes]]] = {}  # r -> voter -> hash -> sig

    def offer(self, voter: bytes, round: int, block_hash: bytes, signature: bytes) -> bool:
        """Record a validator's COMMIT signature after checking it; True when it changed
        what we know (a new signature, or a lower one for the same vote)."""
        # [IGNORE] A nil vote (it commits to nothing), not a validator, known already (or
        # a lower one is), or one value too many.
        if (
            block_hash == NIL
            or voter not in self.validators
            or not self._would_change(voter, round, block_hash, signature)
        ):
            return False
        # [IGNORE] Not a valid signature over (round, block_hash).
        if not is_commit_signature_valid(voter, self.chain_id, round, block_hash, signature):
            return False
        self._rounds.setdefault(round, {}).setdefault(voter, {})[block_hash] = signature
        return True

    def add(self, round: int, block_hash: bytes, entries: Sequence[CommitSignature]) -> None:
        """Record signatures already checked (a certificate we decided, our own votes);
        never refused for the per-voter bound, so a decided certificate is always kept."""
        for entry in entries:
            if block_hash == NIL or entry.signer not in self.validators:
                continue
            votes = self._rounds.setdefault(round, {}).setdefault(entry.signer, {})
            known = votes.get(block_hash)
            if known is None or entry.signature < known:
                votes[block_hash] = entry.signature

    def _would_change(self, voter: bytes, round: int, block_hash: bytes, signature: bytes) -> bool:
        votes = self._rounds.get(round, {}).get(voter, {})
        known = votes.get(block_hash)
        if known is not None:
            return signature < known
        return len(votes) < MAX_VALUES_PER_VOTER

    def certificate(self, block_hash: bytes) -> tuple[int, tuple[CommitSignature, ...]] | None:
        """The canonical (round, signatures) for ``block_hash``; None without a quorum."""
        for round in sorted(self._rounds):
            signed = {
                voter: votes[block_hash]
                for voter, votes in self._rounds[round].items()
                if block_hash in votes
            }
            if len(signed) >= self.quorum:
                return round, tuple(CommitSignature(v, signed[v]) for v in sorted(signed))
        return None

    def forget_above(self, round: int) -> None:
        for later in [r for r in self._rounds if r > round]:
            del self._rounds[later]
