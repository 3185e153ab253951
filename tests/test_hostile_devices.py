"""Lying devices against the ledger, in memory (docs/CONSENSUS.md, "Device assignment"):
disagreements the ledger settles itself, audits of what a quorum accepted, reputation,
fraud proofs on chain (the rules of verify_block, and the core that finds and proposes
them), bans, vesting rewards burned by a ban, and their storage.

Every chain here leaves transaction signatures to the devices (recheck_tx_signatures
0), so what stops a forgery is the tally's own defences, not verify_block's re-check.

Longer than 400 lines because each defence against lying devices (settling, audits,
reputation, fraud proofs, bans, burning) has its scenario here.
"""

import argparse
import random
from dataclasses import replace
from pathlib import Path

import pytest
from framework.protocol_samples import signed_batch
from test_device_assignment import (
    DEVICES,
    PARAMS,
    STRANGER,
    TIP_HEIGHT,
    Parent,
    assemble,
    assignment_entitling,
    assignment_for,
    entitled_and_not,
    parent,
    verdict_on,
    verify,
)
from test_ledger_core import CHAIN, NODE, SENDERS, T0, Harness, make_harness, tx

from micromine.cli.devices import read_devices
from micromine.ledger_node.chain.blocks import build_block
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import (
    compute_accounts_root,
    compute_bans_root,
    compute_state_root,
    compute_vesting_root,
)
from micromine.ledger_node.chain.transition import InvalidBlockError
from micromine.ledger_node.config import LedgerConfig, add_ledger_arguments
from micromine.ledger_node.core.actions import CommitBlock
from micromine.ledger_node.core.devices import (
    NEW_DEVICE_REPUTATION,
    REPUTATION_MEMORY,
    DeviceRecord,
    audit_probability,
    weighted_sample,
)
from micromine.ledger_node.core.ledger import LedgerCore
from micromine.ledger_node.storage import LedgerStore
from micromine.protocol import topics
from micromine.protocol.block import FraudProof
from micromine.protocol.codec import decode, encode, sign
from micromine.protocol.crypto import KeyPair
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.messages import Judgement, Transaction, Verdict, WorkBatch
from micromine.protocol.validation import check_transaction

HONEST, SAYS_VALID, SAYS_INVALID = "honest", "always valid", "always invalid"


def forged(sender_index: int = 1, nonce: int = 0) -> Transaction:
    """A transfer out of a sender's account with a signature it never made."""
    return replace(tx(SENDERS[sender_index], nonce), signature=bytes(64))


def pending_work(h: Harness) -> list[tuple[WorkBatch, KeyPair]]:
    """The batches published since the last call, with the device each went to."""
    work = [p for p in h.published if "/work/" in p.topic]
    h.published = [p for p in h.published if "/work/" not in p.topic]
    by_hex = {d.public.hex(): d for d in h.devices}
    return [(decode(p.payload, WorkBatch), by_hex[p.topic.rsplit("/", 1)[1]]) for p in work]


def verdict(h: Harness, batch: WorkBatch, device: KeyPair, behaviour: str) -> Verdict:
    judgements = []
    for t in batch.txs:
        reason = int(check_transaction(t, CHAIN, h.now))
        if behaviour == SAYS_VALID:
            reason = int(Reason.OK)
        elif behaviour == SAYS_INVALID:
            reason = int(Reason.BAD_SIGNATURE)
        judgements.append(Judgement.of(t, reason))
    return sign(Verdict(CHAIN, device.public, batch.assignment, tuple(judgements)), device)


def deliver(h: Harness, v: Verdict) -> None:
    h.feed(topics.verdicts(CHAIN, v.device), encode(v))


def dispatch(h: Harness, *txs: Transaction) -> list[tuple[WorkBatch, KeyPair]]:
    h.submit([encode(t) for t in txs])
    h.heartbeat_all()
    h.tick(100)
    return pending_work(h)


def one_batch(h: Harness, t: Transaction) -> tuple[WorkBatch, list[KeyPair]]:
    """Submit ``t`` and dispatch it: its batch, and the k devices it went to."""
    work = dispatch(h, t)
    return work[0][0], [device for _, device in work]


def run(h: Harness, behaviours: dict[bytes, str], rounds: int = 40) -> None:
    """Time passes; every device answers every batch it gets, as it behaves."""
    for _ in range(rounds):
        h.heartbeat_all()
        h.tick(100)
        for batch, device in pending_work(h):
            deliver(h, verdict(h, batch, device, behaviours.get(device.public, HONEST)))


