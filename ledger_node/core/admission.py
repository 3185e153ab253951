"""Transactions from submission to pending: admitted, held or rejected, and answered.

    submission --decoded, not seen--> offered --admission--> pending (judged by devices)
                                                          --> held (mempool.py)
                                                          --> rejected
    pending --rejected--> the sender's later nonces held again (NONCE_GAP)
    held --the sender's state changes, or the node catches up--> offered again
    undecided for tx_timeout_ms --> rejected NO_QUORUM
    held HOLD_MS for a missing nonce --> rejected NONCE_GAP

Receipt rules (docs/PROTOCOL.md section 8): a receipt is final only when it is true.
COMMITTED names the block.  REJECTED is sent only for a reason that no later state can
undo (a stateless rule, a used nonce, a device quorum or timeout), or for one that
depends on the chain state read at a committed height the receipt names (with the
sender's next nonce there), and never for a state-dependent reason while the node is
not caught up (``LedgerCore.is_caught_up``): it holds the transaction instead (HELD, not
final).  Timeouts (NO_QUORUM, a held nonce gap) fire only while caught up too: a node
replaying its chain after a restart must not time out what the others committed meanwhile.

Every ledger node decides the same; only a transaction's owner (peers.py) dispatches it
and answers its submitter (receipts.py).  These functions act on the ``LedgerCore`` they
are given; the storage they ask for goes out with the event's other actions.
"""

import dataclasses
from typing import TYPE_CHECKING

from micromine.ledger_node.chain.state import EMPTY_ACCOUNT
from micromine.ledger_node.core.actions import Action
from micromine.ledger_node.core.mempool import Admission, HeldTx, PendingTx
from micromine.ledger_node.core.tally import TxVotes
from micromine.protocol.codec import decode
from micromine.protocol.crypto import sha256
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import STATE_REASONS, Reason, ReceiptStatus
from micromine.protocol.messages import Submission
from micromine.protocol.validation import check_transaction_objective, decode_transaction

if TYPE_CHECKING:
    from micromine.ledger_node.core.ledger import LedgerCore

# A transaction held for a missing earlier nonce waits this long (counted while the node
# is caught up) before it is rejected NONCE_GAP: long enough for a sender to resubmit
# what a broker restart lost (clients resend within seconds, told the nonce by HELD).
HOLD_MS = 15_000


def on_submission(
    core: "LedgerCore", _key: bytes | None, payload: bytes, now_ms: int, actions: list[Action]
) -> None:
    try:
        submission = decode(payload, Submission)
    except DecodeError as exc:
        core.drop(actions, "submit", f"decode_{exc.code.name.lower()}", exc.detail)
        return
    if submission.chain_id != core.chain_id:
        core.drop(actions, "submit", "wrong_chain", submission.chain_id)
        return
    # Nothing an admission does changes whether we are caught up: asked once, not per item.
    caught_up = core.is_caught_up(now_ms)
    for item in submission.items:
        _admit_item(core, item, submission.reply_to, now_ms, caught_up)
    # Persisted (StorePending) before the PENDING receipts, both flushed after this.


def _admit_item(
    core: "LedgerCore", item: bytes, reply_to: bytes, now_ms: int, caught_up: bool
) -> None:
    # Every node decides the same; only the item's owner answers (peers.py).
    decoded = decode_transaction(item)
    if isinstance(decoded, Reason):
        core.receipts.note_if_mine(reply_to, sha256(item), ReceiptStatus.REJECTED, decoded, now_ms)
        core.stats.rejected += 1
        return
    tx, tx_id = decoded, decoded.id
    if tx_id in core.mempool:  # [IGNORE] already pending: acknowledge again
        core.receipts.note_if_mine(reply_to, tx_id, ReceiptStatus.PENDING, 0, now_ms)
        return
    held = core.mempool.held.get(tx_id)
    if held is not None:  # [IGNORE] already held: say on what, to this submitter
        held.entry = dataclasses.replace(held.entry, reply_to=reply_to)
        _answer_held(core, held.entry, held.reason)
        return
    height = core.recent_committed.get(tx_id)
    if height is not None:  # [IGNORE] already committed: say where
        core.receipts.note_if_mine(reply_to, tx_id, ReceiptStatus.COMMITTED, height, now_ms)
        return
    _offer(core, PendingTx(tx, tx_id, reply_to, now_ms), None, caught_up)
    offer_held(core, tx.sender, caught_up)  # the later nonces it may have unblocked


def _offer(core: "LedgerCore", entry: PendingTx, held: HeldTx | None, caught_up: bool) -> None:
    """Admit, hold or reject ``entry`` (neither pending nor held now); ``held``: how
    it was held until now (its first hold's time is kept, and the sender is told
    only of a new reason to wait that it can act on); ``caught_up``: is_caught_up now."""
    now = core.now_ms
    admission = core.mempool.check_admission(entry.tx, now, core.accounts, caught_up=caught_up)
    # [REJECT] Without devices (q = 0), the node checks the signature itself.
    if admission.ok and core.params.q == 0:
        admission = Admission(check_transaction_objective(entry.tx, core.chain_id))
    if admission.ok:
        if held is not None:  # judged from now on: its timeout counts from here
            entry = dataclasses.replace(entry, admitted_ms=now)
        admit(core, entry, now)
        core.store_pending(entry)
        core.receipts.note_if_mine(entry.reply_to, entry.tx_id, ReceiptStatus.PENDING, 0, now)
        core.stats.admitted += 1
    elif admission.hold:
        core.mempool.hold(entry, admission.reason, held.since_ms if held else now)
        if held is None or (
            admission.reason is not held.reason and admission.reason is not Reason.CATCHING_UP
        ):
            _answer_held(core, entry, admission.reason)
    else:
        _answer_rejected(core, entry, admission.reason)


