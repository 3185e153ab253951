"""Counting devices' verdicts per transaction until q of them agree.

    undecided --q "valid" votes--> accepted (waits for a block)
    undecided --q "invalid" votes--> rejected, with the most common reason
    undecided --tx_timeout_ms--> rejected NO_QUORUM

A device votes at most once per transaction (its first verdict counts).  The verdicts
that voted "valid" are kept: they are the block's justification.
"""

from collections import Counter
from dataclasses import dataclass, field

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


def compute_outcome(votes: TxVotes, q: int) -> Outcome | None:
    if len(votes.valid) >= q:
        return Outcome(True, Reason.OK)
    if len(votes.invalid) >= q:
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
