"""Device assignment in memory: the rendezvous ranking, the registry in chain state, the
block rules that check entitlement and registrations, storage, and the dispatcher.

The rules under test (docs/CONSENSUS.md, "Device assignment"): a verdict justifies a
transaction in a block at height H only if its registry_height r has H - window <= r < H
and its device is among the first 2k of the batch's ranking over the registry at r.

Longer than 400 lines because ranking, registry, entitlement rules, storage and dispatch
are one mechanism, tested end to end in memory.
"""

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from test_ledger_core import CHAIN, NODE, SENDERS, T0, Harness, key, make_harness, tx

from micromine.ledger_node.chain.blocks import build_block
from micromine.ledger_node.chain.chain_state import ChainState, ChainTip
from micromine.ledger_node.chain.enrollment import OPEN
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import (
    Account,
    StateChanges,
    StateView,
    compute_accounts_root,
    compute_state_root,
    compute_vesting_root,
    process_bans,
    process_rewards,
    process_transaction,
    process_vesting,
)
from micromine.ledger_node.chain.transition import (
    InvalidBlockError,
    compute_judged,
    compute_post_state_root,
    compute_rewards,
)
from micromine.ledger_node.chain.verdicts import AssignmentSignatures
from micromine.ledger_node.chain.verify import verify_block
from micromine.ledger_node.core.actions import CommitBlock, Dropped
from micromine.ledger_node.core.ledger import LedgerCore
from micromine.ledger_node.storage import LedgerStore
from micromine.protocol import topics
from micromine.protocol.assignment import (
    ENTITLED_PER_K,
    compute_batch_root,
    compute_entitled,
    is_registry_height_in_window,
    rank_devices,
)
from micromine.protocol.block import (
    Block,
    BlockHeader,
    CommitSignature,
    FraudProof,
    compute_body_hash,
    compute_tx_root,
)
from micromine.protocol.codec import decode, encode, sign, sign_commit
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello
from micromine.protocol.errors import DecodeError
from micromine.protocol.genesis import ChainParams, Genesis
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import MAX_BLOCK_REGISTRATIONS
from micromine.protocol.messages import Assignment, Judgement, Transaction, Verdict, WorkBatch
from micromine.protocol.topics import Channel, Publish

DEVICES = [key(200 + i) for i in range(8)]
LATE = key(300)  # registered at height 50
STRANGER = key(301)  # never registered
TIP_HEIGHT = 100
PARAMS = ChainParams(k=1, q=1)  # entitled: the first 2 of the ranking
VALIDATORS = (NODE.public,)


def hello(device: KeyPair, chain: str = CHAIN) -> DeviceHello:
    return sign(DeviceHello(chain, device.public, "test", 64, T0), device)


def registry_at_tip() -> DeviceRegistry:
    registered = {d.public: 0 for d in DEVICES}
    registered[LATE.public] = 50
    return DeviceRegistry(registered, TIP_HEIGHT)


def batch_id(label: str) -> bytes:
    return sha256(label.encode())


def assignment_for(
    txs: Sequence[Transaction], registry_height: int, seq: int = 1, issuer: KeyPair = NODE
) -> Assignment:
    """A validator's signed assignment of ``txs`` (``issuer`` may be anyone, for tests of
    what a non-validator's assignment is worth)."""
    root = compute_batch_root(txs)
    return sign(Assignment(CHAIN, issuer.public, seq, registry_height, T0 + 10**6, root), issuer)


def assignment_entitling(
    registry: DeviceRegistry, device: KeyPair, txs: Sequence[Transaction], registry_height: int
) -> Assignment:
    """The first assignment of ``txs`` (by seq) whose ranking entitles ``device``."""
    return next(
        a
        for a in (assignment_for(txs, registry_height, seq) for seq in range(1, 500))
        if device.public in registry.entitled(a.id, registry_height, PARAMS.k)
    )


