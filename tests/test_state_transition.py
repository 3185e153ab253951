"""One state transition for proposer and validators (ledger_node/chain/transition.py), as
properties over random blocks.

    proposer path    choose the contents (blocks.build_block; or, for a faulty proposer,
                     take them as they come), then run state_transition on a *copy* of
                     the state with validate_result=False for the rewards and roots
    validator path   verify.verify_block on the block, against the original state

Properties, for every block drawn:
* a block the proposer builds passes verify_block, and both paths compute the same
  transition (changes, registrations, approvals, bans, rewards, state root);
* committing it (process_commit) gives a state whose root, recomputed from scratch from
  its parts, is the header's: the roots describe the state that nodes go on with;
* forced contents (valid, or with one defect of each kind: bad nonce, overspend,
  unentitled or too few verdicts, bad registrations, approvals, fraud proofs, wrong
  parent...) are refused by both paths, with the same reason, or accepted by both with
  the same transition;
* a wrong commitment (state root, tx_root, body_hash, rewards) is refused by validators
  and does not change what the proposer path computes; signatures are the validators'
  rules alone;
* neither path changes the state it is given.

Longer than 400 lines because its block generator builds each kind of invalid block, and
the property checks proposer and validator on every one.
"""

import dataclasses
import re
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_device_assignment import assignment_for, hello, verdict_on
from test_ledger_core import CHAIN, NODE, T0, key, tx

from micromine.ledger_node.chain.blocks import UNKNOWN_ROOT, build_block
from micromine.ledger_node.chain.chain_state import ChainState, ChainTip
from micromine.ledger_node.chain.enrollment import ApprovalRecord, Enrollment
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import (
    Account,
    compute_accounts_root,
    compute_state_root,
    compute_vesting_root,
)
from micromine.ledger_node.chain.transition import (
    InvalidBlockError,
    Transition,
    compute_judged,
    compute_rewards,
    process_commit,
    state_transition,
)
from micromine.ledger_node.chain.verify import verify_block
from micromine.protocol.block import (
    Block,
    BlockHeader,
    FraudProof,
    Reward,
    compute_body_hash,
    compute_tx_root,
)
from micromine.protocol.codec import sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.genesis import ChainParams
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Assignment, Judgement, Transaction, Verdict

TIP_HEIGHT = 100
TIP = ChainTip(TIP_HEIGHT, sha256(b"tip 100"), T0)
BLOCK_TIME = T0 + 1
VALIDATORS = (NODE.public,)
# k = 2: a batch's entitled devices are the first 4 of 9 registered; q = 2 verdicts each.
PARAMS = ChainParams(
    k=2, q=2, max_block_txs=4, assignment_window=8, reward_vesting_blocks=2, min_fee=0
)
SENDERS = [key(720 + i) for i in range(4)]
DEVICES = [key(700 + i) for i in range(9)]
BANNED = key(710)  # registered at 0, banned at 90
REVOKED = key(711)  # registered at 0, revoked at 97 (entitled under registries below 97)
NEWCOMERS = [key(750 + i) for i in range(3)]  # not registered; [2] revoked at 50
OPERATOR, NOT_OPERATOR = key(740), key(741)
OPEN = Enrollment("open", frozenset({OPERATOR.public}))
APPROVED = Enrollment("approved", frozenset({OPERATOR.public}))

