"""Building a block from decided transactions: order, apply, reward, commit to it.

Rewards are the mining: the block reward plus the fees of the block's transactions are
shared among the devices whose signed "valid" verdicts in the block justify them, in
proportion to how many of the block's transactions each one judged.  Integer shares
round down; the remainder goes to the device with the most judgements (lowest key on a
tie), so exactly ``pool`` is paid and every node computes the same split.

Only verdicts that may justify a transaction at the block's height count
(``is_justifying``: the device was entitled to judge the batch, against a registry at
most ``assignment_window`` blocks old).  A candidate left with fewer than q of them is
not proposed: it comes back as ``stale`` for the ledger to dispatch again.

A block also registers devices: the signed DeviceHellos of devices not yet registered,
in key order, at most MAX_BLOCK_REGISTRATIONS, and records operators' approvals
(select_approvals); under "approved" enrollment it registers only approved devices.
"""

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from micromine.ledger_node.enrollment import OPEN, ApprovalRecord, Enrollment
from micromine.ledger_node.genesis import ChainParams
from micromine.ledger_node.registry import DeviceRegistry
from micromine.ledger_node.state import (
    Account,
    StateView,
    compute_accounts_root,
    compute_state_root,
    merged,
    process_rewards,
    process_transaction,
)
from micromine.protocol.assignment import is_registry_height_in_window
from micromine.protocol.block import (
    Block,
    BlockHeader,
    CommitSignature,
    Reward,
    compute_body_hash,
    compute_tx_root,
)
from micromine.protocol.codec import sign_commit
from micromine.protocol.crypto import KeyPair
from micromine.protocol.device import DeviceHello
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import MAX_BLOCK_APPROVALS, MAX_BLOCK_REGISTRATIONS
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
    changes: dict[bytes, Account]  # accounts the block changed, post-state
    rejected: tuple[tuple[Transaction, Reason], ...]  # failed the stateful rules
    deferred: tuple[Transaction, ...]  # wait for an earlier nonce of the same sender
    stale: tuple[Transaction, ...]  # fewer than q verdicts still justify it: judge again


def is_justifying(
    verdict: Verdict, height: int, registry: DeviceRegistry, params: ChainParams
) -> bool:
    """May ``verdict`` justify a transaction in a block at ``height``?  Its registry is
    within the window below the block, and its device is entitled to judge its batch
    against that registry (the two verdict rules of verify.apply_block)."""
    return is_registry_height_in_window(
        verdict.registry_height, height, params.assignment_window
    ) and verdict.device in registry.entitled(verdict.batch_id, verdict.registry_height, params.k)


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
    params: ChainParams,
    seal: bool = True,
    approvals: Sequence[DeviceApproval] = (),
    enrollment: Enrollment = OPEN,
) -> BuiltBlock:
    """Apply ``candidates`` in order over ``accounts`` and seal the result.

    ``justification[tx.id]`` holds the verdicts that voted the transaction valid (the
    tally gives at least ``params.q``); those that can no longer justify it at this
    height are left out, and a candidate left with fewer than q is ``stale``.
    ``hellos`` are verified DeviceHellos of devices that want to be registered;
    ``approvals`` verified DeviceApprovals waiting to be recorded.
    """
    timestamp_ms = max(timestamp_ms, tip.timestamp_ms + 1)
    height = tip.height + 1
    usable = {
        tx.id: [v for v in justification[tx.id] if is_justifying(v, height, registry, params)]
        for tx in candidates
    }
    stale = tuple(tx for tx in candidates if len(usable[tx.id]) < params.q)
    stale_ids = {tx.id for tx in stale}
    view = StateView(accounts)
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

    verdicts: dict[bytes, Verdict] = {}
    for tx in included:
        for verdict in usable[tx.id][: params.q]:
            verdicts[verdict.id] = verdict
    ordered_verdicts = tuple(verdicts[key] for key in sorted(verdicts))
    # Rewards follow from the block's own contents, so every node can recompute them.
    judged = compute_judged(included, ordered_verdicts, params.q)
    pool = params.block_reward + sum(tx.fee for tx in included)
    rewards = compute_rewards(pool, judged)
    process_rewards(view, rewards)
    recorded = select_approvals(approvals, registry, enrollment)
    registrations = select_registrations(
        select_enrolled(hellos, registry, recorded, enrollment), registry
    )
    registry_root = registry.root_after(
        (hello.device for hello in registrations),
        height,
        (ApprovalRecord.of(approval, height) for approval in recorded),
    )

    header = BlockHeader(
        chain_id=chain_id,
        height=height,
        prev_hash=tip.hash,
        tx_root=compute_tx_root(included),
        body_hash=compute_body_hash(ordered_verdicts, rewards, registrations, recorded),
        state_root=compute_state_root(
            compute_accounts_root(merged(accounts, view.changes)), registry_root
        ),
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
    )
    return BuiltBlock(block, view.changes, tuple(rejected), tuple(deferred), stale)