def verdict_on(t: Transaction, device: KeyPair, assignment: Assignment) -> Verdict:
    """``device``'s "valid" on ``t``: the whole batch of an assignment of ``[t]``."""
    judgement = (Judgement.of(t, int(Reason.OK)),)
    return sign(Verdict(CHAIN, device.public, assignment, judgement), device)


def entitled_and_not(registry: DeviceRegistry, a: Assignment) -> tuple[KeyPair, KeyPair]:
    """A device entitled to judge under ``a``, and a registered one that is not."""
    entitled = registry.entitled(a.id, a.registry_height, PARAMS.k)
    by_public = {d.public: d for d in DEVICES}
    inside = next(by_public[d] for d in entitled if d in by_public)
    outside = next(d for d in DEVICES if d.public not in entitled)
    return inside, outside


@dataclasses.dataclass
class Parent:
    accounts: dict[bytes, Account]
    registry: DeviceRegistry
    tip: ChainTip
    vesting: dict[bytes, tuple[tuple[int, int], ...]] = dataclasses.field(default_factory=dict)

    def state(self, params: ChainParams = PARAMS) -> ChainState:
        """The chain state these parts make (sharing them: blocks are only verified)."""
        return ChainState(CHAIN, params, OPEN, self.tip, self.accounts, self.registry, self.vesting)


def parent() -> Parent:
    accounts = {s.public: Account(1_000_000, 0) for s in SENDERS}
    return Parent(accounts, registry_at_tip(), ChainTip(TIP_HEIGHT, sha256(b"tip"), T0))


def assemble(
    p: Parent,
    txs: Sequence[Transaction],
    verdicts: Sequence[Verdict],
    registrations: Sequence[DeviceHello] = (),
    *,
    frauds: Sequence[FraudProof] = (),
    params: ChainParams = PARAMS,
) -> Block:
    """A block over ``p`` consistent in every field (roots, rewards, body hash), whatever
    the verdicts are: so only the rule a test is about can refuse it."""
    height = p.tip.height + 1
    view = StateView(p.accounts, p.vesting)
    process_vesting(view, height, params.reward_vesting_blocks)
    for t in txs:
        assert process_transaction(view, t, T0 + 1) is Reason.OK
    try:
        judged = compute_judged(txs, verdicts, params.q, params.k)
    except InvalidBlockError:  # the block is refused before its rewards are looked at
        judged = Counter()
    rewards = compute_rewards(params.block_reward + sum(t.fee for t in txs), judged)
    process_rewards(view, rewards, height, params.reward_vesting_blocks)
    banned = [proof.device for proof in frauds]
    process_bans(view, banned)
    state_root = compute_post_state_root(
        view, p.registry, height, registered=[h.device for h in registrations], banned=banned
    )
    header = BlockHeader(
        CHAIN,
        height,
        p.tip.hash,
        compute_tx_root(txs),
        compute_body_hash(verdicts, rewards, registrations, frauds=frauds),
        state_root,
        T0 + 1,
        NODE.public,
    )
    return Block(
        header,
        tuple(txs),
        tuple(verdicts),
        rewards,
        0,
        (),
        tuple(registrations),
        frauds=tuple(frauds),
    )


def verify(p: Parent, block: Block, params: ChainParams = PARAMS) -> StateChanges:
    return verify_block(p.state(params), block, validators=VALIDATORS).changes


# ---- the ranking -----------------------------------------------------------------------


def test_the_ranking_is_deterministic_and_depends_on_the_batch_id() -> None:
    devices = [d.public for d in DEVICES]
    first = rank_devices(batch_id("a"), devices)
    assert first == rank_devices(batch_id("a"), list(reversed(devices)))  # order-free
    assert sorted(first) == sorted(devices)
    rankings = {tuple(rank_devices(batch_id(f"batch {i}"), devices)) for i in range(20)}
    assert len(rankings) > 15  # a new batch id, a new ranking
    for k in (1, 2, 3, 4, 5):
        entitled = compute_entitled(batch_id("a"), devices, k)
        assert list(entitled) == first[: ENTITLED_PER_K * k]