def offer_held(core: "LedgerCore", sender: bytes, caught_up: bool | None = None) -> None:
    """Offer the sender's held transactions again, in nonce order (so a run of them
    is admitted in one pass once the missing nonce arrives); ``caught_up``, if the
    caller knows it: is_caught_up now."""
    held_txs = core.mempool.held_from(sender)
    if not held_txs:
        return
    if caught_up is None:
        caught_up = core.is_caught_up(core.now_ms)
    for held in held_txs:
        core.mempool.release(held.entry.tx_id)
        _offer(core, held.entry, held, caught_up)


def admit(core: "LedgerCore", entry: PendingTx, now_ms: int) -> None:
    """Make ``entry`` pending: undecided (dispatched if it is ours), or, without devices
    (q = 0), accepted at once."""
    core.mempool.add(entry)
    if core.params.q == 0:  # checked at admission (before it was stored): accepted
        votes = TxVotes(entry.tx, entry.reply_to, entry.admitted_ms, settled=True)
        core.accepted[entry.tx_id] = votes
        return
    core.votes[entry.tx_id] = TxVotes(entry.tx, entry.reply_to, entry.admitted_ms)
    if core.peers.mine(entry.tx_id, now_ms):
        core.dispatcher.fresh.append(entry.tx_id)


def reject_pending(core: "LedgerCore", tx_id: bytes, reason: Reason) -> None:
    """Reject an admitted transaction.  If that leaves a hole in its sender's run of
    pending nonces, the later ones are held again (NONCE_GAP): the sender may yet
    fill the hole with another transaction.  A node that is not caught up holds a
    transaction the state refuses (OVERSPEND) instead of rejecting it."""
    if reason is Reason.OVERSPEND and not core.is_caught_up(core.now_ms):
        _hold_again(core, tx_id, Reason.CATCHING_UP)
        return
    entry = _take_pending(core, tx_id)
    if entry is None:
        return
    _answer_rejected(core, entry, reason)
    sender, nonce = entry.tx.sender, entry.tx.nonce
    if nonce >= core.accounts.get(sender, EMPTY_ACCOUNT).nonce:
        for later in core.mempool.later_from_sender(sender, nonce):
            _hold_again(core, later, Reason.NONCE_GAP)


def _hold_again(core: "LedgerCore", tx_id: bytes, reason: Reason) -> None:
    """A pending transaction goes back to being held (and is judged anew if it is
    admitted again)."""
    entry = _take_pending(core, tx_id)
    if entry is None:
        return
    core.mempool.hold(entry, reason, core.now_ms)
    _answer_held(core, entry, reason)


def _take_pending(core: "LedgerCore", tx_id: bytes) -> PendingTx | None:
    """Take ``tx_id`` out of the pending transactions (its votes, and its storage),
    or None if it is not pending."""
    entry = core.mempool.remove(tx_id)
    if entry is None:
        return None
    core.votes.pop(tx_id, None)
    core.accepted.pop(tx_id, None)
    core.forget_pending(tx_id)
    return entry


def expire_undecided(core: "LedgerCore", now_ms: int, caught_up_since: int) -> None:
    """Reject NO_QUORUM what devices left undecided for tx_timeout_ms, counted from when
    the node last caught up, so a node back from a crash first learns what the others
    committed."""
    while core.votes:
        tx_id, votes = next(iter(core.votes.items()))
        if now_ms - max(votes.admitted_ms, caught_up_since) < core.params.tx_timeout_ms:
            break
        reject_pending(core, tx_id, Reason.NO_QUORUM)


def expire_held(core: "LedgerCore", now_ms: int, caught_up_since: int) -> None:
    """Reject NONCE_GAP what was held HOLD_MS for a missing nonce, counted from when the
    node last caught up."""
    expired = [
        tx_id
        for tx_id, held in core.mempool.held.items()
        if held.reason is Reason.NONCE_GAP
        and now_ms - max(held.since_ms, caught_up_since) >= HOLD_MS
    ]
    for tx_id in expired:
        held = core.mempool.release(tx_id)
        if held is not None:
            _answer_rejected(core, held.entry, Reason.NONCE_GAP)


def _detail(core: "LedgerCore", sender: bytes) -> tuple[int, int]:
    """A state-dependent receipt's detail: our committed height, and the nonce we
    need next from ``sender`` there (committed nonce plus its pending run)."""
    return core.tip.height, core.mempool.next_nonce(sender, core.accounts)


def _answer_held(core: "LedgerCore", entry: PendingTx, reason: Reason) -> None:
    detail = _detail(core, entry.tx.sender)
    core.receipts.note_if_mine(
        entry.reply_to, entry.tx_id, ReceiptStatus.HELD, reason, core.now_ms, detail=detail
    )


def _answer_rejected(core: "LedgerCore", entry: PendingTx, reason: Reason) -> None:
    detail = _detail(core, entry.tx.sender) if reason in STATE_REASONS else None
    core.receipts.note_if_mine(
        entry.reply_to, entry.tx_id, ReceiptStatus.REJECTED, reason, core.now_ms, detail=detail
    )
    core.stats.rejected += 1