def committed(h: Harness) -> set[bytes]:
    return {t.id for b in h.blocks() for t in b.txs}


def without_audits(h: Harness) -> Harness:
    """Every device with a long perfect record and an audit rate of 0, so that audits are
    all but off (probability 1/1026 per transaction) and a test sees the tally alone."""
    h.core.audit_rate = 0.0
    for device in h.devices:
        h.core.devices.records[device.public].agreed = REPUTATION_MEMORY
    return h


# ---- step 2: the ledger settles disagreements ----------------------------------------------


def test_a_forgery_one_device_calls_valid_is_settled_and_rejected() -> None:
    h = make_harness(n_devices=4, k=2, q=2, recheck_tx_signatures=0)
    bad = forged()
    ((batch, first), (_, second)) = dispatch(h, bad)
    deliver(h, verdict(h, batch, first, SAYS_VALID))
    assert bad.id in h.core.votes and h.core.stats.settled == 0
    deliver(h, verdict(h, batch, second, HONEST))  # BAD_SIGNATURE: a disagreement
    assert h.core.stats.settled == 1 and h.core.stats.forged == 1
    assert bad.id not in h.core.votes and bad.id not in h.core.accepted
    assert h.receipts()[bad.id] == (ReceiptStatus.REJECTED, Reason.BAD_SIGNATURE)
    liar, honest = (h.core.devices.records[d.public] for d in (first, second))
    assert (liar.agreed, liar.disagreed, honest.agreed, honest.disagreed) == (0, 1, 1, 0)
    run(h, {first.public: SAYS_VALID})
    assert bad.id not in committed(h)


def test_a_valid_transaction_one_device_calls_invalid_is_settled_and_accepted() -> None:
    """The ledger finds nothing wrong: the "invalid" vote stops counting, and the
    transaction waits for q "valid" votes (here from a third device)."""
    h = make_harness(n_devices=4, k=2, q=2, recheck_tx_signatures=0)
    good = tx(SENDERS[0], 0)
    ((batch, first), (_, second)) = dispatch(h, good)
    deliver(h, verdict(h, batch, first, SAYS_INVALID))
    deliver(h, verdict(h, batch, second, HONEST))
    assert h.core.stats.settled == 1 and h.core.stats.forged == 0
    votes = h.core.votes[good.id]
    assert votes.settled and len(votes.valid) == 1
    run(h, {first.public: SAYS_INVALID})
    assert good.id in committed(h)
    assert h.core.stats.settled == 1  # one check per transaction, however many votes
    assert h.core.devices.records[first.public].disagreed >= 1


def test_q_invalid_votes_do_not_reject_a_settled_transaction() -> None:
    h = make_harness(n_devices=5, k=3, q=2, recheck_tx_signatures=0)
    good = tx(SENDERS[0], 0)
    batch, (honest, *liars) = one_batch(h, good)
    deliver(h, verdict(h, batch, honest, HONEST))
    for liar in liars:  # two "invalid": a quorum, were the transaction not settled
        deliver(h, verdict(h, batch, liar, SAYS_INVALID))
    assert good.id in h.core.votes and h.core.votes[good.id].settled
    run(h, {liar.public: SAYS_INVALID for liar in liars})
    assert good.id in committed(h)


def test_an_invalid_vote_after_acceptance_reopens_a_forgery_before_a_block() -> None:
    """Two colluding devices answer first and reach q; the third, honest, answers before
    a block takes the transaction: the ledger settles it and takes it back."""
    h = without_audits(make_harness(n_devices=5, k=3, q=2, recheck_tx_signatures=0))
    bad = forged()
    batch, (*liars, honest) = one_batch(h, bad)
    for liar in liars:
        deliver(h, verdict(h, batch, liar, SAYS_VALID))
    assert bad.id in h.core.accepted and h.core.stats.audited == 0
    deliver(h, verdict(h, batch, honest, HONEST))
    assert bad.id not in h.core.accepted and h.core.stats.forged == 1
    assert h.core.stats.settled == 1
    assert h.receipts()[bad.id] == (ReceiptStatus.REJECTED, Reason.BAD_SIGNATURE)
    run(h, {liar.public: SAYS_VALID for liar in liars})
    assert bad.id not in committed(h)


# ---- step 3: audits, reputation ----------------------------------------------------------