def test_the_entitled_set_depends_on_the_registry_height() -> None:
    registry = registry_at_tip()
    # A batch whose ranking over the full registry puts LATE first.
    label = next(
        f"b{i}"
        for i in range(200)
        if registry.entitled(batch_id(f"b{i}"), 50, PARAMS.k)[0] == LATE.public
    )
    before = registry.entitled(batch_id(label), 49, PARAMS.k)
    after = registry.entitled(batch_id(label), 50, PARAMS.k)
    assert LATE.public not in before and after[0] == LATE.public
    assert registry.members_at(49) == sorted(d.public for d in DEVICES)
    assert list(registry.members_at(50)) == [*sorted(d.public for d in DEVICES), LATE.public]
    assert registry.entitled(batch_id(label), 50, PARAMS.k) is after  # memoised
    with pytest.raises(ValueError, match="not known yet"):
        registry.entitled(batch_id(label), TIP_HEIGHT + 1, PARAMS.k)


def test_the_registry_window() -> None:
    assert is_registry_height_in_window(99, 100, 64)
    assert is_registry_height_in_window(36, 100, 64)
    assert not is_registry_height_in_window(35, 100, 64)  # stale
    assert not is_registry_height_in_window(100, 100, 64)  # not committed before the block


def test_the_registry_grows_one_height_at_a_time() -> None:
    registry = DeviceRegistry({DEVICES[0].public: 0}, 0)
    root = registry.root
    registry.process_block(1, [])
    assert registry.root == root and registry.height == 1
    registry.process_block(2, [DEVICES[1].public])
    assert registry.root != root and registry.heights[DEVICES[1].public] == 2
    with pytest.raises(ValueError, match="does not follow"):
        registry.process_block(4, [])
    with pytest.raises(ValueError, match="twice"):
        registry.process_block(3, [DEVICES[0].public])


# ---- verify_block: entitlement -----------------------------------------------------------


