"""Building a block from decided transactions: order, apply, reward, commit to it.

Rewards are the mining: the block reward plus the fees of the block's transactions are
shared among the devices whose signed "valid" verdicts in the block justify them, in
proportion to how many of the block's transactions each one judged.  Integer shares
round down; the remainder goes to the device with the most judgements (lowest key on a
tie), so exactly ``pool`` is paid and every node computes the same split.

Only verdicts that may justify a transaction at the block's height count
(``is_justifying``: the binding rules of verdicts.py, among them the device's
entitlement against a registry at most ``assignment_window`` blocks old, and no ban).
A candidate left with fewer than q of them is not proposed: it comes back as ``stale``
for the ledger to dispatch again.

A block also registers devices: the signed DeviceHellos of devices not yet registered,
in key order, at most MAX_BLOCK_REGISTRATIONS, and records operators' approvals
(select_approvals); under "approved" enrollment it registers only approved devices.
And a block bans devices: one fraud proof per device not yet banned, in key order, at
most MAX_BLOCK_FRAUDS (``select_frauds``).  The proposer does not use the verdicts of
a device it holds a fraud proof against.  Rewards vest: they are paid into the
devices' vesting entries, released ``reward_vesting_blocks`` later, and burned by a
ban (state.py).
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from micromine.ledger_node.enrollment import OPEN, ApprovalRecord, Enrollment
from micromine.ledger_node.genesis import ChainParams
from micromine.ledger_node.registry import DeviceRegistry
from micromine.ledger_node.state import (
    Account,
    StateChanges,
    StateView,
    Vesting,
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
from micromine.ledger_node.verdicts import check_fraud_binding, check_verdict_binding
from micromine.protocol.block import (
    Block,
    BlockHeader,
    CommitSignature,
    FraudProof,
    Reward,
    compute_body_hash,
    compute_tx_root,
)
from micromine.protocol.codec import sign_commit
from micromine.protocol.crypto import KeyPair
from micromine.protocol.device import DeviceHello
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import (
    MAX_BLOCK_APPROVALS,
    MAX_BLOCK_FRAUDS,
    MAX_BLOCK_REGISTRATIONS,
)
from micromine.protocol.messages import Transaction, Verdict

SEAL_ROUND = 1  # the round of a block sealed by its proposer alone (seal=True)


class InvalidBlockError(ValueError):
    """The block breaks the rule named in the message."""


@dataclass(frozen=True, slots=True)
class ChainTip:
    height: int
    hash: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class BuiltBlock:
    block: Block
    changes: StateChanges  # accounts and vesting entries the block changed, post-state
    rejected: tuple[tuple[Transaction, Reason], ...]  # failed the stateful rules
    deferred: tuple[Transaction, ...]  # wait for an earlier nonce of the same sender
    stale: tuple[Transaction, ...]  # fewer than q verdicts still justify it: judge again


def is_justifying(
    verdict: Verdict, height: int, registry: DeviceRegistry, params: ChainParams
) -> bool:
    """May ``verdict`` justify a transaction in a block at ``height``?  The binding rules
    of verify.apply_block (verdicts.check_verdict_binding): its device is not banned, its
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
    and under "approved" approved (verify.check_approvals states the rules)."""
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


def compute_rewards(pool: int, judged: Mapping[bytes, int]) -> tuple[Reward, ...]:
    """Split ``pool`` by judgement counts; see the module docstring."""
    total = sum(judged.values())
    if pool == 0 or total == 0:
        return ()
    shares = {device: pool * count // total for device, count in judged.items()}
    top = min(judged, key=lambda device: (-judged[device], device))
    shares[top] += pool - sum(shares.values())
    return tuple(Reward(device, amount) for device, amount in sorted(shares.items()) if amount)


def compute_judged(
    txs: Sequence[Transaction], verdicts: Sequence[Verdict], q: int
) -> Counter[bytes]:
    """Judgements that earn: per transaction, the q lowest device keys among the block's
    verdicts that judged it valid.  Raises InvalidBlockError when one has fewer than q."""
    valid_devices: defaultdict[bytes, set[bytes]] = defaultdict(set)
    for verdict in verdicts:
        for judgement in verdict.judgements:
            if judgement.reason == Reason.OK:
                valid_devices[judgement.tx_id].add(verdict.device)
    judged: Counter[bytes] = Counter()
    for tx in txs:
        devices = sorted(valid_devices.get(tx.id, ()))[:q]
        if len(devices) < q:
            raise InvalidBlockError(
                f"tx {tx.id.hex()[:16]} has {len(devices)} valid verdicts < q={q}"
            )
        judged.update(devices)
    return judged


def order_candidates(txs: Sequence[Transaction]) -> list[Transaction]:
    """Deterministic order that respects each sender's nonce sequence."""
    return sorted(txs, key=lambda tx: (tx.sender, tx.nonce, tx.id))