SETTINGS = settings(
    max_examples=150,
    deadline=None,  # signatures and roots; the first Ed25519 call is slow to warm up
    database=None,  # no files under the work tree
    derandomize=True,  # a fixed seed: the same examples on every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def parent_state(enrollment: Enrollment) -> ChainState:
    """The state at TIP_HEIGHT: funded senders (one with a used nonce), registered
    devices (one banned), a revoked newcomer, and rewards some of which vest at 101."""
    registered = {d.public: 0 for d in (*DEVICES, BANNED, REVOKED)}
    registry = DeviceRegistry(
        registered,
        TIP_HEIGHT,
        banned={BANNED.public: 90},
        approvals=[
            ApprovalRecord(NEWCOMERS[2].public, False, 50, T0),
            ApprovalRecord(REVOKED.public, False, 97, T0),
        ],
    )
    accounts = {s.public: Account(1_000, 0) for s in SENDERS}
    accounts[SENDERS[3].public] = Account(1_000, 2)
    vesting = {
        DEVICES[0].public: ((99, 5), (100, 7)),  # 99 vests at 101, 100 does not
        DEVICES[1].public: ((97, 3),),
    }
    return ChainState(CHAIN, PARAMS, enrollment, TIP, accounts, registry, vesting)


def fingerprint(state: ChainState) -> tuple[Any, ...]:
    """Everything of ``state`` a block may change: to check that nothing did."""
    registry = state.registry
    return (
        state.tip,
        dict(state.accounts),
        dict(state.vesting),
        registry.height,
        dict(registry.heights),
        dict(registry.banned),
        {device: tuple(records) for device, records in registry.approvals.items()},
    )


def state_root_of(state: ChainState) -> bytes:
    """The state root recomputed from the state's parts, as a fresh node would."""
    registry = state.registry
    return compute_state_root(
        compute_accounts_root(state.accounts),
        registry.root,
        registry.bans_root,
        compute_vesting_root(state.vesting),
    )


# ---- messages ----------------------------------------------------------------------------


def entitled(assignment: Assignment, state: ChainState) -> list[KeyPair]:
    """The registered devices the assignment entitles, best first."""
    ranked = state.registry.entitled(assignment.id, assignment.registry_height, PARAMS.k)
    by_public = {d.public: d for d in (*DEVICES, BANNED, REVOKED)}
    return [by_public[d] for d in ranked if d in by_public]


def assignment_entitling(txs: list[Transaction], device: KeyPair, state: ChainState) -> Assignment:
    return next(
        a
        for a in (assignment_for(txs, TIP_HEIGHT, seq) for seq in range(1, 500))
        if device in entitled(a, state)
    )


def verdicts_for(t: Transaction, kind: str, state: ChainState) -> list[Verdict]:
    """Verdicts "valid" on ``t`` (a batch of one): q from entitled devices ("ok"), one
    too few ("few"), one from a registered device not entitled ("unentitled"), q under
    a registry out of the window ("stale"), or q with a banned device among them."""
    height = TIP_HEIGHT - PARAMS.assignment_window if kind == "stale" else TIP_HEIGHT
    a = assignment_for([t], height)
    inside = entitled(a, state)
    chosen = inside[: PARAMS.q]
    if kind == "few":
        chosen = inside[: PARAMS.q - 1]
    elif kind == "unentitled":
        chosen = [*inside[: PARAMS.q - 1], next(d for d in DEVICES if d not in inside)]
    elif kind == "banned":  # entitled before its ban; no ranking holds it since
        chosen = [*inside[: PARAMS.q - 1], BANNED]
    elif kind == "revoked":  # entitled under a registry before its revocation (at 97)
        a = next(
            a
            for a in (assignment_for([t], 96, seq) for seq in range(1, 500))
            if REVOKED in entitled(a, state)
        )
        others = [d for d in entitled(a, state) if d is not REVOKED]
        chosen = [*others[: PARAMS.q - 1], REVOKED]
    elif kind == "padded":  # 2k + 1 judges, under two assignments
        b = assignment_for([t], height, 2)
        extra = [d for d in entitled(b, state) if d not in inside]
        return [*(verdict_on(t, d, a) for d in inside), verdict_on(t, extra[0], b)]
    return [verdict_on(t, d, a) for d in chosen]


def approval(device: KeyPair, approve: bool, at: int, signer: KeyPair = OPERATOR) -> DeviceApproval:
    return sign(DeviceApproval(CHAIN, signer.public, device.public, approve, at), signer)


def forged(nonce: int) -> Transaction:
    """A transfer with a signature its sender never made: what fraud proofs are about."""
    return replace(tx(SENDERS[1], nonce), signature=bytes(64))


def fraud(kind: str, state: ChainState, nonce: int = 7) -> FraudProof:
    """A proof that its device said "valid" on a forgery ("ok"), or one that proves
    nothing the transition accepts: a device not entitled, a judgement "invalid", a
    device banned already."""
    bad = forged(nonce)
    liar = DEVICES[0]
    a = assignment_entitling([bad], liar, state)
    reason = int(Reason.BAD_SIGNATURE) if kind == "not_judged_valid" else int(Reason.OK)
    if kind == "not_entitled":
        liar = next(d for d in DEVICES if d not in entitled(a, state))
    elif kind == "banned":
        liar = BANNED
    judged = (Judgement.of(bad, reason),)
    return FraudProof(sign(Verdict(CHAIN, liar.public, a, judged), liar), bad)


# ---- blocks ------------------------------------------------------------------------------


@dataclass
class Contents:
    """What a proposer puts in a block (the header aside from its commitments)."""

    txs: list[Transaction]
    verdicts: list[Verdict]
    registrations: list[DeviceHello]
    approvals: list[DeviceApproval]
    frauds: list[FraudProof]
    height: int = TIP_HEIGHT + 1
    prev_hash: bytes = TIP.hash
    timestamp_ms: int = BLOCK_TIME


def draft(c: Contents) -> Block:
    """The block as the proposer has it before the transition: roots unknown."""
    header = BlockHeader(
        CHAIN, c.height, c.prev_hash, UNKNOWN_ROOT, UNKNOWN_ROOT, UNKNOWN_ROOT,
        c.timestamp_ms, NODE.public,
    )  # fmt: skip
    verdicts = {v.id: v for v in c.verdicts}
    return Block(
        header, tuple(c.txs), tuple(verdicts[i] for i in sorted(verdicts)), (), 0, (),
        tuple(c.registrations), tuple(c.approvals), tuple(c.frauds),
    )  # fmt: skip


def commit_to(block: Block, rewards: tuple[Reward, ...], state_root: bytes) -> Block:
    """``block`` with ``rewards`` and a header that commits to its body and ``state_root``."""
    body_hash = compute_body_hash(
        block.verdicts, rewards, block.registrations, approvals=block.approvals,
        frauds=block.frauds,
    )  # fmt: skip
    header = replace(
        block.header, tx_root=compute_tx_root(block.txs), body_hash=body_hash,
        state_root=state_root,
    )  # fmt: skip
    return replace(block, header=header, rewards=rewards)


def propose(state: ChainState, c: Contents) -> tuple[Block, Transition | str]:
    """The proposer path: the transition of the draft on a copy of ``state``; the block
    with the commitments it gives, or (refused) with the rewards a proposer would
    compute and no state root, for validators to judge."""
    block = draft(c)
    try:
        transition = state_transition(state.copy(), block, validate_result=False)
    except InvalidBlockError as exc:
        try:
            pool = PARAMS.block_reward + sum(t.fee for t in block.txs)
            judged = compute_judged(block.txs, block.verdicts, PARAMS.q, PARAMS.k)
            rewards = compute_rewards(pool, judged)
        except InvalidBlockError:
            rewards = ()
        return commit_to(block, rewards, UNKNOWN_ROOT), str(exc)
    return commit_to(block, transition.rewards, transition.state_root), transition


def validate(state: ChainState, block: Block) -> Transition | str:
    """The validator path: verify_block against ``state`` (not a copy)."""
    try:
        return verify_block(state, block, validators=VALIDATORS)
    except InvalidBlockError as exc:
        return str(exc)


def check_commit(state: ChainState, block: Block, transition: Transition) -> None:
    """Committing ``block`` gives a state whose root, from scratch, is the header's."""
    after = process_commit(state.copy(), block, transition)
    assert after.tip == ChainTip(block.height, block.hash, block.header.timestamp_ms)
    assert state_root_of(after) == block.header.state_root


# ---- strategies --------------------------------------------------------------------------

# A transaction as drawn: sender, nonce ("next": the sender's next, "gap": one past it,
# "used": one it has used), amount (995 and a fee overspend 1,000), fee, expiry, and
# the kind of its verdicts (verdicts_for).
TxSpec = tuple[int, str, int, int, str, str]

clean_tx_specs = st.tuples(
    st.integers(0, 3), st.just("next"), st.sampled_from((0, 10, 25)), st.integers(0, 5),
    st.just("future"), st.just("ok"),
)  # fmt: skip
any_tx_specs = st.tuples(
    st.integers(0, 3),
    st.sampled_from(("next", "next", "next", "next", "gap", "used")),
    st.sampled_from((10, 10, 10, 0, 995, 2_000)),
    st.integers(0, 5),
    st.sampled_from(("future", "future", "future", "future", "expired")),
    st.sampled_from(("ok", "ok", "ok", "ok", "ok", "few", "unentitled", "stale", "banned")),
)
any_hellos = st.lists(
    st.sampled_from(
        [hello(d) for d in NEWCOMERS] + [hello(DEVICES[0]), hello(NEWCOMERS[0], "otherchain")]
    ),
    max_size=3,
)
any_approvals = st.lists(
    st.sampled_from(
        [
            approval(NEWCOMERS[0], True, T0 + 10),
            approval(NEWCOMERS[1], False, T0 + 10),
            approval(NEWCOMERS[2], True, T0),  # not after its revocation
            approval(NEWCOMERS[2], True, T0 + 20),
            approval(NEWCOMERS[1], True, T0 + 10, NOT_OPERATOR),
            sign(
                DeviceApproval("otherchain", OPERATOR.public, NEWCOMERS[0].public, True, T0 + 10),
                OPERATOR,
            ),
        ]
    ),
    max_size=2,
)
any_frauds = st.lists(
    st.sampled_from(("ok", "not_entitled", "not_judged_valid", "banned")), max_size=2
)
enrollments = st.sampled_from((OPEN, APPROVED))


@st.composite
def forced_contents(
    draw: st.DrawFn,
) -> tuple[list[TxSpec], list[DeviceHello], list[DeviceApproval], list[str]]:
    """Contents as a faulty proposer may force them in: mostly valid (so that the defect
    added to them is what refuses them), sometimes anything."""
    if draw(st.sampled_from((True, True, True, False))):
        specs = draw(st.lists(clean_tx_specs, max_size=3))
        newcomers = draw(st.lists(st.sampled_from(NEWCOMERS[:2]), max_size=2, unique=True))
        newcomers.sort(key=lambda d: d.public)
        # Approved as they register: valid under either policy.
        approved = [approval(d, True, T0 + 10) for d in newcomers]
        proofs = draw(st.lists(st.just("ok"), max_size=1))
        return specs, [hello(d) for d in newcomers], approved, proofs
    specs = draw(st.lists(any_tx_specs, max_size=3))
    return specs, draw(any_hellos), draw(any_approvals), draw(any_frauds)


def make_txs(state: ChainState, specs: list[TxSpec]) -> list[tuple[Transaction, list[Verdict]]]:
    """The transactions ``specs`` describe, signed, each with its verdicts."""
    made = []
    nonces = {s.public: state.accounts[s.public].nonce for s in SENDERS}
    for sender, nonce_kind, amount, fee, expiry, kind in specs:
        account = SENDERS[sender].public
        nonce = nonces[account]
        if nonce_kind == "next":
            nonces[account] += 1
        elif nonce_kind == "gap":
            nonce += 1
        else:
            used = state.accounts[account].nonce
            nonce = used - 1 if used else nonce + 2
        expiry_ms = T0 + 10**9 if expiry == "future" else T0
        t = tx(SENDERS[sender], nonce, amount, fee=fee, expiry_ms=expiry_ms)
        made.append((t, verdicts_for(t, kind, state)))
    return made


# ---- the properties ----------------------------------------------------------------------


@SETTINGS
@given(
    enrollment=enrollments,
    specs=st.lists(any_tx_specs, max_size=7),
    offered=any_hellos,
    approved=any_approvals,
    proofs=any_frauds,
)
def test_a_built_block_passes_and_every_node_computes_its_transition(
    enrollment: Enrollment, specs: list[TxSpec], offered: list[DeviceHello],
    approved: list[DeviceApproval], proofs: list[str],
) -> None:  # fmt: skip
    """Candidates as the tally hands them over (some with a nonce gap, overspent,
    expired, or without q verdicts that can still justify them), registrations,
    approvals and fraud proofs: what the proposer makes of them, validators accept."""
    state = parent_state(enrollment)
    before = fingerprint(state)
    made = make_txs(state, specs)
    justification = {t.id: verdicts for t, verdicts in made}
    candidates = list({t.id: t for t, _ in made}.values())  # the mempool holds each once
    # What the core hands the proposer: hellos and approvals of this chain, fraud proofs
    # that pass verify_block's signature rules (against forgeries).
    built = build_block(
        state.copy(), proposer=NODE, timestamp_ms=BLOCK_TIME, candidates=candidates,
        justification=justification,
        hellos=[h for h in offered if h.chain_id == CHAIN],
        approvals=[a for a in approved if a.chain_id == CHAIN],
        frauds=[fraud(kind, state, 7 + i) for i, kind in enumerate(proofs)],
        seal=False,
    )  # fmt: skip
    block = built.block
    event(f"built: {len(block.txs)} txs, {len(block.registrations)} registrations, "
          f"{len(block.approvals)} approvals, {len(block.frauds)} bans")  # fmt: skip
    assert validate(state, block) == built.transition
    assert state_transition(state, block) == built.transition
    assert fingerprint(state) == before
    check_commit(state, block, built.transition)
    # Nothing chosen is lost: each candidate is in the block or comes back, once.
    left_out = [*(t for t, _ in built.rejected), *built.deferred, *built.stale]
    assert sorted(t.id for t in (*block.txs, *left_out)) == sorted(t.id for t in candidates)


# Each defect a proposer may force into a block, and (part of) the reason it is refused.
DEFECTS = {
    "bad_nonce": "bad_nonce",
    "overspend": "overspend",
    "expired": "expired",
    "unentitled_verdict": "not_entitled",
    "too_few_verdicts": "valid verdicts < q=2",
    "stale_verdicts": "stale_registry",
    "banned_verdict": ": banned",
    "revoked_verdict": ": revoked",
    "copy_with_another_signature": "justifies no transaction of the block",
    "idle_verdict": "justifies no transaction of the block",
    "padded_judges": "valid verdicts > 2k=4",
    "duplicate_tx": "a transaction appears twice",
    "tx_other_chain": "is for another chain",
    "too_many_txs": "too many transactions",
    "registered_again": "is already registered",
    "registrations_out_of_order": "registrations are not in device key order",
    "registered_twice": "a device is registered twice",
    "hello_other_chain": "for another chain",
    "unenrolled_registration": "registration of revoked device",
    "approval_not_by_operator": "not by an operator",
    "approval_not_after": "is not after its latest one",
    "approvals_twice": "approvals are not one per device",
    "approval_other_chain": "for another chain",
    "fraud_not_entitled": "not_entitled",
    "fraud_not_judged_valid": "not_judged_valid",
    "fraud_banned_already": ": banned",
    "frauds_twice": "a device is banned twice",
    "wrong_height": "height 102, expected 101",
    "wrong_prev_hash": "prev_hash is not the tip's hash",
    "timestamp_not_after_parent": "timestamp not after the parent's",
}


def add_defect(state: ChainState, c: Contents, defect: str) -> None:
    """Make ``c`` break the rule ``defect`` names (before any other the contents break,
    where the rules' order allows)."""

    def first_tx(t: Transaction, verdicts: str = "ok") -> None:
        c.txs.insert(0, t)
        c.verdicts += verdicts_for(t, verdicts, state)

    low, high = sorted(NEWCOMERS[:2], key=lambda d: d.public)
    other_chain_approval = sign(
        DeviceApproval("otherchain", OPERATOR.public, NEWCOMERS[0].public, True, T0), OPERATOR
    )
    match defect:
        case "bad_nonce":
            first_tx(tx(SENDERS[2], 3))
        case "overspend":
            first_tx(tx(SENDERS[0], 0, 5_000))
        case "expired":
            first_tx(tx(SENDERS[0], 0, expiry_ms=T0))
        case "unentitled_verdict":
            first_tx(tx(SENDERS[0], 0), "unentitled")
        case "too_few_verdicts":
            first_tx(tx(SENDERS[0], 0), "few")
        case "stale_verdicts":
            first_tx(tx(SENDERS[0], 0), "stale")
        case "banned_verdict":
            first_tx(tx(SENDERS[0], 0), "banned")
        case "revoked_verdict":
            first_tx(tx(SENDERS[0], 0), "revoked")
        case "copy_with_another_signature":
            # A copy of a pending transfer with a garbage signature, carried on the
            # verdicts about the genuine one (its id does not cover the signature).
            genuine = tx(SENDERS[0], 0)
            c.txs.insert(0, replace(genuine, signature=bytes(64)))
            c.verdicts += verdicts_for(genuine, "ok", state)
        case "idle_verdict":
            # A verdict under a fresh assignment of a transaction the block does not carry.
            c.verdicts += verdicts_for(tx(SENDERS[3], 9), "ok", state)[:1]
        case "padded_judges":
            first_tx(tx(SENDERS[0], 0), "padded")
        case "duplicate_tx":
            first_tx(tx(SENDERS[0], 0))
            c.txs.insert(0, tx(SENDERS[0], 0))
        case "tx_other_chain":
            first_tx(tx(SENDERS[0], 0, chain_id="otherchain"))
        case "too_many_txs":
            for nonce in reversed(range(PARAMS.max_block_txs + 1)):
                first_tx(tx(SENDERS[0], nonce))
        case "registered_again":
            c.registrations = [hello(DEVICES[0])]
        case "registrations_out_of_order":
            c.registrations = [hello(high), hello(low)]
        case "registered_twice":
            c.registrations = [hello(low), sign(replace(hello(low), timestamp_ms=T0 + 1), low)]
        case "hello_other_chain":
            c.registrations = [hello(NEWCOMERS[0], "otherchain")]
        case "unenrolled_registration":
            c.registrations = [hello(NEWCOMERS[2])]  # revoked at 50, not approved since
            c.approvals = [a for a in c.approvals if a.device != NEWCOMERS[2].public]
        case "approval_not_by_operator":
            c.approvals = [approval(NEWCOMERS[0], True, T0, NOT_OPERATOR)]
        case "approval_not_after":
            c.approvals = [approval(NEWCOMERS[2], True, T0)]  # its revocation's time
        case "approvals_twice":
            c.approvals = [approval(low, True, T0 + 1), approval(low, False, T0 + 2)]
        case "approval_other_chain":
            c.approvals = [other_chain_approval]
        case "fraud_not_entitled":
            c.frauds = [fraud("not_entitled", state)]
        case "fraud_not_judged_valid":
            c.frauds = [fraud("not_judged_valid", state)]
        case "fraud_banned_already":
            c.frauds = [fraud("banned", state)]
        case "frauds_twice":
            c.frauds = [fraud("ok", state, 7), fraud("ok", state, 8)]
        case "wrong_height":
            c.height = TIP_HEIGHT + 2
        case "wrong_prev_hash":
            c.prev_hash = sha256(b"another parent")
        case "timestamp_not_after_parent":
            c.timestamp_ms = TIP.timestamp_ms
        case "none":
            pass
        case _:  # pragma: no cover - a defect without a case
            raise AssertionError(defect)


@SETTINGS
@given(
    enrollment=enrollments,
    contents=forced_contents(),
    # A third of them without a defect, so that forced contents are accepted too.
    defect=st.one_of(
        st.sampled_from(list(DEFECTS)), st.sampled_from(list(DEFECTS)), st.just("none")
    ),
)
def test_proposer_and_validators_refuse_the_same_blocks_for_the_same_reason(
    enrollment: Enrollment,
    contents: tuple[list[TxSpec], list[DeviceHello], list[DeviceApproval], list[str]],
    defect: str,
) -> None:
    """Contents a faulty proposer forces in, as they come (no selection): both paths
    refuse them with the same reason, or both accept them with the same transition."""
    state = parent_state(enrollment)
    before = fingerprint(state)
    specs, registrations, approved, proofs = contents
    made = make_txs(state, specs)
    txs, verdicts = [t for t, _ in made], [v for _, vs in made for v in vs]
    frauds = [fraud(kind, state, 7 + i) for i, kind in enumerate(proofs)]
    c = Contents(txs, verdicts, registrations, approved, frauds)
    add_defect(state, c, defect)
    block, proposed = propose(state, c)
    validated = validate(state, block)
    assert fingerprint(state) == before
    if isinstance(proposed, str):
        event(f"refused: {re.sub('[0-9a-f]{16}', '...', proposed)}")
        assert validated == proposed
        return
    event("accepted")
    assert defect == "none", f"a block with {defect} was accepted"
    assert validated == proposed
    check_commit(state, block, proposed)


@pytest.mark.parametrize("enrollment", [OPEN, APPROVED], ids=["open", "approved"])
@pytest.mark.parametrize(("defect", "reason"), DEFECTS.items(), ids=list(DEFECTS))
def test_each_defect_alone_is_refused_by_both_paths(
    enrollment: Enrollment, defect: str, reason: str
) -> None:
    state = parent_state(enrollment)
    c = Contents([], [], [], [], [])
    add_defect(state, c, defect)
    block, proposed = propose(state, c)
    assert isinstance(proposed, str) and reason in proposed
    assert validate(state, block) == proposed


COMMITMENTS = ("state_root", "tx_root", "body_hash", "rewards")


@SETTINGS
@given(
    enrollment=enrollments,
    specs=st.lists(clean_tx_specs, min_size=1, max_size=4),
    wrong=st.sampled_from(COMMITMENTS),
    garbage=st.binary(min_size=32, max_size=32),
)
def test_validators_refuse_a_wrong_commitment_the_proposer_path_would_have_computed(
    enrollment: Enrollment, specs: list[TxSpec], wrong: str, garbage: bytes
) -> None:
    state = parent_state(enrollment)
    made = make_txs(state, specs)
    justification = {t.id: verdicts for t, verdicts in made}
    candidates = list({t.id: t for t, _ in made}.values())
    built = build_block(
        state, proposer=NODE, timestamp_ms=BLOCK_TIME, candidates=candidates,
        justification=justification, seal=False,
    )  # fmt: skip
    block, header = built.block, built.block.header
    if wrong == "rewards":
        rewards = (Reward(NODE.public, PARAMS.block_reward),)
        tampered = commit_to(block, rewards, header.state_root)
        expected = "rewards are not the protocol's split"
    else:
        if garbage == getattr(header, wrong):
            return
        tampered = replace(block, header=replace(header, **{wrong: garbage}))
        expected = {
            "state_root": "state_root does not match the post-state",
            "tx_root": "tx_root does not match the transactions",
            "body_hash": "body_hash does not match",
        }[wrong]
    refusal = validate(state, tampered)
    assert isinstance(refusal, str) and refusal.startswith(expected)
    # What the proposer path computes for the tampered block is the true transition.
    assert state_transition(state.copy(), tampered, validate_result=False) == built.transition


@pytest.mark.parametrize(
    ("forgery", "refusal"),
    [
        ("verdict", "is forged: bad_signature"),
        ("registration", "is forged"),
        ("approval", "is forged"),
        ("transaction", "has a bad signature"),
        ("fraud proof against a valid transaction", "transaction_valid"),
    ],
)
def test_signatures_are_the_validators_rules_alone(forgery: str, refusal: str) -> None:
    """Refused by verify_block; the transition (which the proposer also runs on messages
    the core verified as they arrived) does not check signatures."""
    state = parent_state(APPROVED)
    t = tx(SENDERS[0], 0)
    c = Contents([t], verdicts_for(t, "ok", state), [], [], [])
    if forgery == "verdict":
        c.verdicts[0] = replace(c.verdicts[0], signature=bytes(64))
    elif forgery == "registration":
        c.registrations = [replace(hello(NEWCOMERS[0]), signature=bytes(64))]
        c.approvals = [approval(NEWCOMERS[0], True, T0 + 10)]
    elif forgery == "approval":
        c.approvals = [replace(approval(NEWCOMERS[0], True, T0 + 10), signature=bytes(64))]
    elif forgery == "transaction":
        c.txs = [dataclasses.replace(t, signature=bytes(64))]
        c.verdicts = verdicts_for(c.txs[0], "ok", state)
    else:
        honest = tx(SENDERS[1], 0)
        a = assignment_entitling([honest], DEVICES[0], state)
        said = sign(Verdict(CHAIN, DEVICES[0].public, a, (Judgement.of(honest, 0),)), DEVICES[0])
        c.frauds = [FraudProof(said, honest)]
    block, proposed = propose(state, c)
    assert isinstance(proposed, Transition)
    validated = validate(state, block)
    assert isinstance(validated, str) and refusal in validated