def test_a_block_with_entitled_verdicts_is_valid_and_signatures_rechecked_only_if_asked() -> None:
    p = parent()
    t = tx(SENDERS[0], 0)
    a = assignment_for([t], TIP_HEIGHT)
    inside, _ = entitled_and_not(p.registry, a)
    block = assemble(p, [t], [verdict_on(t, inside, a)])
    assert verify(p, block)
    # A transaction with a bad signature, vouched for by an entitled device: refused
    # while the chain has validators re-check signatures (the default), and passed when
    # it leaves them to the devices alone (see docs/CONSENSUS.md).
    forged = dataclasses.replace(tx(SENDERS[1], 0), signature=bytes(64))
    a = assignment_entitling(p.registry, inside, [forged], TIP_HEIGHT)
    block = assemble(p, [forged], [verdict_on(forged, inside, a)])
    with pytest.raises(InvalidBlockError, match="bad signature"):
        verify(p, block)
    assert verify(p, block, dataclasses.replace(PARAMS, recheck_tx_signatures=0))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unregistered device", "not_entitled"),
        ("registered but not entitled", "not_entitled"),
        ("registered after the registry height", "not_entitled"),
        ("stale registry height", "stale_registry"),
        ("future registry height", "stale_registry"),
    ],
)
def test_verify_block_refuses_a_verdict_from_a_device_not_entitled(case: str, message: str) -> None:
    p = parent()
    t = tx(SENDERS[0], 0)
    a = assignment_for([t], TIP_HEIGHT)
    inside, outside = entitled_and_not(p.registry, a)
    stale = TIP_HEIGHT + 1 - PARAMS.assignment_window - 1
    device, assignment = {
        "unregistered device": (STRANGER, a),
        "registered but not entitled": (outside, a),
        "stale registry height": (inside, assignment_for([t], stale)),
        "future registry height": (inside, assignment_for([t], TIP_HEIGHT + 1)),
    }.get(case, (LATE, a))
    if case == "registered after the registry height":
        # An assignment whose ranking puts LATE first over today's registry, ranked
        # against the registry before LATE was registered.
        assignment = next(
            b
            for b in (assignment_for([t], 49, seq) for seq in range(1, 500))
            if rank_devices(b.id, p.registry.members_at(TIP_HEIGHT))[0] == LATE.public
        )
    verdict = verdict_on(t, device, assignment)
    with pytest.raises(InvalidBlockError, match=message):
        verify(p, assemble(p, [t], [verdict]))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("a transaction the assignment does not hold", "tx_root_mismatch"),
        ("another signature on the transaction", "tx_root_mismatch"),
        ("a judgement missing", "tx_root_mismatch"),
        ("judgements out of order", "tx_root_mismatch"),
        ("an assignment by a non-validator", "unknown_issuer"),
        ("an assignment not signed by its issuer", "bad_assignment_signature"),
    ],
)
def test_verify_block_refuses_a_verdict_not_bound_to_a_validators_batch(
    case: str, message: str
) -> None:
    p = parent()
    t, other = tx(SENDERS[0], 0), tx(SENDERS[1], 0)
    a = assignment_for([t, other], TIP_HEIGHT)
    inside, _ = entitled_and_not(p.registry, a)
    judgements = [Judgement.of(t, 0), Judgement.of(other, 0)]
    if case == "a transaction the assignment does not hold":
        judgements[1] = Judgement.of(tx(SENDERS[2], 0), 0)
    elif case == "another signature on the transaction":
        judgements[0] = Judgement.of(dataclasses.replace(t, signature=bytes(64)), 0)
    elif case == "a judgement missing":
        judgements = judgements[:1]
    elif case == "judgements out of order":
        judgements.reverse()
    elif case == "an assignment by a non-validator":
        a = assignment_entitling(p.registry, inside, [t, other], TIP_HEIGHT)
        a = sign(dataclasses.replace(a, issuer=STRANGER.public), STRANGER)
        inside = next(
            d for d in DEVICES if d.public in p.registry.entitled(a.id, TIP_HEIGHT, PARAMS.k)
        )
    else:
        a = dataclasses.replace(a, signature=bytes(64))
    verdict = sign(Verdict(CHAIN, inside.public, a, tuple(judgements)), inside)
    block = assemble(p, [t], [verdict])
    with pytest.raises(InvalidBlockError, match=message):
        verify(p, block)


def test_verify_block_still_refuses_a_forged_verdict_signature() -> None:
    p = parent()
    t = tx(SENDERS[0], 0)
    a = assignment_for([t], TIP_HEIGHT)
    inside, _ = entitled_and_not(p.registry, a)
    verdict = dataclasses.replace(verdict_on(t, inside, a), signature=bytes(64))
    with pytest.raises(InvalidBlockError, match="forged"):
        verify(p, assemble(p, [t], [verdict]))


def test_an_assignment_signature_is_verified_once_for_its_k_verdicts() -> None:
    p = parent()
    t = tx(SENDERS[0], 0)
    a = assignment_for([t], TIP_HEIGHT)
    entitled = set(p.registry.entitled(a.id, TIP_HEIGHT, PARAMS.k))
    verdicts = [verdict_on(t, d, a) for d in DEVICES if d.public in entitled]
    assert len(verdicts) == 2
    signatures = AssignmentSignatures()
    block = assemble(p, [t], sorted(verdicts, key=lambda v: v.id))
    verify_block(p.state(), block, validators=VALIDATORS, signatures=signatures)
    assert signatures.verifications == 1
    # A copy with another signature is checked on its own, and not remembered as good.
    forged = dataclasses.replace(a, signature=bytes(64))
    assert not signatures.is_valid(forged) and not signatures.is_valid(forged)
    assert signatures.verifications == 3


# ---- verify_block: registrations ---------------------------------------------------------


