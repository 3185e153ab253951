"""The state transition of one block: the one function every node runs on every block.

    state_transition(state, block)  -> Transition   the block's effects, or raise
                                                     InvalidBlockError
    process_commit(state, block, transition) -> ChainState
                                                     the state after a committed block

As in consensus-specs, where the proposer computes its state root by running
``state_transition`` on a copy of its state, there is one copy of the rules:

    proposer     blocks.build_block chooses the contents (transactions, verdicts,
                 registrations, approvals, fraud proofs), then runs state_transition
                 with ``validate_result=False`` for the rewards and the state root
    validators   verify.verify_block: the signature checks, then state_transition
    commit       Replica._commit / LedgerCore.on_block_committed: process_commit with
                 the transition already checked (or state_transition, for a block
                 learned with its certificate), catch-up alike

If the proposer's and the validators' rules could drift apart, the proposer's roots
would differ from the validators' and the chain would halt or fork.

A transition never changes ``state``: the block's account and vesting effects go to an
overlay (state.StateView) and its registrations, approval records and bans are listed in
the Transition; so a refused block leaves no trace (raise before changing anything) and
the proposer and validators can run it on the committed state as on a copy.  Rewards
are the mining: see ``compute_rewards``.  Signatures are *not* checked here (verify.py).
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from micromine.ledger_node.chain.chain_state import ChainState, ChainTip
from micromine.ledger_node.chain.enrollment import ApprovalRecord
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import (
    StateChanges,
    StateView,
    compute_accounts_root,
    compute_state_root,
    compute_vesting_root,
    merged,
    merged_vesting,
    process_bans,
    process_rewards,
    process_transaction,
    process_vesting,
)
from micromine.ledger_node.chain.verdicts import (
    check_fraud_binding,
    check_verdict_binding,
    judged_valid,
)
from micromine.protocol.assignment import ENTITLED_PER_K
from micromine.protocol.block import Block, Reward, compute_body_hash, compute_tx_root
from micromine.protocol.crypto import sha256
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import (
    MAX_BLOCK_APPROVALS,
    MAX_BLOCK_FRAUDS,
    MAX_BLOCK_REGISTRATIONS,
)
from micromine.protocol.messages import Transaction, Verdict


class InvalidBlockError(ValueError):
    """The block breaks the rule named in the message."""


@dataclass(frozen=True, slots=True)
class Transition:
    """What a block does to the state it extends: the post-state as its difference from
    the parent's, and the root that commits to it.  The storage layer writes
    ``changes`` (and the block's registrations, approvals and bans)."""

    height: int
    changes: StateChanges  # accounts and vesting entries the block changed, post-state
    registered: tuple[bytes, ...]  # devices, in key order
    approvals: tuple[ApprovalRecord, ...]
    banned: tuple[bytes, ...]  # devices, in key order
    rewards: tuple[Reward, ...]  # the protocol's split (compute_rewards)
    state_root: bytes


def state_transition(
    state: ChainState, block: Block, *, validate_result: bool = True
) -> Transition:
    """Apply ``block`` to ``state``; raise InvalidBlockError before changing anything.

    ``validate_result=False`` is the proposer's, whose block does not hold yet what its
    contents determine: it leaves out the rules on the header's tx_root and body_hash,
    the block's rewards and the state root, and returns the rewards and root to fill in
    (consensus-specs' ``compute_new_state_root``).  Every other rule applies.
    """
    header, registry, params, tip = block.header, state.registry, state.params, state.tip
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
    if validate_result and header.tx_root != compute_tx_root(block.txs):
        raise InvalidBlockError("tx_root does not match the transactions")
    if validate_result and header.body_hash != compute_body_hash(
        block.verdicts,
        block.rewards,
        block.registrations,
        approvals=block.approvals,
        frauds=block.frauds,
    ):
        raise InvalidBlockError(
            "body_hash does not match the verdicts, rewards, registrations, approvals, frauds"
        )
    if len({tx.id for tx in block.txs}) != len(block.txs):
        raise InvalidBlockError("a transaction appears twice")
    check_registrations(state, block)
    check_approvals(state, block)
    check_frauds(state, block)
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
    view = StateView(state.accounts, state.vesting)
    process_vesting(view, header.height, params.reward_vesting_blocks)
    for tx in block.txs:
        if tx.chain_id != header.chain_id:
            raise InvalidBlockError(f"tx {tx.id.hex()[:16]} is for another chain")
        reason = process_transaction(view, tx, header.timestamp_ms)
        if reason is not Reason.OK:
            raise InvalidBlockError(f"tx {tx.id.hex()[:16]}: {reason.name.lower()}")
    # [REJECT] Every transaction is justified by q to 2k "valid" judgements of that very
    # signature from distinct devices, every verdict justifies one of the block's
    # transactions, and the rewards are exactly the block reward plus fees split over
    # those judgements.
    judged = compute_judged(block.txs, block.verdicts, params.q, params.k)
    rewards = compute_rewards(params.block_reward + sum(tx.fee for tx in block.txs), judged)
    if validate_result and block.rewards != rewards:
        raise InvalidBlockError("rewards are not the protocol's split")
    process_rewards(view, rewards, header.height, params.reward_vesting_blocks)
    # The block's registrations, approval records and bans (the rules above hold them
    # to key order, one per device).
    registered = tuple(hello.device for hello in block.registrations)
    approvals = tuple(ApprovalRecord.of(a, header.height) for a in block.approvals)
    banned = tuple(proof.device for proof in block.frauds)
    process_bans(view, banned)
    # [REJECT] The state root is the post-state's: accounts, device registry (with its
    # approval records), bans and vesting rewards.
    state_root = compute_post_state_root(
        view, registry, header.height, registered=registered, banned=banned, approvals=approvals
    )
    if validate_result and header.state_root != state_root:
        raise InvalidBlockError("state_root does not match the post-state")
    return Transition(header.height, view.diff, registered, approvals, banned, rewards, state_root)


def process_commit(state: ChainState, block: Block, transition: Transition) -> ChainState:
    """The state after the committed ``block``, whose ``transition`` from ``state`` was
    checked.  Spends ``state`` (chain_state.py): its accounts, vesting and registry
    objects are updated in place and carried on (the dispatcher holds the registry)."""
    if (transition.height, transition.state_root) != (block.height, block.header.state_root):
        raise ValueError("the transition is not this block's")  # a caller's bug
    if transition.height != state.tip.height + 1:
        raise ValueError(f"block {transition.height} does not follow {state.tip.height}")
    state.accounts.update(transition.changes.accounts)
    for device, entries in transition.changes.vesting.items():
        if entries:
            state.vesting[device] = entries
        else:
            state.vesting.pop(device, None)
    state.registry.process_block(
        transition.height,
        transition.registered,
        banned=transition.banned,
        approvals=transition.approvals,
    )
    return ChainState(
        chain_id=state.chain_id,
        params=state.params,
        enrollment=state.enrollment,
        tip=ChainTip(block.height, block.hash, block.header.timestamp_ms),
        accounts=state.accounts,
        registry=state.registry,
        vesting=state.vesting,
    )


# ---- rewards ----------------------------------------------------------------------------


def compute_rewards(pool: int, judged: Mapping[bytes, int]) -> tuple[Reward, ...]:
    """Split ``pool`` (the block reward plus the fees of the block's transactions) among
    the devices whose verdicts in the block justify them, in proportion to how many of
    the block's transactions each one judged.  Integer shares round down; the remainder
    goes to the device with the most judgements (lowest key on a tie), so exactly
    ``pool`` is paid and every node computes the same split."""
    total = sum(judged.values())
    if pool == 0 or total == 0:
        return ()
    shares = {device: pool * count // total for device, count in judged.items()}
    top = min(judged, key=lambda device: (-judged[device], device))
    shares[top] += pool - sum(shares.values())
    return tuple(Reward(device, amount) for device, amount in sorted(shares.items()) if amount)


def compute_judged(
    txs: Sequence[Transaction], verdicts: Sequence[Verdict], q: int, k: int
) -> Counter[bytes]:
    """Judgements that earn: per transaction, every device among the block's verdicts
    that judged it valid, that very signature (a judgement names the SHA-256 of the
    signature it checked: a copy of the transaction with another signature was not
    judged).  Every judge whose verdict matched the outcome earns, not the first q to
    arrive: a device that skips the check gains nothing by answering first.

    Raises InvalidBlockError when a transaction has fewer than q judges or more than
    ENTITLED_PER_K * k (no assignment entitles more: a proposer cannot pad a block with
    judges of its own), or when a verdict justifies none of the block's transactions (a
    verdict costs validators two signature checks: none is carried for nothing)."""
    signature_hashes = {tx.id: sha256(tx.signature) for tx in txs}
    valid_devices: defaultdict[bytes, set[bytes]] = defaultdict(set)
    for verdict in verdicts:
        justified = [
            tx_id
            for tx_id, signature_hash in judged_valid(verdict)
            if signature_hashes.get(tx_id) == signature_hash
        ]
        if not justified:
            raise InvalidBlockError(
                f"verdict from {verdict.device.hex()[:16]} on batch "
                f"{verdict.batch_id.hex()[:16]} justifies no transaction of the block"
            )
        for tx_id in justified:
            valid_devices[tx_id].add(verdict.device)
    judged: Counter[bytes] = Counter()
    most = ENTITLED_PER_K * k
    for tx in txs:
        devices = valid_devices.get(tx.id, set())
        if len(devices) < q:
            raise InvalidBlockError(
                f"tx {tx.id.hex()[:16]} has {len(devices)} valid verdicts < q={q}"
            )
        if len(devices) > most:
            raise InvalidBlockError(
                f"tx {tx.id.hex()[:16]} has {len(devices)} valid verdicts > 2k={most}"
            )
        judged.update(devices)
    return judged


def compute_post_state_root(
    view: StateView,
    registry: DeviceRegistry,
    height: int,
    *,
    registered: Iterable[bytes],
    banned: Iterable[bytes],
    approvals: Iterable[ApprovalRecord] = (),
) -> bytes:
    """The state root after the block at ``height``, whose account and vesting effects
    are in ``view`` (over the parent's) and whose registrations, bans and approval
    records are not yet in ``registry``."""
    accounts, vesting = view.base, view.vesting_base
    return compute_state_root(
        compute_accounts_root(merged(accounts, view.changes)),
        registry.root_after(registered, height, approvals),
        registry.bans_root_after(banned, height),
        compute_vesting_root(merged_vesting(vesting, view.vesting_changes)),
    )


# ---- registrations, approvals and fraud proofs ------------------------------------------


def check_frauds(state: ChainState, block: Block) -> None:
    """The fraud-proof rules that need no signature (verify_block checks the others)."""
    # [REJECT] At most MAX_BLOCK_FRAUDS, one proof per device, in device key order.
    check_one_per_device(
        [proof.device for proof in block.frauds], MAX_BLOCK_FRAUDS, "banned", "fraud proofs"
    )
    # [REJECT] Each proof's verdict could justify a transaction in this block (so the
    # device is entitled, and not banned already), and judges the proof's transaction,
    # that very signature, valid (verdicts.py).
    for proof in block.frauds:
        problem = check_fraud_binding(proof, block.header.height, state.registry, state.params)
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


def check_registrations(state: ChainState, block: Block) -> None:
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
        if hello.device in state.registry:
            raise InvalidBlockError(f"device {hello.device.hex()[:16]} is already registered")


def check_approvals(state: ChainState, block: Block) -> None:
    """The approval rules that need no signature, and the enrollment policy's rules
    for the block's registrations (enrollment.py)."""
    registry, enrollment = state.registry, state.enrollment
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