def test_audit_probability_grows_as_reputation_falls() -> None:
    record = DeviceRecord(b"d")
    assert record.reputation == NEW_DEVICE_REPUTATION == 0.5
    assert audit_probability(0.5, 0.05) == 0.525
    assert audit_probability(1.0, 0.05) == 0.05 and audit_probability(0.0, 0.05) == 1.0
    for _ in range(5000):
        record.record_judgement(agreed=True)
    assert record.agreed + record.disagreed <= REPUTATION_MEMORY  # bounded memory
    assert 0.05 < audit_probability(record.reputation, 0.05) < 0.052
    before = record.reputation
    record.record_judgement(agreed=False)
    assert record.reputation < before
    liar = DeviceRecord(b"l", agreed=10, disagreed=90)
    assert audit_probability(liar.reputation, 0.05) > 0.89  # r = 11/102


def test_reputation_weights_the_draw_among_entitled_devices() -> None:
    rng = random.Random(3)
    items = [b"good", b"poor"]
    draws = [weighted_sample(items, [0.99, 0.05], 1, rng)[0] for _ in range(2000)]
    assert 0.9 < draws.count(b"good") / len(draws) < 0.99
    assert weighted_sample(items, [0.5, 0.5], 2, rng) == items  # all of them, in order


def test_an_audit_catches_a_forgery_colluding_devices_accepted() -> None:
    """Both asked devices lie, so no disagreement shows; the node's audit (certain here:
    audit_rate 1) finds the forgery before any block takes it."""
    h = make_harness(n_devices=4, k=2, q=2, recheck_tx_signatures=0)
    h.core.audit_rate = 1.0
    bad = forged()
    work = dispatch(h, bad)
    for batch, device in work:
        deliver(h, verdict(h, batch, device, SAYS_VALID))
    assert h.core.stats.audited == 1 and h.core.stats.forged == 1
    assert h.receipts()[bad.id] == (ReceiptStatus.REJECTED, Reason.BAD_SIGNATURE)
    assert all(h.core.devices.records[d.public].disagreed == 1 for _, d in work)


def test_a_low_reputation_vouch_is_audited_even_at_audit_rate_0() -> None:
    h = without_audits(make_harness(n_devices=4, k=2, q=2, recheck_tx_signatures=0))
    bad = forged()
    work = dispatch(h, bad)
    for _, device in work:  # a long record of disagreeing: reputation near 0
        h.core.devices.records[device.public].agreed = 0
        h.core.devices.records[device.public].disagreed = REPUTATION_MEMORY
    for batch, device in work:
        deliver(h, verdict(h, batch, device, SAYS_VALID))
    assert h.core.stats.audited == 1 and bad.id not in h.core.accepted


def test_audits_of_trusted_devices_run_at_about_the_audit_rate() -> None:
    h = without_audits(make_harness(n_devices=4, k=2, q=2, recheck_tx_signatures=0))
    h.core.audit_rate = 0.05
    good = [tx(s, n) for s in SENDERS for n in range(50)]
    h.submit([encode(t) for t in good])
    run(h, {}, rounds=120)
    assert committed(h) == {t.id for t in good}
    assert 2 <= h.core.stats.audited <= 25  # 200 transactions at about 5.1%


# ---- step 4: fraud proofs, bans, vesting -------------------------------------------------


def liar_caught(vesting_blocks: int = 64) -> tuple[Harness, KeyPair, Transaction]:
    """A chain where one device earned rewards honestly, then judged a forgery valid next
    to an honest device: the tally settles the disagreement and holds the proof."""
    h = make_harness(
        n_devices=4, k=2, q=2, batch_size=1, recheck_tx_signatures=0,
        reward_vesting_blocks=vesting_blocks,
    )  # fmt: skip
    good = [tx(s, n) for s in SENDERS[:2] for n in range(4)]  # 8 batches: all devices earn
    h.submit([encode(t) for t in good])
    run(h, {}, rounds=40)
    assert committed(h) == {t.id for t in good}
    assert all(d.public in h.core.vesting for d in h.devices)
    bad = forged(2, 0)
    ((batch, first), (_, second)) = dispatch(h, bad)
    deliver(h, verdict(h, batch, first, SAYS_VALID))
    deliver(h, verdict(h, batch, second, HONEST))
    return h, first, bad


