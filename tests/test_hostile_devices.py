"""Lying devices against the ledger core, in memory: disagreements the ledger settles
itself, audits of what a quorum accepted, and reputation (docs/CONSENSUS.md, "Device
assignment").

Every chain here leaves transaction signatures to the devices (recheck_tx_signatures
0), so what stops a forgery is the tally's own defences, not verify_block's re-check.
"""

import random
from dataclasses import replace

from test_ledger_core import CHAIN, SENDERS, Harness, make_harness, tx

from micromine.ledger_node.devices import (
    NEW_DEVICE_REPUTATION,
    REPUTATION_MEMORY,
    DeviceRecord,
    audit_probability,
    weighted_sample,
)
from micromine.protocol import topics
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
    work = dispatch(h, good)
    batch = work[0][0]
    honest, *liars = (device for _, device in work)
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
    work = dispatch(h, bad)
    batch = work[0][0]
    *liars, honest = (device for _, device in work)
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