def test_registrations_are_applied_and_change_the_state_root() -> None:
    p = parent()
    newcomers = sorted([key(400), key(401)], key=lambda d: d.public)
    registering = assemble(p, [], [], [hello(d) for d in newcomers])
    empty = assemble(p, [], [])
    assert verify(p, registering) == verify(p, empty) == StateChanges()
    assert registering.header.state_root != empty.header.state_root
    assert registering.header.body_hash != empty.header.body_hash
    p.registry.process_block(TIP_HEIGHT + 1, [d.public for d in newcomers])
    accounts_root = compute_accounts_root(p.accounts)
    assert registering.header.state_root == compute_state_root(
        accounts_root, p.registry.root, p.registry.bans_root, compute_vesting_root({})
    )
    assert all(p.registry.heights[d.public] == TIP_HEIGHT + 1 for d in newcomers)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bad signature", "forged"),
        ("duplicate", "twice"),
        ("already registered", "already registered"),
        ("out of order", "order"),
        ("another chain", "another chain"),
    ],
)
def test_verify_block_refuses_bad_registrations(case: str, message: str) -> None:
    p = parent()
    low, high = sorted([key(400), key(401)], key=lambda d: d.public)
    registrations = {
        "bad signature": [dataclasses.replace(hello(low), signature=bytes(64))],
        "duplicate": [hello(low), sign(dataclasses.replace(hello(low), timestamp_ms=T0 + 1), low)],
        "already registered": [hello(DEVICES[0])],
        "out of order": [hello(high), hello(low)],
        "another chain": [hello(low, chain="otherchain")],
    }[case]
    with pytest.raises(InvalidBlockError, match=message):
        verify(p, assemble(p, [], [], registrations))


def test_a_block_holds_at_most_max_block_registrations() -> None:
    p = parent()
    hellos = tuple(hello(key(500 + i)) for i in range(MAX_BLOCK_REGISTRATIONS + 1))
    block = assemble(p, [], [])
    with pytest.raises(DecodeError, match="registrations"):
        dataclasses.replace(block, registrations=hellos)
    # build_block takes at most the limit, in key order, leaving out registered ones.
    built = build_block(
        p.state(), proposer=NODE, timestamp_ms=T0 + 1, candidates=[], justification={},
        hellos=[*hellos, hello(DEVICES[0])],
    )  # fmt: skip
    devices = [h.device for h in built.block.registrations]
    assert len(devices) == MAX_BLOCK_REGISTRATIONS and devices == sorted(devices)
    assert DEVICES[0].public not in devices
    assert verify(p, dataclasses.replace(built.block, commit_round=0, certificate=())) == (
        StateChanges()
    )


def test_build_block_leaves_out_a_transaction_whose_verdicts_went_stale() -> None:
    p = parent()
    fresh, old = tx(SENDERS[0], 0), tx(SENDERS[1], 0)
    a = assignment_for([fresh], TIP_HEIGHT)
    inside, _ = entitled_and_not(p.registry, a)
    stale_height = TIP_HEIGHT - PARAMS.assignment_window  # out for block TIP_HEIGHT + 1
    stale = assignment_entitling(p.registry, inside, [old], stale_height)
    built = build_block(
        p.state(), proposer=NODE, timestamp_ms=T0 + 1, candidates=[fresh, old],
        justification={
            fresh.id: [verdict_on(fresh, inside, a)],
            old.id: [verdict_on(old, inside, stale)],
        },
    )  # fmt: skip
    assert built.block.txs == (fresh,) and built.stale == (old,)
    assert verify(p, dataclasses.replace(built.block, commit_round=0, certificate=()))


# ---- storage ---------------------------------------------------------------------------