def test_a_lie_found_by_settling_becomes_a_fraud_proof_and_a_ban_that_burns_rewards() -> None:
    h, liar, bad = liar_caught()
    assert h.core.stats.forged == 1 and set(h.core.frauds.pending) == {liar.public}
    assert h.core.replica.has_work()  # a proof waiting is work: an idle chain bans too
    earned = sum(a for _, a in h.core.vesting[liar.public])
    assert earned > 0 and liar.public not in h.core.accounts  # earned, not vested yet
    run(h, {liar.public: SAYS_VALID}, rounds=20)
    (banning,) = [b for b in h.blocks() if b.frauds]
    (proof,) = banning.frauds
    assert proof.device == liar.public and proof.tx == bad
    assert h.core.registry.banned == {liar.public: banning.height}
    assert liar.public not in h.core.vesting  # burned
    assert liar.public not in h.core.accounts
    assert not h.core.frauds.pending and not h.core.replica.has_work()
    assert bad.id not in committed(h)


def test_a_banned_device_gets_no_work_and_is_not_heard() -> None:
    h, liar, _ = liar_caught()
    run(h, {liar.public: SAYS_VALID}, rounds=20)
    assert h.core.registry.is_banned(liar.public)
    last_heard = h.core.devices.records[liar.public].last_seen_ms
    h.actions.clear()
    good = [tx(SENDERS[3], 0), tx(SENDERS[3], 1)]
    h.submit([encode(t) for t in good])
    sent_to = set()
    for _ in range(30):
        h.heartbeat_all()
        h.tick(100)
        for batch, device in pending_work(h):
            sent_to.add(device.public)
            deliver(h, verdict(h, batch, device, HONEST))
    assert liar.public not in sent_to and {t.id for t in good} <= committed(h)
    # Its heartbeats are ignored: once its last one ages out, it is never live again.
    h.tick(h.core.params.device_timeout_ms)
    h.heartbeat_all()
    record = h.core.devices.records[liar.public]
    assert record.last_seen_ms == last_heard and not h.core.devices.is_live(record, h.now)
    h.hello_all()
    assert h.core.stats.dropped["hello.banned"] == 1
    assert h.core.stats.dropped["verdict.banned"] == 0
    # A verdict it still sends (on a batch it had before) is dropped, counted.
    t = tx(SENDERS[3], 2)
    stale = sign(
        Verdict(CHAIN, liar.public, verdict_batch(h, t).assignment, (Judgement.of(t, 0),)), liar
    )
    deliver(h, stale)
    assert h.core.stats.dropped["verdict.banned"] == 1


def verdict_batch(h: Harness, t: Transaction) -> WorkBatch:
    return signed_batch(
        NODE, seq=10**6, registry_height=h.core.tip.height, deadline_ms=h.now + 3000,
        txs=(t,), chain_id=CHAIN,
    )  # fmt: skip


def test_a_valid_verdict_after_the_invalid_quorum_is_checked_and_becomes_a_proof() -> None:
    """Two honest devices reject a forgery before the liar answers: no disagreement was
    ever open, but the node checks a transaction before it rejects it on devices'
    verdicts (once), so the liar's late "valid" is a proof at once."""
    h = without_audits(make_harness(n_devices=5, k=3, q=2, recheck_tx_signatures=0))
    bad = forged()
    batch, (*honest, liar) = one_batch(h, bad)
    for device in honest:
        deliver(h, verdict(h, batch, device, HONEST))
    assert h.receipts()[bad.id] == (ReceiptStatus.REJECTED, Reason.BAD_SIGNATURE)
    assert h.core.stats.settled == 1 and h.core.stats.forged == 1
    assert not h.core.frauds.pending
    deliver(h, verdict(h, batch, liar, SAYS_VALID))
    assert set(h.core.frauds.pending) == {liar.public}
    run(h, {liar.public: SAYS_VALID}, rounds=20)
    assert h.core.registry.is_banned(liar.public)


def test_rewards_vest_after_reward_vesting_blocks() -> None:
    h = make_harness(n_devices=3, k=2, q=2, reward_vesting_blocks=2)
    h.submit([encode(tx(SENDERS[0], 0))])
    run(h, {}, rounds=30)
    (paid,) = [b for b in h.blocks() if b.txs]
    earners = {r.device: r.amount for r in paid.rewards}
    assert earners and all(h.core.vesting[d] == ((paid.height, a),) for d, a in earners.items())
    for n in (1, 2):  # two more blocks: spendable from paid.height + 2
        h.submit([encode(tx(SENDERS[n], 0))])
        run(h, {}, rounds=30)
    assert h.core.tip.height >= paid.height + 2
    for device, amount in earners.items():
        assert h.core.accounts[device].balance >= amount
        assert all(earned > paid.height for earned, _ in h.core.vesting.get(device, ()))


# ---- verify_block: the fraud-proof rules ---------------------------------------------------


