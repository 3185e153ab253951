"""A transaction's votes decided: the quorum, disagreements and audits the node checks
itself, forgeries and the fraud proofs they make, and judging again.

    undecided --q agree (tally.compute_outcome)--> accepted / rejected
    undecided --"valid" and "invalid" votes--> settled: checked here (_settle)
    undecided --q "invalid"--> checked here first (_check_rejection): rejected if it
        fails, settled if it passes (a false "invalid" rejects nothing)
    undecided --q "valid", picked for an audit (more likely the lower the vouching
        devices' reputation: devices.audit_probability)--> checked here (_audit)
    accepted --a later "invalid" vote--> settled before a block takes it
    checked and forged --> rejected; each "valid" verdict on it is a fraud proof
    accepted --its verdicts fall out of the assignment window--> judged again

Checking a transaction here costs one stateless check (a signature verification at
most), once per transaction.  These functions act on the ``LedgerCore`` they are given.
"""

from typing import TYPE_CHECKING

from micromine.ledger_node.core.actions import Action
from micromine.ledger_node.core.admission import reject_pending
from micromine.ledger_node.core.devices import audit_probability
from micromine.ledger_node.core.tally import (
    Outcome,
    TxVotes,
    agreement,
    compute_outcome,
    is_disputed,
    record_vote,
)
from micromine.protocol.assignment import is_registry_height_in_window
from micromine.protocol.block import FraudReport
from micromine.protocol.codec import decode
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Transaction, Verdict
from micromine.protocol.validation import check_transaction, check_transaction_objective

if TYPE_CHECKING:
    from micromine.ledger_node.core.ledger import LedgerCore


def decide(core: "LedgerCore", tx_id: bytes, votes: TxVotes) -> bool:
    """Decide the transaction if its votes allow; True when it left ``votes``."""
    # [REJECT] Devices disagree: we check it ourselves, and a forgery is rejected.
    if is_disputed(votes) and not _settle(core, tx_id, votes):
        return True
    outcome = compute_outcome(votes, core.params.q)
    if outcome is None:
        return False
    # [REJECT] Rejected by a quorum: only once we checked it ourselves; if it passes,
    # their "invalid" votes stop counting (censorship costs the censors, not the sender).
    if not outcome.accepted:
        reason = _check_rejection(core, votes)
        if reason is Reason.OK:
            return False
        if check_transaction_objective(votes.tx, core.chain_id) is not Reason.OK:
            _reject_forged(core, tx_id, votes, reason)
            return True
        outcome = Outcome(False, reason)
    # [REJECT] Accepted by a quorum, and picked for an audit: a forgery is rejected.
    if outcome.accepted and not votes.settled and not _audit(core, tx_id, votes):
        return True
    del core.votes[tx_id]
    core.devices.record_outcome(*agreement(votes, outcome))
    if outcome.accepted:
        core.accepted[tx_id] = votes
    else:
        core.frauds.note_rejected(votes.tx)  # a late "valid" on it gets it checked
        reject_pending(core, tx_id, outcome.reason)
    return True


def _settle(core: "LedgerCore", tx_id: bytes, votes: TxVotes) -> bool:
    """The devices disagree on ``tx_id``: check it ourselves (once per transaction).
    True when it passes (its "invalid" votes stop counting), False when it does not
    (it is rejected, and its "valid" votes were wrong)."""
    core.stats.settled += 1
    return _check_ourselves(core, tx_id, votes)


def _check_rejection(core: "LedgerCore", votes: TxVotes) -> Reason:
    """q devices judged the transaction invalid: check it ourselves before a final
    answer, every stateless rule with our clock (one signature verification).  The
    first rule it breaks, the rejection's reason; or OK, and it is settled: the
    "invalid" votes no longer decide it, and it waits for q "valid" ones."""
    core.stats.settled += 1
    reason = check_transaction(votes.tx, core.chain_id, core.now_ms, core.params.min_fee)
    if reason is Reason.OK:
        votes.settled = True
    return reason


def _audit(core: "LedgerCore", tx_id: bytes, votes: TxVotes) -> bool:
    """Perhaps check a transaction q devices accepted, before any block takes it:
    with the audit probability of the lowest-reputation device that vouched for it
    (devices.audit_probability).  False when it was audited and found forged (it
    is then rejected)."""
    reputation = min(core.devices.reputation(device) for device in votes.valid)
    if core.rng.random() >= audit_probability(reputation, core.audit_rate):
        return True
    core.stats.audited += 1
    return _check_ourselves(core, tx_id, votes)


