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
from micromine.ledger_node.enrollment import OPEN, ApprovalRecord, Enrollment
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
from micromine.protocol.limits import (
    MAX_BLOCK_APPROVALS,
    MAX_BLOCK_FRAUDS,
    MAX_BLOCK_REGISTRATIONS,
)


def apply_block(
    accounts: Mapping[bytes, Account],
    registry: DeviceRegistry,
    tip: ChainTip,
    block: Block,
    params: ChainParams,
    *,
    vesting: Vesting | None = None,
    enrollment: Enrollment = OPEN,
) -> StateChanges:
    """The state transition of one block; raises InvalidBlockError before changing anything.

    ``registry`` is the device registry as of ``tip`` and ``vesting`` the vesting rewards;
    the block's registrations, approvals and bans are recorded by the caller when it
    commits the block (``DeviceRegistry.process_block``).
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
    body_hash = compute_body_hash(
        block.verdicts,
        block.rewards,
        block.registrations,
        approvals=block.approvals,
        frauds=block.frauds,
    )
    if header.body_hash != body_hash:
        raise InvalidBlockError(
            "body_hash does not match the verdicts, rewards, registrations, approvals, frauds"
        )
    if len({tx.id for tx in block.txs}) != len(block.txs):
        raise InvalidBlockError("a transaction appears twice")
    check_registrations(registry, block)
    check_approvals(registry, block, enrollment)
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
    # [REJECT] The state root is the post-state's: accounts, device registry (with its
    # approval records), bans and vesting rewards.
    state_root = compute_post_state_root(
        view,
        registry,
        header.height,
        registered=[hello.device for hello in block.registrations],
        banned=banned,
        approvals=[ApprovalRecord.of(a, header.height) for a in block.approvals],
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


def check_approvals(registry: DeviceRegistry, block: Block, enrollment: Enrollment) -> None:
    """The approval rules that need no signature, and the enrollment policy's rules
    for the block's registrations (enrollment.py)."""
    devices = [approval.device for approval in block.approvals]
    # [REJECT] At most MAX_BLOCK_APPROVALS (the decoder enforces it too).
    if len(devices) > MAX_BLOCK_APPROVALS:  # pragma: no cover - Block refuses more
        raise InvalidBlockError("too many approvals")
    # [REJECT] One approval per device, in device key order (one canonical body per set).
    if devices != sorted(set(devices)):
        raise InvalidBlockError("approvals are not one per device in device key order")
    for approval in block.approvals:
        who = approval.device.hex()[:16]
        # [REJECT] The approval is for this chain.
        if approval.chain_id != block.header.chain_id:
            raise InvalidBlockError(f"approval of {who} for another chain")
        # [REJECT] Its signer is an operator listed in genesis.
        if approval.operator not in enrollment.operators:
            raise InvalidBlockError(f"approval of {who} not by an operator")
        # [REJECT] It is later than the device's latest recorded approval (orders an
        # approve -> revoke -> approve sequence; an old approval cannot be replayed).
        latest = registry.latest_approval(approval.device)
        if latest is not None and approval.timestamp_ms <= latest.timestamp_ms:
            raise InvalidBlockError(f"approval of {who} is not after its latest one")
    decided = {approval.device: approval.approve for approval in block.approvals}
    for hello in block.registrations:
        who = hello.device.hex()[:16]
        status = decided.get(hello.device)
        if status is None:
            latest = registry.latest_approval(hello.device)
            status = None if latest is None else latest.approved
        # [REJECT] A revoked device is not registered (under either policy).
        if status is False:
            raise InvalidBlockError(f"registration of revoked device {who}")
        # [REJECT] Under "approved", only an approved device is registered.
        if enrollment.needs_approval and status is not True:
            raise InvalidBlockError(f"registration of unapproved device {who}")


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
    enrollment: Enrollment = OPEN,
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
    # [REJECT] Each approval is signed by its operator.
    for approval in block.approvals:
        if not is_signature_valid(approval):
            raise InvalidBlockError(f"approval of {approval.device.hex()[:16]} is forged")
    changes = apply_block(
        accounts, registry, tip, block, params, vesting=vesting, enrollment=enrollment
    )
    # [REJECT] Each transaction is signed by its sender, when the chain asks validators
    # to check (ChainParams.recheck_tx_signatures): one verification per transaction per
    # node, the safety net until audits and fraud proofs guard the devices' work.  Last,
    # so that the cheaper rules (entitlement among them) refuse what they can first.
    if params.recheck_tx_signatures:
        for tx in block.txs:
            if not is_signature_valid(tx):
                raise InvalidBlockError(f"tx {tx.id.hex()[:16]} has a bad signature")
    return changes
