"""The proposer's side of a block: which decided transactions, verdicts, registrations,
approvals and fraud proofs go in it.  What they do to the state, its roots included, is
the state transition's (transition.py), which the proposer runs as validators do.

    build_block(state, proposer=, timestamp_ms=, candidates=, justification=, ...)
                                    -> BuiltBlock: the block, its transition, and what
                                       was left out (rejected, deferred, stale)

Only verdicts that may justify a transaction at the block's height count
(``is_justifying``: the binding rules of verdicts.py, among them the device's
entitlement against a registry at most ``assignment_window`` blocks old, and no ban).
A candidate left with fewer than q of them is not proposed: it comes back as ``stale``
for the ledger to dispatch again.  The block's rewards are the protocol's split of the
block reward and fees over the verdicts it carries (transition.compute_rewards).

A block also registers devices: the signed DeviceHellos of devices not yet registered,
in key order, at most MAX_BLOCK_REGISTRATIONS, and records operators' approvals
(select_approvals); under "approved" enrollment it registers only approved devices.
And a block bans devices: one fraud proof per device not yet banned, in key order, at
most MAX_BLOCK_FRAUDS (``select_frauds``).  The proposer does not use the verdicts of
a device it holds a fraud proof against.  Rewards vest: they are paid into the
devices' vesting entries, released ``reward_vesting_blocks`` later, and burned by a
ban (state.py).
"""

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from micromine.ledger_node.chain.chain_state import ChainState

# Re-exported: storage.py (edited elsewhere) still imports ChainTip from here.
from micromine.ledger_node.chain.chain_state import ChainTip as ChainTip  # noqa: PLC0414
from micromine.ledger_node.chain.enrollment import Enrollment
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import (
    StateChanges,
    StateView,
    process_transaction,
    process_vesting,
)
from micromine.ledger_node.chain.transition import (
    Transition,
    state_transition,
)
from micromine.ledger_node.chain.verdicts import (
    check_fraud_binding,
    check_verdict_binding,
    judged_valid,
)
from micromine.protocol.assignment import ENTITLED_PER_K
from micromine.protocol.block import (
    Block,
    BlockHeader,
    CommitSignature,
    FraudProof,
    compute_body_hash,
    compute_tx_root,
)
from micromine.protocol.codec import sign_commit
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.genesis import ChainParams
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import (
    MAX_BLOCK_APPROVALS,
    MAX_BLOCK_FRAUDS,
    MAX_BLOCK_REGISTRATIONS,
)
from micromine.protocol.messages import Transaction, Verdict

SEAL_ROUND = 1  # the round of a block sealed by its proposer alone (seal=True)
UNKNOWN_ROOT = bytes(32)  # a root of the header until the block's contents are chosen


@dataclass(frozen=True, slots=True)
class BuiltBlock:
    block: Block
    transition: Transition  # what the block does to the state it was built on
    rejected: tuple[tuple[Transaction, Reason], ...]  # failed the stateful rules
    deferred: tuple[Transaction, ...]  # wait for an earlier nonce of the same sender
    stale: tuple[Transaction, ...]  # fewer than q verdicts still justify it: judge again

    @property
    def changes(self) -> StateChanges:
        """Accounts and vesting entries the block changed, post-state."""
        return self.transition.changes


def is_justifying(
    verdict: Verdict, height: int, registry: DeviceRegistry, params: ChainParams
) -> bool:
    """May ``verdict`` justify a transaction in a block at ``height``?  The binding rules
    of the transition (verdicts.check_verdict_binding): its device is not banned, its
    registry is within the window below the block, the device is entitled to judge the
    assignment against that registry, and it judges the assignment's transactions."""
    return check_verdict_binding(verdict, height, registry, params) is None


def select_frauds(
    frauds: Iterable[FraudProof], height: int, registry: DeviceRegistry, params: ChainParams
) -> tuple[FraudProof, ...]:
    """What a block bans: the first proof per device that still holds at ``height`` (its
    verdict in the window, the device not banned), in device key order, at most
    MAX_BLOCK_FRAUDS."""
    by_device: dict[bytes, FraudProof] = {}
    for proof in frauds:
        if (
            proof.device not in by_device
            and check_fraud_binding(proof, height, registry, params) is None
        ):
            by_device[proof.device] = proof
    chosen = sorted(by_device)[:MAX_BLOCK_FRAUDS]
    return tuple(by_device[device] for device in chosen)


