"""The honest validity rules for a block, as pure functions over the parent state.

    apply_block(accounts, registry, tip, block, params)  -> the accounts the block
                                                             changes, or raise
    verify_block(..., params=, validators=)              -> apply_block plus the
                                                             signature checks

Every ledger node runs ``verify_block`` on a proposal before prevoting for it, and the
proposer builds blocks (blocks.build_block) that pass it by construction.  Everything
here is deterministic: the same parent state and block give the same answer on every
node, which is what lets n nodes agree on validity.

Transaction signatures are *not* checked here unless the chain asks for it
(``recheck_tx_signatures``): that is the devices' work.  What a node checks instead is
who vouched for each transaction: q "valid" verdicts, each signed by a device that the
chain had registered and that the rendezvous ranking of a validator's signed assignment
entitled to judge it, and each bound to that assignment's transactions
(verdicts.py, protocol/assignment.py, registry.py).  So a node verifies one signature
per verdict (one per device per batch) and one per assignment, not one per transaction.
"""

from collections.abc import Mapping, Sequence

from micromine.ledger_node.blocks import (
    ChainTip,
    InvalidBlockError,
    compute_judged,
    compute_post_state_root,
    compute_rewards,
)
from micromine.ledger_node.genesis import ChainParams
from micromine.ledger_node.registry import DeviceRegistry
from micromine.ledger_node.state import (
    Account,
    StateChanges,
    StateView,
    Vesting,
    process_bans,
    process_rewards,
    process_transaction,
    process_vesting,
)
from micromine.ledger_node.verdicts import (
    AssignmentSignatures,
    check_fraud_binding,
    check_fraud_evidence,
    check_verdict_binding,
    check_verdict_signatures,
)
from micromine.protocol.block import Block, compute_body_hash, compute_tx_root
from micromine.protocol.codec import is_signature_valid
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import MAX_BLOCK_FRAUDS, MAX_BLOCK_REGISTRATIONS


def apply_block(
    accounts: Mapping[bytes, Account],
    registry: DeviceRegistry,
    tip: ChainTip,
    block: Block,
    params: ChainParams,
    *,
    vesting: Vesting | None = None,
) -> StateChanges:
    """The state transition of one block; raises InvalidBlockError before changing anything.

    ``registry`` is the device registry as of ``tip`` and ``vesting`` the vesting rewards;
    the block's registrations and bans are recorded by the caller when it commits the
    block (``DeviceRegistry.process_block``).
    """
    header = block.header
    # [REJECT] The block extends our chain tip.
    if header.height != tip.height + 1:
        raise InvalidBlockError(f"height {header.height}, expected {tip.height + 1}")
    if header.prev_hash != tip.hash:
        raise InvalidBlockError("prev_hash is not the tip's hash")
    if registry.height != tip.height:  # pragma: no cover - a caller's bug, not the block's
        raise ValueError(f"registry at {registry.height} used with tip {tip.height}")
    # [REJECT] Time moves forward.
    if header.timestamp_ms <= tip.timestamp_ms:
        raise InvalidBlockError("timestamp not after the parent's")
    # [REJECT] The header commits to this body.
    if len(block.txs) > params.max_block_txs:
        raise InvalidBlockError("too many transactions")
    if header.tx_root != compute_tx_root(block.txs):
        raise InvalidBlockError("tx_root does not match the transactions")
    body_hash = compute_body_hash(block.verdicts, block.rewards, block.registrations, block.frauds)
    if header.body_hash != body_hash:
        raise InvalidBlockError(
            "body_hash does not match the verdicts, rewards, registrations, frauds"
        )
    if len({tx.id for tx in block.txs}) != len(block.txs):
        raise InvalidBlockError("a transaction appears twice")
    check_registrations(registry, block)
    check_frauds(registry, block, params)
    # [REJECT] Each verdict is bound to an assignment whose registry is in the window,
    # entitles its device, and names exactly the transactions it judges (verdicts.py).
    for verdict in block.verdicts:
        problem = check_verdict_binding(verdict, header.height, registry, params)
        if problem is not None:
            raise InvalidBlockError(
                f"verdict from {verdict.device.hex()[:16]} on batch "
                f"{verdict.batch_id.hex()[:16]}: {problem}"
            )
    # [REJECT] Every transaction is valid against the state, in block order, once the
    # rewards due at this height are spendable.
    view = StateView(accounts, vesting)
    process_vesting(view, header.height, params.reward_vesting_blocks)
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
    process_rewards(view, block.rewards, header.height, params.reward_vesting_blocks)
    banned = [proof.device for proof in block.frauds]
    process_bans(view, banned)
    # [REJECT] The state root is the post-state's: accounts, device registry, bans and
    # vesting rewards.
    registered = [hello.device for hello in block.registrations]
    state_root = compute_post_state_root(
        view, registry, header.height, registered=registered, banned=banned
    )
    if header.state_root != state_root:
        raise InvalidBlockError("state_root does not match the post-state")
    return view.diff