def _check_ourselves(core: "LedgerCore", tx_id: bytes, votes: TxVotes) -> bool:
    """One stateless check (a signature verification at most): True and settled when
    the transaction passes, False and rejected when it is a forgery."""
    reason = check_transaction_objective(votes.tx, core.chain_id)
    if reason is Reason.OK:
        votes.settled = True
        return True
    _reject_forged(core, tx_id, votes, reason)
    return False


def _reject_forged(core: "LedgerCore", tx_id: bytes, votes: TxVotes, reason: Reason) -> None:
    """``votes.tx`` fails a check that needs neither time nor state: reject it; the
    devices that judged it valid were wrong beyond doubt."""
    core.stats.forged += 1
    core.devices.record_outcome(*agreement(votes, Outcome(False, reason)))
    core.frauds.note_forged(votes.tx)
    for verdict in votes.valid.values():
        offer_fraud(core, verdict, votes.tx)
    reject_pending(core, tx_id, reason)


def offer_fraud(
    core: "LedgerCore", verdict: Verdict, tx: Transaction, source: str = "fraud"
) -> str | None:
    """``verdict`` judged ``tx`` valid, and ``tx`` is a forgery: queue the proof for
    our next block (frauds.py), or count (under ``source``) and return why it cannot
    be one."""
    problem = core.frauds.offer(
        verdict, tx, height=core.tip.height + 1, registry=core.registry,
        signatures=core.signatures,
    )  # fmt: skip
    if problem is not None:
        core.note_drop(source, problem, verdict.device.hex()[:16])
    return problem


def on_fraud_report(
    core: "LedgerCore", _key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
) -> None:
    """A fraud proof found outside the nodes (a watcher that checked a committed block,
    ``micromine blocks watch --verify``): checked exactly as a block's would be, then
    queued like one of ours, so that our next block bans the device.  The reporter is
    not trusted: the proof carries its own evidence."""
    try:
        report = decode(payload, FraudReport)
    except DecodeError as exc:
        core.drop(out, "fraud_report", f"decode_{exc.code.name.lower()}", exc.detail)
        return
    proof = report.proof
    # [REJECT] For this chain.
    if report.chain_id != core.chain_id:
        core.drop(out, "fraud_report", "wrong_chain", report.chain_id)
        return
    # [IGNORE] A proof against this device is pending already.
    if proof.device in core.frauds.pending:
        return
    # [REJECT] The rules of a block's fraud proof (frauds.FraudBook.offer).
    if offer_fraud(core, proof.verdict, proof.tx, "fraud_report") is not None:
        return
    core.frauds.note_forged(proof.tx)
    core.stats.fraud_reports += 1


def dispute_accepted(
    core: "LedgerCore", tx_id: bytes, votes: TxVotes, verdict: Verdict, reason: int
) -> None:
    """An "invalid" vote on a transaction already accepted (a verdict that came after
    the q "valid" ones): settle it before a block takes it."""
    if votes.settled:
        core.devices.record_outcome((), (verdict.device,))
        return
    record_vote(votes, verdict, reason)
    if _settle(core, tx_id, votes):
        core.devices.record_outcome((), (verdict.device,))


def forget_stale_verdicts(core: "LedgerCore", votes: TxVotes) -> None:
    """Valid votes whose registry is out of the window cannot justify the
    transaction any more; the device may vote again on a fresh batch.  Votes of
    banned devices count for nothing."""
    banned = core.registry.is_banned
    if any(not _is_in_window(core, v) or banned(d) for d, v in votes.valid.items()):
        votes.valid = {
            d: v for d, v in votes.valid.items() if _is_in_window(core, v) and not banned(d)
        }
    if any(banned(d) for d in votes.invalid):
        votes.invalid = {d: r for d, r in votes.invalid.items() if not banned(d)}


def _is_in_window(core: "LedgerCore", verdict: Verdict) -> bool:
    """Can ``verdict`` still justify its transaction in our next block?"""
    return is_registry_height_in_window(
        verdict.registry_height, core.tip.height + 1, core.params.assignment_window
    )


def judge_again(core: "LedgerCore", tx_id: bytes) -> None:
    """An accepted transaction without q verdicts that can still justify it goes back
    to the devices (a new batch, a new ranking), if it is ours to dispatch."""
    votes = core.accepted.pop(tx_id, None)
    if votes is None:
        return
    forget_stale_verdicts(core, votes)
    votes.outstanding = 0
    core.votes[tx_id] = votes  # at the end: it expires a little later than its peers
    if core.peers.mine(tx_id, core.now_ms):
        core.dispatcher.fresh.append(tx_id)