def select_registrations(
    hellos: Sequence[DeviceHello], registry: DeviceRegistry
) -> tuple[DeviceHello, ...]:
    """What a block registers: one hello per device not yet registered, in key order,
    at most MAX_BLOCK_REGISTRATIONS."""
    by_device = {hello.device: hello for hello in hellos if hello.device not in registry}
    chosen = sorted(by_device)[:MAX_BLOCK_REGISTRATIONS]
    return tuple(by_device[device] for device in chosen)


def select_approvals(
    approvals: Sequence[DeviceApproval], registry: DeviceRegistry, enrollment: Enrollment
) -> tuple[DeviceApproval, ...]:
    """What a block records: per device the latest (by time) of the verified approvals
    by an operator that is later than the device's recorded one, in key order, at most
    MAX_BLOCK_APPROVALS."""
    by_device: dict[bytes, DeviceApproval] = {}
    for approval in approvals:
        latest = registry.latest_approval(approval.device)
        if approval.operator not in enrollment.operators or (
            latest is not None and approval.timestamp_ms <= latest.timestamp_ms
        ):
            continue
        held = by_device.get(approval.device)
        if held is None or approval.timestamp_ms > held.timestamp_ms:
            by_device[approval.device] = approval
    chosen = sorted(by_device)[:MAX_BLOCK_APPROVALS]
    return tuple(by_device[device] for device in chosen)


def select_enrolled(
    hellos: Sequence[DeviceHello],
    registry: DeviceRegistry,
    approvals: Sequence[DeviceApproval],
    enrollment: Enrollment,
) -> list[DeviceHello]:
    """The hellos the policy lets a block with ``approvals`` register: not revoked,
    and under "approved" approved (transition.check_approvals states the rules)."""
    decided = {approval.device: approval.approve for approval in approvals}
    allowed = []
    for hello in hellos:
        status = decided.get(hello.device)
        if status is None:
            latest = registry.latest_approval(hello.device)
            status = None if latest is None else latest.approved
        if status is True or (status is None and not enrollment.needs_approval):
            allowed.append(hello)
    return allowed


def order_candidates(txs: Sequence[Transaction]) -> list[Transaction]:
    """Deterministic order that respects each sender's nonce sequence."""
    return sorted(txs, key=lambda tx: (tx.sender, tx.nonce, tx.id))


def select_justification(
    candidates: Sequence[Transaction],
    justification: Mapping[bytes, Sequence[Verdict]],
    *,
    height: int,
    registry: DeviceRegistry,
    params: ChainParams,
    liars: set[bytes],
) -> dict[bytes, list[Verdict]]:
    """Per candidate, the verdicts that may justify it in a block at ``height``: bound
    (is_justifying), of no proven liar, judging that very copy valid; at most 2k."""
    # One answer per verdict object: a batch's transactions share their verdicts, and a
    # verdict's id (its encoding hashed) costs more than the check's cache look-up.
    justifies: dict[int, bool] = {}

    def usable_verdict(verdict: Verdict) -> bool:
        known = justifies.get(id(verdict))
        if known is None:
            known = justifies[id(verdict)] = verdict.device not in liars and is_justifying(
                verdict, height, registry, params
            )
        return known

    # What each verdict judged valid (id and signature hash), once per verdict object:
    # a batch's k verdicts each judge all its transactions.
    valid_leaves: dict[int, frozenset[tuple[bytes, bytes]]] = {}

    def judges(verdict: Verdict, leaf: tuple[bytes, bytes]) -> bool:
        found = valid_leaves.get(id(verdict))
        if found is None:
            found = valid_leaves[id(verdict)] = frozenset(judged_valid(verdict))
        return leaf in found

    # Every judge that matched earns (transition.compute_judged), up to the 2k an
    # assignment can entitle; a verdict on another copy of the transaction (another
    # signature) does not justify it.
    most = ENTITLED_PER_K * params.k
    usable: dict[bytes, list[Verdict]] = {}
    for tx in candidates:
        leaf = (tx.id, sha256(tx.signature))
        judging = [v for v in justification[tx.id] if usable_verdict(v) and judges(v, leaf)]
        usable[tx.id] = judging[:most]
    return usable