def check_frauds(registry: DeviceRegistry, block: Block, params: ChainParams) -> None:
    """The fraud-proof rules that need no signature (verify_block checks the others)."""
    # [REJECT] At most MAX_BLOCK_FRAUDS, one proof per device, in device key order.
    check_one_per_device(
        [proof.device for proof in block.frauds], MAX_BLOCK_FRAUDS, "banned", "fraud proofs"
    )
    # [REJECT] Each proof's verdict could justify a transaction in this block (so the
    # device is entitled, and not banned already), and judges the proof's transaction,
    # that very signature, valid (verdicts.py).
    for proof in block.frauds:
        problem = check_fraud_binding(proof, block.header.height, registry, params)
        if problem is not None:
            raise InvalidBlockError(f"fraud proof against {proof.device.hex()[:16]}: {problem}")


def check_one_per_device(devices: list[bytes], limit: int, verb: str, what: str) -> None:
    """A block's list of devices (registered, banned): at most ``limit`` (the decoder
    enforces it too), no device twice, in device key order (one canonical body per set)."""
    if len(devices) > limit:  # pragma: no cover - Block refuses more
        raise InvalidBlockError(f"too many {what}")
    if len(set(devices)) != len(devices):
        raise InvalidBlockError(f"a device is {verb} twice in the block")
    if devices != sorted(devices):
        raise InvalidBlockError(f"{what} are not in device key order")


def check_registrations(registry: DeviceRegistry, block: Block) -> None:
    """The registration rules that need no signature (verify_block checks those)."""
    # [REJECT] At most MAX_BLOCK_REGISTRATIONS, no device twice, in device key order.
    check_one_per_device(
        [hello.device for hello in block.registrations],
        MAX_BLOCK_REGISTRATIONS,
        "registered",
        "registrations",
    )
    for hello in block.registrations:
        # [REJECT] The hello is for this chain.
        if hello.chain_id != block.header.chain_id:
            raise InvalidBlockError(f"registration of {hello.device.hex()[:16]} for another chain")
        # [REJECT] The device is not registered already.
        if hello.device in registry:
            raise InvalidBlockError(f"device {hello.device.hex()[:16]} is already registered")


def verify_block(
    accounts: Mapping[bytes, Account],
    registry: DeviceRegistry,
    tip: ChainTip,
    block: Block,
    *,
    params: ChainParams,
    validators: Sequence[bytes],
    signatures: AssignmentSignatures | None = None,
    vesting: Vesting | None = None,
) -> StateChanges:
    """``apply_block`` plus the checks that need signatures; returns the changes.
    ``signatures`` remembers verified assignment signatures across calls."""
    signatures = signatures if signatures is not None else AssignmentSignatures()
    header = block.header
    # [REJECT] The proposer is a validator.
    if header.proposer not in validators:
        raise InvalidBlockError("proposer is not a validator")
    # [REJECT] Each verdict is for this chain and listed once; its assignment is a
    # validator's, signed by it; the verdict is signed by its device (verdicts.py).
    if len({v.id for v in block.verdicts}) != len(block.verdicts):
        raise InvalidBlockError("a verdict appears twice")
    for verdict in block.verdicts:
        if verdict.chain_id != header.chain_id:
            raise InvalidBlockError(f"verdict from {verdict.device.hex()[:16]} is forged")
        problem = check_verdict_signatures(verdict, validators, signatures)
        if problem is not None:
            raise InvalidBlockError(
                f"verdict from {verdict.device.hex()[:16]} is forged: {problem}"
            )
    # [REJECT] Each fraud proof's verdict is signed, under a validator's signed
    # assignment, and its transaction really fails a check that needs neither time
    # nor state (verdicts.py): a device that said "valid" lied.
    for proof in block.frauds:
        problem = check_fraud_evidence(proof, header.chain_id, validators, signatures)
        if problem is not None:
            raise InvalidBlockError(f"fraud proof against {proof.device.hex()[:16]}: {problem}")
    # [REJECT] Each registration is signed by the device it registers.
    for hello in block.registrations:
        if not is_signature_valid(hello):
            raise InvalidBlockError(f"registration of {hello.device.hex()[:16]} is forged")
    # [REJECT] Each transaction is signed by its sender, when the chain asks validators
    # to check (ChainParams.recheck_tx_signatures): one verification per transaction per
    # node, the safety net until audits and fraud proofs guard the devices' work.
    if params.recheck_tx_signatures:
        for tx in block.txs:
            if not is_signature_valid(tx):
                raise InvalidBlockError(f"tx {tx.id.hex()[:16]} has a bad signature")
    return apply_block(accounts, registry, tip, block, params, vesting=vesting)
