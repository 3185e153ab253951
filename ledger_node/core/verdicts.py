"""Devices' verdicts received: checked, held while early, and counted.

A verdict counts only under an assignment a validator signed, from a device that
assignment entitles, against a registry at most ``assignment_window`` blocks old,
and only if it judges exactly the assignment's transactions (chain/verdicts.py); an
accepted transaction whose verdicts fall out of that window is judged again
(decisions.py).  Every ledger node tallies every verdict, on its own batches and on
other nodes' (whose signed assignment the verdict carries), so that all learn which
transactions are accepted.  These functions act on the ``LedgerCore`` they are given.
"""

from typing import TYPE_CHECKING

from micromine.ledger_node.chain.verdicts import check_verdict_binding, check_verdict_signatures
from micromine.ledger_node.core.actions import Action
from micromine.ledger_node.core.decisions import (
    decide,
    dispute_accepted,
    forget_stale_verdicts,
    offer_fraud,
)
from micromine.ledger_node.core.tally import record_vote
from micromine.protocol.codec import decode, is_signature_valid
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Verdict

if TYPE_CHECKING:
    from micromine.ledger_node.core.ledger import LedgerCore

MAX_EARLY_VERDICTS = 4096  # verdicts ranked against a registry we have not reached yet
MAX_EARLY_PER_DEVICE = 16  # ... of them from one device (one key cannot fill the buffer)
EARLY_HEIGHTS = 4  # how far ahead of our tip such a registry may be


def on_verdict(
    core: "LedgerCore", key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
) -> None:
    try:
        verdict = decode(payload, Verdict)
    except DecodeError as exc:
        core.drop(out, "verdict", f"decode_{exc.code.name.lower()}", exc.detail)
        return
    # [REJECT] The verdict is for this chain, on the device's own topic.
    if verdict.chain_id != core.chain_id or verdict.device != key:
        core.drop(out, "verdict", "topic_mismatch", verdict.device.hex()[:16])
        return
    # [REJECT] Its device is not banned.
    if core.registry.is_banned(verdict.device):
        core.drop(out, "verdict", "banned", verdict.device.hex()[:16])
        return
    # [IGNORE] The device is revoked (as of our tip): counted.
    if core.registry.is_revoked_at(verdict.device, core.tip.height):
        core.drop(out, "verdict", "revoked", verdict.device.hex()[:16])
        return
    _take_verdict(core, verdict, out)


def _take_verdict(core: "LedgerCore", verdict: Verdict, out: list[Action]) -> None:
    record = core.dispatcher.batches.get(verdict.batch_id)
    if record is None or record.batch.assignment != verdict.assignment:
        # Another node's batch (or one from before a restart, or a forgery).
        _count_foreign_verdict(core, verdict, out)
        return
    # [REJECT] The device was given this batch (so it is entitled to judge it).
    if verdict.device not in record.given:
        core.drop(out, "verdict", "not_entitled", verdict.device.hex()[:16])
        return
    # [IGNORE] The device already answered this batch.
    if verdict.device in record.answered:
        return
    # [REJECT] It can still justify a transaction in our next block, and judges
    # exactly the batch's transactions (our own assignment: signed by us).
    if not _is_bound(core, verdict, out):
        return
    # [REJECT] The device signed it.
    if not is_signature_valid(verdict):
        core.drop(out, "verdict", "bad_signature", verdict.device.hex()[:16])
        return
    core.stats.verdicts += 1
    was_waiting = core.dispatcher.take_answer(record, verdict.device)
    _count(core, verdict, own=True, was_waiting=was_waiting)
    core.dispatcher.forget_if_done(verdict.batch_id, core.votes)


def _count_foreign_verdict(core: "LedgerCore", verdict: Verdict, out: list[Action]) -> None:
    """Tally a verdict on a batch another ledger node issued, so that every node
    learns which transactions are accepted.  We never saw the batch, but the
    verdict carries its signed assignment: who issued it, the registry that ranks
    the entitled devices, and the root of its transactions (chain/verdicts.py)."""
    # [IGNORE] Nothing in it is still undecided, or accepted and disputed, here.
    if not any(_concerns_us(core, j.tx_id, j.reason) for j in verdict.judgements):
        return
    # [IGNORE] Its registry is above our tip: held (once its signatures verified, so
    # that forgeries cannot fill the buffer) until we commit up to it.
    if verdict.registry_height > core.tip.height:
        if _is_signed(core, verdict, out):
            _hold_early(core, verdict, out)
        return
    # [REJECT] Bound to an assignment that entitles the device, within the window.
    if not _is_bound(core, verdict, out):
        return
    # [REJECT] The assignment is a validator's, and it and the verdict are signed.
    if not _is_signed(core, verdict, out):
        return
    core.stats.verdicts += 1
    _count(core, verdict, own=False, was_waiting=False)