def test_the_registry_is_stored_and_reloaded(tmp_path: Path) -> None:
    genesis = Genesis(
        chain_id=CHAIN,
        timestamp_ms=T0,
        ledger_nodes=(NODE.public,),
        balances=(),
        devices=tuple(sorted(d.public for d in DEVICES[:2])),
    )
    assert Genesis.from_json(genesis.to_json()) == genesis
    path = tmp_path / "ledger.sqlite"
    store = LedgerStore(path, genesis)
    assert store.registry() == {d.public: 0 for d in DEVICES[:2]}
    state = ChainState.of(
        genesis, tip=store.tip(genesis), accounts=store.accounts(), registered=store.registry()
    )
    newcomer = hello(DEVICES[5])
    built = build_block(
        state, proposer=NODE, timestamp_ms=T0 + 1, candidates=[], justification={},
        hellos=[newcomer],
    )  # fmt: skip
    store.commit_block(built.block, built.changes)
    store.close()
    store = LedgerStore(path, genesis)
    assert store.registry() == {**{d.public: 0 for d in DEVICES[:2]}, DEVICES[5].public: 1}
    assert decode(store.block_bytes(1) or b"", Block).registrations == (newcomer,)
    store.close()


def test_a_core_resumes_with_its_stored_registry() -> None:
    genesis = Genesis(CHAIN, T0, (NODE.public,), ())
    tip = ChainTip(7, sha256(b"tip 7"), T0)
    core = LedgerCore(
        genesis=genesis, key=NODE, rng=random.Random(1), accounts={}, tip=tip,
        registered={DEVICES[0].public: 3}, now_ms=T0,
    )  # fmt: skip
    assert core.registry.height == 7 and DEVICES[0].public in core.registry


# ---- the ledger core: dispatch and tally -------------------------------------------------


def work_batches(h: Harness) -> list[tuple[WorkBatch, bytes]]:
    """(batch, device) for every batch published so far."""
    return [
        (decode(a.payload, WorkBatch), bytes.fromhex(a.topic.rsplit("/", 1)[1]))
        for a in h.actions
        if isinstance(a, Publish) and "/work/" in a.topic
    ]


def test_the_dispatcher_sends_to_k_live_entitled_devices_only() -> None:
    h = make_harness(n_devices=8, k=2, q=2)  # entitled: the first 4 of 8
    h.silent = {h.devices[0].public, h.devices[1].public}  # registered, not live
    lurker = key(77)  # live (heartbeats), never registered
    h.devices.append(lurker)
    h.now += 10_000  # the silent ones time out
    for n in range(6):
        h.submit([encode(tx(s, n)) for s in SENDERS])
        h.heartbeat_all()
        h.tick(100)
    sent = work_batches(h)
    assert sent
    registry, live = h.core.registry, {d.public for d in h.devices} - h.silent
    by_batch: dict[bytes, list[bytes]] = {}
    for batch, device in sent:
        by_batch.setdefault(batch.id, []).append(device)
        assert batch.assignment.registry_height == registry.height
    for batch_id_, given in by_batch.items():
        entitled = registry.entitled(batch_id_, registry.height, 2)
        candidates = [d for d in entitled if d in live and d != lurker.public]
        # k of them, drawn by reputation (all new here: equal weights).
        assert len(given) == min(2, len(candidates)) and set(given) <= set(candidates)
    assert all(device != lurker.public for _, device in sent)


def test_too_few_live_entitled_devices_make_the_dispatcher_try_another_batch_id() -> None:
    h = make_harness(n_devices=5, k=1, q=1)  # entitled: the first 2 of 5
    h.silent = {d.public for d in h.devices[1:]}
    h.now += 10_000
    for n in range(8):
        h.submit([encode(tx(SENDERS[0], n))])
        h.heartbeat_all()
        h.tick(100)
    sent = work_batches(h)
    assert sent and all(device == h.devices[0].public for _, device in sent)
    for batch, device in sent:
        assert device in h.core.registry.entitled(batch.id, batch.assignment.registry_height, 1)
    assert h.core.dispatcher.reissued > 0


