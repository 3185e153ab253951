"""Checking a block's commit certificate the way a light client does.

A certificate is valid for a validator set of n keys when it holds valid COMMIT-kind
signatures over the block hash from more than 2/3 of them (2n//3 + 1), each validator
counted once.  That is all a light client needs: with at most f of n = 3f + 1 validators
faulty, two different blocks at one height can never both gather such a certificate
(docs/CONSENSUS.md).  Signatures from keys outside the set are ignored, not fatal.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from micromine.protocol.block import Block, CommitSignature
from micromine.protocol.codec import is_commit_signature_valid


def quorum(validator_count: int) -> int:
    """The least number of validators that is more than two thirds of them."""
    return 2 * validator_count // 3 + 1


@dataclass(frozen=True, slots=True)
class CertificateCheck:
    ok: bool
    signers: int  # distinct validators with a valid signature
    needed: int
    problems: tuple[str, ...]
    valid: tuple[CommitSignature, ...]  # the counted entries, one per validator, by signer

    def describe(self) -> str:
        verdict = "verified" if self.ok else "REJECTED"
        detail = f" ({'; '.join(self.problems)})" if self.problems else ""
        return f"{verdict}: {self.signers}/{self.needed} needed signatures{detail}"


def check_certificate(block: Block, validators: Sequence[bytes]) -> CertificateCheck:
    needed = quorum(len(validators))
    members = set(validators)
    chain_id, block_hash = block.header.chain_id, block.hash
    valid: dict[bytes, CommitSignature] = {}
    problems: list[str] = []
    for entry in block.certificate:
        name = entry.signer.hex()[:16]
        if entry.signer not in members:
            problems.append(f"{name} is not a validator")
        elif entry.signer in valid:
            problems.append(f"{name} signed twice")
        elif not is_commit_signature_valid(entry.signer, chain_id, block_hash, entry.signature):
            problems.append(f"bad signature from {name}")
        else:
            valid[entry.signer] = entry
    if len(valid) < needed:
        problems.insert(0, "short certificate")
    entries = tuple(valid[signer] for signer in sorted(valid))
    return CertificateCheck(len(valid) >= needed, len(valid), needed, tuple(problems), entries)