def build_block(
    state: ChainState,
    *,
    proposer: KeyPair,
    timestamp_ms: int,
    candidates: Sequence[Transaction],
    justification: Mapping[bytes, Sequence[Verdict]],
    hellos: Sequence[DeviceHello] = (),
    frauds: Sequence[FraudProof] = (),
    approvals: Sequence[DeviceApproval] = (),
    seal: bool = True,
) -> BuiltBlock:
    """Choose the next block's contents over ``state``; its rewards and state root are
    those of ``state_transition`` run on it (transition.py: the validators' function).

    ``justification[tx.id]`` holds the verdicts that voted the transaction valid (the
    tally gives at least ``params.q``); those that can no longer justify it at this
    height are left out, and a candidate left with fewer than q is ``stale``.  All that
    are left go in (at most 2k a transaction): every matching judge earns.
    ``hellos`` are verified DeviceHellos of devices that want to be registered;
    ``approvals`` verified DeviceApprovals waiting to be recorded; ``frauds`` verified
    fraud proofs (verify_block's rules) waiting for a block.  Raises InvalidBlockError
    if the chosen contents break a rule (a bug here: the block is not proposed).
    """
    tip, registry, params = state.tip, state.registry, state.params
    timestamp_ms = max(timestamp_ms, tip.timestamp_ms + 1)
    height = tip.height + 1
    chosen_frauds = select_frauds(frauds, height, registry, params)
    # Devices proven liars (this block bans them, or a later one will): their verdicts
    # justify nothing we propose; what is left with fewer than q is judged again.
    liars = {proof.device for proof in frauds}
    usable = select_justification(
        candidates, justification, height=height, registry=registry, params=params, liars=liars
    )
    stale = tuple(tx for tx in candidates if len(usable[tx.id]) < params.q)
    stale_ids = {tx.id for tx in stale}
    # Which candidates fit, tried in order against a scratch overlay with the rule the
    # transition applies (state.process_transaction); the transition applies them again.
    trial = StateView(state.accounts, state.vesting)
    process_vesting(trial, height, params.reward_vesting_blocks)
    included: list[Transaction] = []
    rejected: list[tuple[Transaction, Reason]] = []
    deferred: list[Transaction] = []
    for tx in order_candidates([tx for tx in candidates if tx.id not in stale_ids]):
        if len(included) >= params.max_block_txs:
            deferred.append(tx)
            continue
        reason = process_transaction(trial, tx, timestamp_ms)
        if reason is Reason.OK:
            included.append(tx)
        elif reason is Reason.BAD_NONCE and tx.nonce > trial.get(tx.sender).nonce:
            deferred.append(tx)  # an earlier nonce is still being judged
        else:
            rejected.append((tx, reason))

    # A batch's transactions share their verdicts: each verdict object's id (the hash
    # of its encoding, all its judgements) is computed once, not once per transaction.
    distinct = {id(v): v for tx in included for v in usable[tx.id]}
    verdicts = {verdict.id: verdict for verdict in distinct.values()}
    ordered_verdicts = tuple(verdicts[key] for key in sorted(verdicts))
    recorded = select_approvals(approvals, registry, state.enrollment)
    registrations = select_registrations(
        select_enrolled(hellos, registry, recorded, state.enrollment), registry
    )
    # The contents are chosen: the validators' transition, run on them, gives what they
    # determine (the rewards, the state root); the header commits to the lot.
    header = BlockHeader(
        chain_id=state.chain_id,
        height=height,
        prev_hash=tip.hash,
        tx_root=UNKNOWN_ROOT,
        body_hash=UNKNOWN_ROOT,
        state_root=UNKNOWN_ROOT,
        timestamp_ms=timestamp_ms,
        proposer=proposer.public,
    )
    block = Block(
        header=header,
        txs=tuple(included),
        verdicts=ordered_verdicts,
        rewards=(),
        commit_round=0,
        certificate=(),
        registrations=registrations,
        approvals=recorded,
        frauds=chosen_frauds,
    )
    transition = state_transition(state, block, validate_result=False)
    header = dataclasses.replace(
        header,
        tx_root=compute_tx_root(block.txs),
        body_hash=compute_body_hash(
            block.verdicts,
            transition.rewards,
            block.registrations,
            approvals=block.approvals,
            frauds=block.frauds,
        ),
        state_root=transition.state_root,
    )
    # A single node seals its own block, as a lone validator decides it: in round 1.
    # Under consensus the certificate comes from the precommits; a proposal has none.
    commit_round = 0
    certificate: tuple[CommitSignature, ...] = ()
    if seal:
        commit_round = SEAL_ROUND
        signature = sign_commit(SEAL_ROUND, header.hash, state.chain_id, proposer)
        certificate = (CommitSignature(proposer.public, signature),)
    block = dataclasses.replace(
        block,
        header=header,
        rewards=transition.rewards,
        commit_round=commit_round,
        certificate=certificate,
    )
    return BuiltBlock(block, transition, tuple(rejected), tuple(deferred), stale)