def test_a_new_device_is_registered_by_the_next_block_then_gets_work() -> None:
    h = make_harness(n_devices=2, k=3, q=2)
    newcomer = key(88)
    h.devices.append(newcomer)
    h.feed(topics.device_topic(CHAIN, newcomer.public, Channel.HELLO), encode(hello(newcomer)))
    assert h.core.replica.has_work()  # the idle chain has a registration to make
    h.run(20)
    blocks = h.blocks()
    assert [b.registrations for b in blocks] == [(hello(newcomer),)]
    assert h.core.registry.heights[newcomer.public] == blocks[0].height
    assert not h.core.hellos and not h.core.replica.has_work()
    # A hello of a registered device is not a registration.
    h.feed(topics.device_topic(CHAIN, newcomer.public, Channel.HELLO), encode(hello(newcomer)))
    assert not h.core.hellos
    h.submit([encode(tx(SENDERS[0], 0))])
    h.run(20)
    assert any(device == newcomer.public for _, device in work_batches(h))


def foreign_assignment(t: Transaction, registry_height: int) -> Assignment:
    """An assignment of ``[t]`` by another validator (the harness's node is the only one
    in genesis, so: by it, under a seq its dispatcher never reaches)."""
    return assignment_for([t], registry_height, seq=10**6 + registry_height)


def foreign_verdict(h: Harness, t: Transaction, device: KeyPair, registry_height: int) -> Publish:
    """A verdict on a batch some other node issued, whose ranking entitles ``device``, or
    not, as the test needs; returned as the publication a node receives."""
    verdict = verdict_on(t, device, foreign_assignment(t, registry_height))
    return Publish.on(Channel.VERDICTS, topics.verdicts(CHAIN, device.public), encode(verdict))


def test_foreign_verdicts_count_only_from_entitled_devices() -> None:
    h = make_harness(n_devices=6, k=1, q=1, assignment_window=1)
    h.silent = {d.public for d in h.devices}  # our own batches go unanswered
    t = tx(SENDERS[0], 0)
    h.submit([encode(t)])
    height = h.core.registry.height
    entitled = h.core.registry.entitled(foreign_assignment(t, height).id, height, 1)
    outsider = next(d for d in h.devices if d.public not in entitled)
    insider = next(d for d in h.devices if d.public == entitled[0])

    def drops() -> list[str]:
        return [a.reason for a in h.actions if isinstance(a, Dropped)]

    for device, registry_height, reason in [
        (STRANGER, height, "not_entitled"),
        (outsider, height, "not_entitled"),
        (insider, height - 1, "stale_registry"),  # the window is one block
    ]:
        publish = foreign_verdict(h, t, device, registry_height)
        h.feed(publish.topic, publish.payload)
        assert drops()[-1] == reason and t.id in h.core.votes
    assert h.core.stats.dropped["verdict.not_entitled"] == 2
    # One from the registry above our tip is held, not dropped, until we get there.
    publish = foreign_verdict(h, t, insider, height + 1)
    h.feed(publish.topic, publish.payload)
    assert len(drops()) == 3 and t.id in h.core.votes
    publish = foreign_verdict(h, t, insider, height)
    h.feed(publish.topic, publish.payload)
    assert t.id in h.core.accepted  # q = 1


def test_an_accepted_transaction_whose_verdicts_go_stale_is_judged_again() -> None:
    h = make_harness(n_devices=4, assignment_window=1)
    t = tx(SENDERS[0], 0)
    h.submit([encode(t)])
    h.heartbeat_all()
    h.tick(100)
    assert h.answer_work() == 3
    assert t.id in h.core.accepted
    first_height = h.core.registry.height
    # Before our node proposes it, a block from elsewhere (a registration) is decided:
    # the verdicts' registry is now out of the one-block window.
    newcomer = key(99)
    built = build_block(
        h.core.state, proposer=NODE, timestamp_ms=h.now, candidates=[], justification={},
        hellos=[hello(newcomer)], seal=False,
    )  # fmt: skip
    signature = sign_commit(1, built.block.hash, CHAIN, NODE)
    certified = dataclasses.replace(
        built.block, commit_round=1, certificate=(CommitSignature(NODE.public, signature),)
    )
    sync = topics.sync_reply(CHAIN, h.core.replica.reply_to)
    h.feed(sync, encode(certified))
    assert h.core.tip.height == first_height + 1
    assert t.id not in h.core.accepted and t.id in h.core.votes  # judged again
    h.run(30)
    (block,) = [b for b in h.blocks() if b.txs]
    assert block.txs == (t,)
    assert {v.registry_height for v in block.verdicts} == {first_height + 1}
    assert any(isinstance(a, CommitBlock) for a in h.actions)


