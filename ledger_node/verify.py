"""The honest validity rules for a block, as pure functions over the parent state.

    apply_block(accounts, tip, block, params)  -> the accounts the block changes, or raise
    verify_block(..., validators)              -> apply_block plus the signature checks

Every ledger node runs ``verify_block`` on a proposal before prevoting for it, and the
proposer builds blocks (blocks.build_block) that pass it by construction.  Everything
here is deterministic: the same parent state and block give the same answer on every
node, which is what lets n nodes agree on validity.
"""

from collections.abc import Mapping, Sequence

from micromine.ledger_node.blocks import (
    ChainTip,
    InvalidBlockError,
    compute_judged,
    compute_rewards,
)
from micromine.ledger_node.genesis import ChainParams
from micromine.ledger_node.state import (
    Account,
    StateView,
    compute_state_root,
    merged,
    process_rewards,
    process_transaction,
)
from micromine.protocol.block import Block, compute_body_hash, compute_tx_root
from micromine.protocol.codec import is_signature_valid
from micromine.protocol.kinds import Reason


def apply_block(
    accounts: Mapping[bytes, Account], tip: ChainTip, block: Block, params: ChainParams
) -> dict[bytes, Account]:
    """The state transition of one block; raises InvalidBlockError before changing anything."""
    header = block.header
    # [REJECT] The block extends our chain tip.
    if header.height != tip.height + 1:
        raise InvalidBlockError(f"height {header.height}, expected {tip.height + 1}")
    if header.prev_hash != tip.hash:
        raise InvalidBlockError("prev_hash is not the tip's hash")
    # [REJECT] Time moves forward.
    if header.timestamp_ms <= tip.timestamp_ms:
        raise InvalidBlockError("timestamp not after the parent's")
    # [REJECT] The header commits to this body.
    if len(block.txs) > params.max_block_txs:
        raise InvalidBlockError("too many transactions")
    if header.tx_root != compute_tx_root(block.txs):
        raise InvalidBlockError("tx_root does not match the transactions")
    if header.body_hash != compute_body_hash(block.verdicts, block.rewards):
        raise InvalidBlockError("body_hash does not match the verdicts and rewards")
    if len({tx.id for tx in block.txs}) != len(block.txs):
        raise InvalidBlockError("a transaction appears twice")
    # [REJECT] Every transaction is valid against the state, in block order.
    view = StateView(accounts)
    for tx in block.txs:
        if tx.chain_id != header.chain_id:
            raise InvalidBlockError(f"tx {tx.id.hex()[:16]} is for another chain")
        reason = process_transaction(view, tx, header.timestamp_ms)
        if reason is not Reason.OK:
            raise InvalidBlockError(f"tx {tx.id.hex()[:16]}: {reason.name.lower()}")
    # [REJECT] Every transaction is justified by q "valid" verdicts from distinct devices,
    # and the rewards are exactly the block reward plus fees split over those judgements.
    judged = compute_judged(block.txs, block.verdicts, params.q)
    pool = params.block_reward + sum(tx.fee for tx in block.txs)
    if block.rewards != compute_rewards(pool, judged):
        raise InvalidBlockError("rewards are not the protocol's split")
    process_rewards(view, block.rewards)
    # [REJECT] The state root is the post-state's.
    if header.state_root != compute_state_root(merged(accounts, view.changes)):
        raise InvalidBlockError("state_root does not match the post-state")
    return view.changes


def verify_block(
    accounts: Mapping[bytes, Account],
    tip: ChainTip,
    block: Block,
    params: ChainParams,
    validators: Sequence[bytes],
) -> dict[bytes, Account]:
    """``apply_block`` plus the checks that need signatures; returns the changes."""
    header = block.header
    # [REJECT] The proposer is a validator.
    if header.proposer not in validators:
        raise InvalidBlockError("proposer is not a validator")
    # [REJECT] Each transaction is signed by its sender.  Interim rule: until device
    # entitlement is verifiable (docs/CONSENSUS.md, "device assignment"), a Byzantine
    # proposer could back a forged transaction with verdicts from devices it invented,
    # so every node re-checks what the devices checked.  It costs one Ed25519
    # verification per transaction per node.
    for tx in block.txs:
        if not is_signature_valid(tx):
            raise InvalidBlockError(f"tx {tx.id.hex()[:16]} has a bad signature")
    # [REJECT] Each verdict is signed by its device, for this chain, and listed once.
    if len({v.id for v in block.verdicts}) != len(block.verdicts):
        raise InvalidBlockError("a verdict appears twice")
    for verdict in block.verdicts:
        if verdict.chain_id != header.chain_id or not is_signature_valid(verdict):
            raise InvalidBlockError(f"verdict from {verdict.device.hex()[:16]} is forged")
    return apply_block(accounts, tip, block, params)
