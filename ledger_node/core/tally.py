"""Counting devices' verdicts per transaction until q of them agree, and settling
disagreements.

    undecided --q "valid" votes--> accepted (waits for a block)
    undecided --q "invalid" votes--> rejected, with the most common reason
    undecided --tx_timeout_ms--> rejected NO_QUORUM
    undecided or accepted --"valid" and "invalid" votes both--> settled by the ledger:
        the transaction fails check_transaction_objective: rejected with that reason
        (the "valid" votes were wrong beyond doubt: fraud proofs, decisions.py)
        it passes: "invalid" votes no longer count; it waits for q "valid" ones

A device votes at most once per transaction (its first verdict counts).  The verdicts
that voted "valid" are kept: they are the block's justification.  Settling costs the
ledger one stateless check (one signature verification), once per transaction: bounded
by the disagreements, which honest devices only cause through a wrong clock (EXPIRED).
"""

from collections import Counter
from dataclasses import dataclass, field

from micromine.protocol.crypto import sha256
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Transaction, Verdict


@dataclass(slots=True)
class TxVotes:
    tx: Transaction
    reply_to: bytes
    admitted_ms: int
    asked: set[bytes] = field(default_factory=set)  # devices ever given this transaction
    outstanding: int = 0  # assignments not yet answered or timed out
    valid: dict[bytes, Verdict] = field(default_factory=dict)
    invalid: dict[bytes, int] = field(default_factory=dict)
    # The ledger checked the transaction itself (a disagreement, or an audit) and found
    # nothing objectively wrong: "invalid" votes no longer decide it.
    settled: bool = False
    # SHA-256 of the signature: judgements of this copy of the transaction name it.
    signature_hash: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.signature_hash = sha256(self.tx.signature)

    def voters(self) -> set[bytes]:
        """The devices whose judgement of this transaction is counted."""
        return {*self.valid, *self.invalid}


@dataclass(frozen=True, slots=True)
class Outcome:
    accepted: bool
    reason: Reason  # OK when accepted


def record_vote(votes: TxVotes, verdict: Verdict, reason: int) -> None:
    """Count one device's judgement; a repeated vote by the same device is ignored."""
    if verdict.device in votes.valid or verdict.device in votes.invalid:
        return
    if reason == Reason.OK:
        votes.valid[verdict.device] = verdict
    else:
        votes.invalid[verdict.device] = reason


def is_disputed(votes: TxVotes) -> bool:
    """Devices disagree and the ledger has not settled it yet."""
    return bool(votes.valid) and bool(votes.invalid) and not votes.settled


def compute_outcome(votes: TxVotes, q: int) -> Outcome | None:
    if len(votes.valid) >= q:
        return Outcome(True, Reason.OK)
    if len(votes.invalid) >= q and not votes.settled:
        counts = Counter(votes.invalid.values())
        code = min(counts, key=lambda c: (-counts[c], c))
        reason = Reason(code) if code in Reason._value2member_map_ else Reason.OTHER
        return Outcome(False, reason)
    return None


def agreement(votes: TxVotes, outcome: Outcome) -> tuple[list[bytes], list[bytes]]:
    """Devices whose vote matched the outcome, and those whose vote did not."""
    matched = votes.valid if outcome.accepted else votes.invalid
    other = votes.invalid if outcome.accepted else votes.valid
    return list(matched), list(other)