# ---- the gap that binding closed -------------------------------------------------------


@pytest.mark.parametrize("recheck", [1, 0], ids=["recheck on", "recheck off"])
@pytest.mark.parametrize(
    ("attempt", "problem"),
    [
        ("the sybil's own assignment, seq ground", "unknown_issuer"),
        ("a validator named, its signature made up, seq ground", "bad_assignment_signature"),
        ("a genuine assignment of another batch", "tx_root_mismatch"),
    ],
)
def test_sybil_devices_registered_by_a_proposer_cannot_back_a_theft(
    recheck: int, attempt: str, problem: str
) -> None:
    """Open enrollment lets anyone register devices.  Before assignments were signed, a
    proposer could grind batch ids (a hash per try) until its sybils ranked first and back
    an unsigned theft with their verdicts.  Now a verdict counts only under an assignment
    a validator signed, for exactly the transactions it judges; so the grinding has to be
    of validator signatures, which only a Byzantine validator can make (docs/CONSENSUS.md,
    "Device assignment").  Refused structurally, whatever recheck_tx_signatures is."""
    p = parent()
    sybils = sorted([key(600), key(601)], key=lambda d: d.public)
    registering = assemble(p, [], [], [hello(d) for d in sybils])
    verify(p, registering)  # a valid block: registration is open
    p.registry.process_block(TIP_HEIGHT + 1, [d.public for d in sybils])
    p.tip = ChainTip(TIP_HEIGHT + 1, registering.hash, T0 + 1)
    sybil, height = sybils[0], p.tip.height
    # An unsigned transfer out of a sender's account, vouched for by a sybil.
    theft = Transaction(CHAIN, SENDERS[0].public, sybil.public, 500_000, 0, 0, T0 + 10**9, "")

    def ground(make: Callable[[int], Assignment]) -> Assignment:
        return next(
            a
            for a in (make(seq) for seq in range(1, 10_000))
            if sybil.public in p.registry.entitled(a.id, height, PARAMS.k)
        )

    judgements: tuple[Judgement, ...] = (Judgement.of(theft, int(Reason.OK)),)
    if attempt == "the sybil's own assignment, seq ground":
        assignment = ground(lambda seq: assignment_for([theft], height, seq, issuer=sybil))
    elif attempt == "a validator named, its signature made up, seq ground":
        root = compute_batch_root([theft])
        assignment = ground(
            lambda seq: Assignment(
                CHAIN, NODE.public, seq, height, T0 + 10**6, root, sybil.sign(16, CHAIN, root)
            )
        )
    else:  # the sybil was given real work, and judges the theft under it instead
        honest = tx(SENDERS[1], 0)
        assignment = ground(lambda seq: assignment_for([honest], height, seq))
    verdict = sign(Verdict(CHAIN, sybil.public, assignment, judgements), sybil)
    block = assemble(p, [theft], [verdict])
    block = dataclasses.replace(
        block, header=dataclasses.replace(block.header, timestamp_ms=T0 + 2)
    )
    # The binding rules come before the re-check (which runs last): the same refusal.
    with pytest.raises(InvalidBlockError, match=problem):
        verify(p, block, dataclasses.replace(PARAMS, recheck_tx_signatures=recheck))