def _concerns_us(core: "LedgerCore", tx_id: bytes, reason: int) -> bool:
    """Undecided here; or an "invalid" on an accepted transaction (a dispute); or a
    "valid" on one found forged or rejected by devices (perhaps a fraud)."""
    if tx_id in core.votes:
        return True
    if reason != Reason.OK:
        return tx_id in core.accepted
    return core.frauds.is_known(tx_id)


def _count(core: "LedgerCore", verdict: Verdict, *, own: bool, was_waiting: bool) -> None:
    """Count a checked verdict's judgements.  On our own batch, a transaction that
    every asked device answered without a decision goes to one more device."""
    for judgement in verdict.judgements:
        tx_id = judgement.tx_id
        votes = core.votes.get(tx_id)
        # [IGNORE] A judgement of another copy of the transaction (the id does not cover
        # the signature; the judgement names the hash of the one it checked): counted.
        if votes is not None and judgement.signature_hash != votes.signature_hash:
            core.note_drop("verdict", "other_signature", verdict.device.hex()[:16])
            continue
        if votes is not None:
            core.peers.note_judged(tx_id, votes.admitted_ms, core.now_ms)
            if was_waiting:
                votes.outstanding -= 1
            forget_stale_verdicts(core, votes)  # so that the device's new vote counts
            record_vote(votes, verdict, judgement.reason)
            if not decide(core, tx_id, votes) and own and votes.outstanding <= 0:
                core.dispatcher.retry.append(tx_id)  # all answered, no quorum
        elif judgement.reason != Reason.OK and (accepted := core.accepted.get(tx_id)):
            dispute_accepted(core, tx_id, accepted, verdict, judgement.reason)
        elif judgement.reason == Reason.OK and (tx := core.frauds.forged_for(tx_id)):
            offer_fraud(core, verdict, tx)  # a "valid" on a forgery, after the fact


def _is_bound(core: "LedgerCore", verdict: Verdict, out: list[Action]) -> bool:
    """The verdict's binding rules of a block (transition.state_transition), for our next
    block; a counted drop when broken.  Its registry must not be above our tip."""
    problem = check_verdict_binding(verdict, core.tip.height + 1, core.registry, core.params)
    if problem is not None:
        who = verdict.device.hex()[:16]
        core.drop(out, "verdict", problem, f"{who} at {verdict.registry_height}")
        return False
    return True


def _is_signed(core: "LedgerCore", verdict: Verdict, out: list[Action]) -> bool:
    validators = core.genesis.ledger_nodes
    problem = check_verdict_signatures(verdict, validators, core.signatures)
    if problem is not None:
        core.drop(out, "verdict", problem, verdict.device.hex()[:16])
        return False
    return True


def _hold_early(core: "LedgerCore", verdict: Verdict, out: list[Action]) -> None:
    """Another node committed a block we have not yet, and dispatched against it:
    keep the verdict (bounded) and take it again once we reach that height."""
    if verdict.registry_height > core.tip.height + EARLY_HEIGHTS:
        core.drop(out, "verdict", "future_registry", verdict.device.hex()[:16])
        return
    held = sum(1 for v in core.early_verdicts if v.device == verdict.device)
    if len(core.early_verdicts) >= MAX_EARLY_VERDICTS or held >= MAX_EARLY_PER_DEVICE:
        core.drop(out, "verdict", "early_full", verdict.device.hex()[:16])
        return
    core.early_verdicts.append(verdict)


def take_early_verdicts(core: "LedgerCore", out: list[Action]) -> None:
    """After a block: take the held verdicts whose registry we have now reached."""
    ready = [v for v in core.early_verdicts if v.registry_height <= core.tip.height]
    if ready:
        core.early_verdicts = [
            v for v in core.early_verdicts if v.registry_height > core.tip.height
        ]
        for verdict in ready:
            _take_verdict(core, verdict, out)
