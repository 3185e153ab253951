"""A decided block committed: the state advanced, and what waited on it settled.

Blocks are agreed by the validators through replica.py (consensus); this module commits
them, in this order: store the block and advance the chain state (the only change to
it, transition.process_commit); forget the registrations and approvals it recorded;
look for forgeries it carries (check_committed); answer its transactions COMMITTED;
reject the pending transactions whose nonce it used and offer its senders' held ones
again; judge again what its verdicts can no longer justify; take the verdicts that
waited for its registry; and publish it if we proposed it.  These functions act on the
``LedgerCore`` they are given.
"""

import hmac
from typing import TYPE_CHECKING

from micromine.ledger_node.chain.state import EMPTY_ACCOUNT
from micromine.ledger_node.chain.transition import Transition, process_commit
from micromine.ledger_node.core.account_feed import get_account_summaries
from micromine.ledger_node.core.actions import Action, CommitBlock
from micromine.ledger_node.core.admission import offer_held, reject_pending
from micromine.ledger_node.core.decisions import forget_stale_verdicts, judge_again, offer_fraud
from micromine.ledger_node.core.registration import settle_approvals
from micromine.ledger_node.core.render import block_to_json
from micromine.ledger_node.core.verdicts import take_early_verdicts
from micromine.protocol import topics
from micromine.protocol.block import Block
from micromine.protocol.codec import encode
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.messages import Transaction
from micromine.protocol.topics import Channel, Publish
from micromine.protocol.validation import check_transaction_objective

if TYPE_CHECKING:
    from micromine.ledger_node.core.ledger import LedgerCore

RECENT_COMMITTED = 100_000  # committed tx ids remembered, for idempotent resubmission


def on_block_committed(
    core: "LedgerCore", block: Block, transition: Transition, now_ms: int, actions: list[Action]
) -> None:
    """A block was decided (by consensus, or learned with its certificate), and
    ``transition`` is its checked state transition: store it, advance the state,
    settle its transactions, and publish it if we proposed it."""
    actions.append(CommitBlock(block, transition.changes))
    core.state = process_commit(core.state, block, transition)
    core.frauds.on_block(block.height + 1, core.registry)
    for device in transition.registered:
        core.hellos.pop(device, None)
    settle_approvals(core, transition.approvals)
    check_committed(core, block)
    _answer_committed(core, block, now_ms)
    _settle_senders(core, block)
    # Verdicts that fell out of the window: their transactions are judged again.
    for tx_id, votes in list(core.accepted.items()):
        forget_stale_verdicts(core, votes)
        if len(votes.valid) < core.params.q:
            judge_again(core, tx_id)
    take_early_verdicts(core, actions)
    core.stats.blocks += 1
    core.stats.committed += len(block.txs)
    if block.header.proposer == core.key.public:  # one publisher per block
        _publish(core, block, actions)


def check_committed(core: "LedgerCore", block: Block) -> None:
    """Look for forgeries a committed block carries, off the path that decided it
    (``forgeries_in``, with our commit_audit_rate share).  A forgery is committed for
    good, but the block's own verdicts that judged it valid are the fraud proofs: the
    next block bans its judges and burns their unvested rewards."""
    for tx in forgeries_in(core, block, sampled=True):
        prove_forged(core, tx, block)


def forgeries_in(core: "LedgerCore", block: Block, *, sampled: bool) -> list[Transaction]:
    """The forged transactions of ``block`` among those our tally never accepted (their
    verdicts never reached us: a proposer's unpublished ones, say) and, if ``sampled``,
    a share ``commit_audit_rate`` of the others, drawn by a hash keyed with our secret
    (devices cannot tell which).  One signature check per transaction looked at; none
    when the chain re-checks every signature on the block's path anyway."""
    params = core.params
    if params.recheck_tx_signatures or params.q == 0:
        return []
    forged = []
    for tx in block.txs:
        votes = core.accepted.get(tx.id)
        if votes is not None and (votes.settled or not sampled or not _picked(core, tx.id)):
            continue
        core.stats.checked_in_blocks += 1
        if check_transaction_objective(tx, core.chain_id) is not Reason.OK:
            forged.append(tx)
    return forged


def prove_forged(core: "LedgerCore", tx: Transaction, block: Block) -> None:
    """``tx``, carried by ``block``, is a forgery: each of the block's verdicts that
    judged it valid is a fraud proof for our next block."""
    core.stats.forged += 1
    core.frauds.note_forged(tx)
    for verdict in core.frauds.judges_of(tx, block.verdicts):
        offer_fraud(core, verdict, tx)


def _picked(core: "LedgerCore", tx_id: bytes) -> bool:
    """Is ``tx_id`` in our commit_audit_rate share?  Keyed with our secret seed."""
    digest = hmac.digest(core.key.seed, b"micromine-commit-audit" + tx_id, "sha256")
    return int.from_bytes(digest[:8], "big") < core.commit_audit_rate * 2**64


def _answer_committed(core: "LedgerCore", block: Block, now_ms: int) -> None:
    """The block's transactions leave the pool (pending or held), are answered COMMITTED,
    and are remembered for a resubmission."""
    for tx in block.txs:
        tx_id = tx.id
        core.accepted.pop(tx_id, None)
        core.votes.pop(tx_id, None)
        entry = core.mempool.remove(tx_id)
        if entry is None and (held := core.mempool.release(tx_id)) is not None:
            entry = held.entry
        if entry is not None:
            core.receipts.note_if_mine(
                entry.reply_to, tx_id, ReceiptStatus.COMMITTED, block.height, now_ms
            )
        core.receipts.adopted.discard(tx_id)  # answered above, or by its owner
        core.recent_committed[tx_id] = block.height
    while len(core.recent_committed) > RECENT_COMMITTED:
        core.recent_committed.popitem(last=False)


def _settle_senders(core: "LedgerCore", block: Block) -> None:
    """For each sender in the block: reject what its used nonces made impossible, and
    offer its held transactions again (what the block unblocked)."""
    for sender in dict.fromkeys(tx.sender for tx in block.txs):  # block order
        # [REJECT] Transactions whose nonce the block used can never apply.
        used_below = core.accounts.get(sender, EMPTY_ACCOUNT).nonce
        for tx_id in core.mempool.pending_below(sender, used_below):
            reject_pending(core, tx_id, Reason.BAD_NONCE)
        offer_held(core, sender)  # what the block unblocked, or made impossible


def _publish(core: "LedgerCore", block: Block, actions: list[Action]) -> None:
    """Publish our own block (binary and JSON) and its rewarded devices' summaries."""
    blocks_topic = topics.blocks(core.chain_id)
    json_topic = topics.blocks_json(core.chain_id)
    actions.append(Publish.on(Channel.BLOCKS, blocks_topic, encode(block)))
    actions.append(Publish.on(Channel.BLOCKS_JSON, json_topic, block_to_json(block)))
    actions.extend(
        get_account_summaries(
            block, core.accounts, core.vesting, core.devices.records, core.key.public
        )
    )