def build_block(
    *,
    tip: ChainTip,
    chain_id: str,
    timestamp_ms: int,
    proposer: KeyPair,
    accounts: Mapping[bytes, Account],
    registry: DeviceRegistry,
    candidates: Sequence[Transaction],
    justification: Mapping[bytes, Sequence[Verdict]],
    hellos: Sequence[DeviceHello] = (),
    frauds: Sequence[FraudProof] = (),
    vesting: Vesting | None = None,
    params: ChainParams,
    seal: bool = True,
    approvals: Sequence[DeviceApproval] = (),
    enrollment: Enrollment = OPEN,
) -> BuiltBlock:
    """Apply ``candidates`` in order over ``accounts`` and ``vesting`` and seal the result.

    ``justification[tx.id]`` holds the verdicts that voted the transaction valid (the
    tally gives at least ``params.q``); those that can no longer justify it at this
    height are left out, and a candidate left with fewer than q is ``stale``.
    ``hellos`` are verified DeviceHellos of devices that want to be registered;
    ``approvals`` verified DeviceApprovals waiting to be recorded; ``frauds`` verified
    fraud proofs (verify_block's rules) waiting for a block.
    """
    timestamp_ms = max(timestamp_ms, tip.timestamp_ms + 1)
    height = tip.height + 1
    vesting = vesting if vesting is not None else {}
    chosen_frauds = select_frauds(frauds, height, registry, params)
    banning = {proof.device for proof in chosen_frauds}
    # Devices proven liars (this block bans them, or a later one will): their verdicts
    # justify nothing we propose; what is left with fewer than q is judged again.
    liars = {proof.device for proof in frauds}
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

    usable = {tx.id: [v for v in justification[tx.id] if usable_verdict(v)] for tx in candidates}
    stale = tuple(tx for tx in candidates if len(usable[tx.id]) < params.q)
    stale_ids = {tx.id for tx in stale}
    view = StateView(accounts, vesting)
    process_vesting(view, height, params.reward_vesting_blocks)
    included: list[Transaction] = []
    rejected: list[tuple[Transaction, Reason]] = []
    deferred: list[Transaction] = []
    for tx in order_candidates([tx for tx in candidates if tx.id not in stale_ids]):
        if len(included) >= params.max_block_txs:
            deferred.append(tx)
            continue
        reason = process_transaction(view, tx, timestamp_ms)
        if reason is Reason.OK:
            included.append(tx)
        elif reason is Reason.BAD_NONCE and tx.nonce > view.get(tx.sender).nonce:
            deferred.append(tx)  # an earlier nonce is still being judged
        else:
            rejected.append((tx, reason))

    # A batch's transactions share their verdicts: each verdict object's id (the hash
    # of its encoding, all its judgements) is computed once, not once per transaction.
    distinct = {id(v): v for tx in included for v in usable[tx.id][: params.q]}
    verdicts = {verdict.id: verdict for verdict in distinct.values()}
    ordered_verdicts = tuple(verdicts[key] for key in sorted(verdicts))
    # Rewards follow from the block's own contents, so every node can recompute them.
    judged = compute_judged(included, ordered_verdicts, params.q)
    pool = params.block_reward + sum(tx.fee for tx in included)
    rewards = compute_rewards(pool, judged)
    process_rewards(view, rewards, height, params.reward_vesting_blocks)
    process_bans(view, sorted(banning))
    recorded = select_approvals(approvals, registry, enrollment)
    registrations = select_registrations(
        select_enrolled(hellos, registry, recorded, enrollment), registry
    )
    state_root = compute_post_state_root(
        view,
        registry,
        height,
        registered=[hello.device for hello in registrations],
        banned=sorted(banning),
        approvals=[ApprovalRecord.of(approval, height) for approval in recorded],
    )
    header = BlockHeader(
        chain_id=chain_id,
        height=height,
        prev_hash=tip.hash,
        tx_root=compute_tx_root(included),
        body_hash=compute_body_hash(
            ordered_verdicts, rewards, registrations, approvals=recorded, frauds=chosen_frauds
        ),
        state_root=state_root,
        timestamp_ms=timestamp_ms,
        proposer=proposer.public,
    )
    # A single node seals its own block, as a lone validator decides it: in round 1.
    # Under consensus the certificate comes from the precommits; a proposal has none.
    commit_round = 0
    certificate: tuple[CommitSignature, ...] = ()
    if seal:
        commit_round = SEAL_ROUND
        signature = sign_commit(SEAL_ROUND, header.hash, chain_id, proposer)
        certificate = (CommitSignature(proposer.public, signature),)
    block = Block(
        header=header,
        txs=tuple(included),
        verdicts=ordered_verdicts,
        rewards=rewards,
        commit_round=commit_round,
        certificate=certificate,
        registrations=registrations,
        approvals=recorded,
        frauds=chosen_frauds,
    )
    return BuiltBlock(block, view.diff, tuple(rejected), tuple(deferred), stale)