def proof_against(p: Parent, t: Transaction, reason: int = 0) -> tuple[FraudProof, KeyPair]:
    """An entitled device's signed judgement ``reason`` on ``t``, under a validator's
    assignment of ``[t]``, as a proof."""
    a = assignment_for([t], TIP_HEIGHT)
    device, _ = entitled_and_not(p.registry, a)
    judged = (Judgement.of(t, reason),)
    return FraudProof(sign(Verdict(CHAIN, device.public, a, judged), device), t), device


def test_a_valid_fraud_proof_bans_its_device_and_burns_its_unvested_rewards() -> None:
    p = parent()
    proof, liar = proof_against(p, forged())
    p.vesting = {liar.public: ((TIP_HEIGHT - 70, 5), (TIP_HEIGHT - 3, 7))}
    block = assemble(p, [], [], frauds=[proof])
    changes = verify(p, block)
    # At height 101 the reward of height 31 has vested (31 + 64 <= 101): paid; the one
    # of height 98 has not: burned by the ban.
    assert changes.accounts[liar.public].balance == 5
    assert changes.vesting == {liar.public: ()}
    registry = p.registry
    registry.process_block(TIP_HEIGHT + 1, [], banned=[liar.public])
    assert registry.is_banned(liar.public) and liar.public not in registry.members_at(101)
    assert liar.public in registry.members_at(100)  # the registry at 100 is as it was
    assert block.header.state_root == compute_state_root(
        compute_accounts_root({**p.accounts, **changes.accounts}),
        registry.root,
        compute_bans_root({liar.public: TIP_HEIGHT + 1}),
        compute_vesting_root({}),
    )


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("a valid transaction", "transaction_valid"),
        ("only expired", "transaction_valid"),
        ("a fee below the minimum", "transaction_valid"),
        ("judged invalid", "not_judged_valid"),
        ("another copy of the transaction", "not_judged_valid"),
        ("a device not entitled", "not_entitled"),
        ("a device banned already", "banned"),
        ("a forged verdict signature", "bad_signature"),
        ("an assignment by a non-validator", "unknown_issuer"),
        ("two proofs against one device", "banned twice"),
        ("proofs out of device order", "device key order"),
    ],
)
def test_verify_block_refuses_a_fraud_proof_that_proves_nothing(case: str, problem: str) -> None:
    """No honest device can be framed: every one of these is refused."""
    p = parent()
    bad = forged()
    proof, liar = proof_against(p, bad)
    frauds = [proof]
    params = PARAMS
    if case == "a valid transaction":
        proof, liar = proof_against(p, tx(SENDERS[0], 0))
        frauds = [proof]
    elif case == "only expired":  # clocks differ: expiry proves nothing
        proof, liar = proof_against(p, tx(SENDERS[0], 0, expiry_ms=1))
        frauds = [proof]
    elif case == "a fee below the minimum":  # devices need not know the chain's minimum
        params = replace(PARAMS, min_fee=5)
        frauds = [proof_against(p, tx(SENDERS[0], 0, fee=1))[0]]
    elif case == "judged invalid":
        frauds = [proof_against(p, bad, int(Reason.BAD_SIGNATURE))[0]]
    elif case == "another copy of the transaction":  # an honest "valid" on the real one,
        honest = tx(SENDERS[0], 0)  # framed with a garbage-signed copy of the same id
        frauds = [
            FraudProof(proof_against(p, honest)[0].verdict, replace(honest, signature=bytes(64)))
        ]
    elif case == "a device not entitled":
        a = proof.verdict.assignment
        outsider = entitled_and_not(p.registry, a)[1]
        lie = sign(Verdict(CHAIN, outsider.public, a, proof.verdict.judgements), outsider)
        frauds = [FraudProof(lie, bad)]
    elif case == "a device banned already":
        p.registry = DeviceRegistry(
            dict(p.registry.heights), TIP_HEIGHT, banned={liar.public: TIP_HEIGHT}
        )
    elif case == "a forged verdict signature":
        frauds = [FraudProof(replace(proof.verdict, signature=bytes(64)), bad)]
    elif case == "an assignment by a non-validator":
        a = sign(replace(proof.verdict.assignment, issuer=STRANGER.public), STRANGER)
        device = next(
            d for d in DEVICES if d.public in p.registry.entitled(a.id, TIP_HEIGHT, PARAMS.k)
        )
        frauds = [
            FraudProof(sign(Verdict(CHAIN, device.public, a, (Judgement.of(bad, 0),)), device), bad)
        ]
    elif case == "two proofs against one device":
        again = forged(2)
        a = assignment_entitling(p.registry, liar, [again], TIP_HEIGHT)
        lie = sign(Verdict(CHAIN, liar.public, a, (Judgement.of(again, 0),)), liar)
        frauds = [proof, FraudProof(lie, again)]
    else:
        other = forged(2)
        a = assignment_for([other], TIP_HEIGHT, seq=2)
        device = next(
            d
            for d in DEVICES
            if d.public != liar.public
            and d.public in p.registry.entitled(a.id, TIP_HEIGHT, PARAMS.k)
        )
        second = FraudProof(
            sign(Verdict(CHAIN, device.public, a, (Judgement.of(other, 0),)), device), other
        )
        frauds = sorted([proof, second], key=lambda f: f.device, reverse=True)
    with pytest.raises(InvalidBlockError, match=problem):
        verify(p, assemble(p, [], [], frauds=frauds, params=params), params)


def test_bans_and_vesting_are_stored_and_reloaded(tmp_path: Path) -> None:
    h, liar, _ = liar_caught()
    genesis = h.core.genesis
    store = LedgerStore(tmp_path / "ledger.sqlite", genesis)
    run(h, {liar.public: SAYS_VALID}, rounds=20)
    for block, changes in [(a.block, a.changes) for a in h.actions if isinstance(a, CommitBlock)]:
        store.commit_block(block, changes)
    store_bans = store.bans()
    assert (
        store_bans
        == dict(h.core.registry.banned)
        == {liar.public: next(b.height for b in h.blocks() if b.frauds)}
    )
    assert store.vesting() == h.core.vesting and liar.public not in store.vesting()
    # (The store missed block 1, which registered the devices: the harness made it.)
    resumed = LedgerCore(
        genesis=genesis, key=NODE, rng=random.Random(1), accounts=store.accounts(),
        tip=h.core.tip, registered=dict(h.core.registry.heights), banned=store.bans(),
        vesting=store.vesting(),
    )  # fmt: skip
    assert resumed.registry.is_banned(liar.public) and resumed.vesting == h.core.vesting
    assert resumed.registry.bans_root == h.core.registry.bans_root
    store.close()
    # `micromine devices list` shows the ban (it overrides any operator's decision).
    (row,) = [
        r for r in read_devices(tmp_path / "ledger.sqlite") if r["device"] == liar.public.hex()
    ]
    assert row["status"] == "banned" and row["banned_at"] == store_bans[liar.public]


def test_the_proposer_uses_no_verdict_of_a_device_it_holds_a_proof_against() -> None:
    p = parent()
    proof, liar = proof_against(p, forged())
    t = tx(SENDERS[0], 0)
    vouched = verdict_on(t, liar, assignment_entitling(p.registry, liar, [t], TIP_HEIGHT))
    built = build_block(
        p.state(), proposer=NODE, timestamp_ms=T0 + 1, candidates=[t],
        justification={t.id: [vouched]}, frauds=[proof], seal=False,
    )  # fmt: skip
    assert built.block.frauds == (proof,) and not built.block.txs
    assert built.stale == (t,)  # judged again, by other devices
    assert verify(p, built.block)


def test_the_audit_rate_is_a_local_ledger_setting() -> None:
    parser = argparse.ArgumentParser()
    add_ledger_arguments(parser)
    required = ["--key", "k", "--genesis", "g", "--db", "d"]
    assert LedgerConfig.from_args(parser.parse_args(required)).audit_rate == 0.05
    config = LedgerConfig.from_args(parser.parse_args([*required, "--audit-rate", "0.2"]))
    assert config.audit_rate == 0.2
    with pytest.raises(ValueError, match="audit_rate"):
        LedgerConfig.from_args(parser.parse_args([*required, "--audit-rate", "1.5"]))


def test_the_commit_audit_rate_is_a_local_ledger_setting() -> None:
    parser = argparse.ArgumentParser()
    add_ledger_arguments(parser)
    required = ["--key", "k", "--genesis", "g", "--db", "d"]
    assert LedgerConfig.from_args(parser.parse_args(required)).commit_audit_rate == 0.05
    flags = [*required, "--commit-audit-rate", "1"]
    assert LedgerConfig.from_args(parser.parse_args(flags)).commit_audit_rate == 1.0
    with pytest.raises(ValueError, match="commit_audit_rate"):
        LedgerConfig.from_args(parser.parse_args([*required, "--commit-audit-rate", "-0.1"]))
