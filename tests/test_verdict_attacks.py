"""Attacks on the devices' verdicts, played against the shipped ledger core in memory
(issue 14's review; docs/SECURITY.md 6.1).  Each one worked on main at 52ef172:

* q colluders answering "invalid" first got an honest transfer rejected, unchecked;
* "valid" verdicts about a transfer counted for a copy of it with another signature;
* one device key could fill the buffer of verdicts on registries not reached yet;
* a forgery committed on colluders' "valid" verdicts was never looked at again, so
  nobody was banned for it;
* a Byzantine proposer's block with a forgery backed by verdicts it never published
  passed every honest node's checks (with re-checks off).

The block rules that go with them (a judgement counts only for the signature it
checked, every verdict justifies a transaction, at most 2k judges, revocation) are
played as defects in test_state_transition.py; a validator that withholds the work it
owns is the simulator's "withhold" mode (test_consensus_sim.py).

Every chain here leaves transaction signatures to the devices (recheck_tx_signatures 0).
"""

from dataclasses import replace

from test_hostile_devices import (
    SAYS_INVALID,
    SAYS_VALID,
    committed,
    deliver,
    dispatch,
    forged,
    one_batch,
    run,
    verdict,
    without_audits,
)
from test_ledger_core import CHAIN, NODE, SENDERS, T0, Harness, make_harness, tx

from micromine.ledger_node.chain.blocks import build_block
from micromine.ledger_node.chain.verdicts import fraud_proofs_in
from micromine.ledger_node.chain.verify import verify_block
from micromine.ledger_node.core.verdicts import MAX_EARLY_PER_DEVICE
from micromine.protocol import topics
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.block import FraudProof, FraudReport
from micromine.protocol.codec import encode, sign
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.messages import Assignment, Judgement, Transaction, Verdict


def test_q_devices_saying_invalid_cannot_reject_a_valid_transfer_unchecked() -> None:
    """Censorship: two colluders (q = 2) answer "invalid" before the honest third.  The
    node checks the transfer itself before it rejects on device verdicts alone: it
    passes, so their votes stop counting and it goes to devices that judge it."""
    h = without_audits(make_harness(n_devices=6, k=3, q=2, recheck_tx_signatures=0))
    honest = tx(SENDERS[0], 0)
    batch, devices = one_batch(h, honest)
    for device in devices[:2]:
        deliver(h, verdict(h, batch, device, SAYS_INVALID))
    assert h.receipts().get(honest.id, (None,))[0] != ReceiptStatus.REJECTED
    assert h.core.stats.settled == 1  # the node's own check, once
    run(h, {d.public: SAYS_INVALID for d in devices[:2]}, rounds=80)
    assert honest.id in committed(h)
    assert h.receipts()[honest.id][0] == ReceiptStatus.COMMITTED


def test_a_transfer_objectively_invalid_is_still_rejected_on_the_nodes_check() -> None:
    """The check before a rejection does not let a forgery through: q "invalid" on a
    bad signature reject it, with the node's own reason."""
    h = without_audits(make_harness(n_devices=6, k=3, q=2, recheck_tx_signatures=0))
    bad = forged()
    batch, devices = one_batch(h, bad)
    for device in devices[:2]:
        deliver(h, verdict(h, batch, device, SAYS_INVALID))
    assert h.receipts()[bad.id] == (ReceiptStatus.REJECTED, Reason.BAD_SIGNATURE)


def test_valid_verdicts_on_a_transfer_do_not_count_for_a_copy_with_another_signature() -> None:
    """A transaction id does not cover the signature.  The node holds a copy of a
    transfer with a garbage signature (its own devices never answer); "valid" verdicts
    about the genuine transfer, under a validator's assignment, must not accept the
    copy, nor get it into a block."""
    h = without_audits(make_harness(n_devices=6, k=3, q=2, recheck_tx_signatures=0))
    h.silent = {d.public for d in h.devices}
    genuine = tx(SENDERS[0], 0)
    copy = replace(genuine, signature=bytes(64))
    dispatch(h, copy)
    assert copy.id in h.core.votes
    height = h.core.tip.height
    root = compute_batch_root([genuine])

    def assignment_of(seq: int) -> Assignment:
        unsigned = Assignment(CHAIN, NODE.public, 10**6 + seq, height, T0 + 10**9, root)
        return sign(unsigned, NODE)

    assignment = next(
        a
        for a in map(assignment_of, range(100))
        if len(h.core.registry.entitled(a.id, height, 3)) >= 2
    )
    judges = h.core.registry.entitled(assignment.id, height, 3)[:2]
    keys = {d.public: d for d in h.devices}
    for device in judges:
        judged = (Judgement.of(genuine, int(Reason.OK)),)
        v = sign(Verdict(CHAIN, device, assignment, judged), keys[device])
        h.feed(topics.verdicts(CHAIN, device), encode(v))
    assert copy.id not in h.core.accepted
    assert h.core.stats.dropped["verdict.other_signature"] == 2
    for _ in range(20):
        h.tick(100)
    assert copy.id not in committed(h)


def test_one_device_cannot_fill_the_buffer_of_verdicts_on_registries_not_reached() -> None:
    """Verdicts ranked against a registry above our tip are held until we get there.
    One device (with validators' assignments) may hold only a few places: the next
    device's verdict is still held."""
    h = without_audits(make_harness(n_devices=6, k=3, q=2, recheck_tx_signatures=0))
    h.silent = {d.public for d in h.devices}
    t = tx(SENDERS[0], 0)
    dispatch(h, t)
    ahead = h.core.tip.height + 1
    first, second = h.devices[0], h.devices[1]

    def early(device_index: int, seq: int) -> bytes:
        device = h.devices[device_index]
        unsigned = Assignment(
            CHAIN, NODE.public, 10**6 + seq, ahead, T0 + 10**9, compute_batch_root([t])
        )
        a = sign(unsigned, NODE)
        judged = (Judgement.of(t, int(Reason.OK)),)
        return encode(sign(Verdict(CHAIN, device.public, a, judged), device))

    for seq in range(MAX_EARLY_PER_DEVICE + 40):
        h.feed(topics.verdicts(CHAIN, first.public), early(0, seq))
    assert h.core.stats.dropped["verdict.early_full"] == 40
    h.feed(topics.verdicts(CHAIN, second.public), early(1, 10**5))
    assert h.core.stats.dropped["verdict.early_full"] == 40  # the second device's is held


def forgery_both_judges_call_valid(
    *, commit_audit_rate: float
) -> tuple[Harness, Transaction, set[bytes]]:
    """A forgery dispatched to the two devices of its batch (k = q = 2, no audits), both
    of which answer "valid": the harness, the forgery and the liars' keys."""
    h = without_audits(make_harness(n_devices=4, k=2, q=2, recheck_tx_signatures=0))
    h.core.commit_audit_rate = commit_audit_rate
    bad = forged()
    work = dispatch(h, bad)
    for batch, device in work:
        deliver(h, verdict(h, batch, device, SAYS_VALID))
    return h, bad, {device.public for _, device in work}


def test_a_forgery_committed_on_lying_verdicts_is_found_after_commit_and_its_judges_banned() -> (
    None
):
    """Both devices a batch went to say "valid" on a forgery and no audit picks it, so
    it is committed (nothing on the block's path checks its signature).  The node's
    check of committed transfers (commit_audit_rate, 1 here) finds it: the block's own
    verdicts are the fraud proofs, and the next block bans both judges."""
    h, bad, liars = forgery_both_judges_call_valid(commit_audit_rate=1.0)
    for _ in range(10):
        h.tick(100)
        if bad.id in committed(h):
            break
    assert bad.id in committed(h)
    run(h, {}, rounds=20)
    banned = {proof.device for b in h.blocks() for proof in b.frauds}
    assert banned == liars
    assert all(h.core.registry.is_banned(device) for device in liars)


def test_a_proposal_backed_by_verdicts_kept_from_us_is_checked_refused_and_proven() -> None:
    """A Byzantine proposer's block carries a forged transfer and "valid" verdicts of two
    colluders under an assignment it signed and ground (both entitled), never published:
    every rule of verify_block holds, but the transfer is one our tally never accepted,
    so we check it before we prevote: refused, and its verdicts are fraud proofs."""
    h = without_audits(make_harness(n_devices=6, k=3, q=2, recheck_tx_signatures=0))
    bad = forged()
    height = h.core.tip.height
    colluders = h.devices[:2]
    root = compute_batch_root([bad])
    assignment = next(
        a
        for a in (
            sign(Assignment(CHAIN, NODE.public, 10**6 + seq, height, T0 + 10**9, root), NODE)
            for seq in range(10_000)
        )
        if {d.public for d in colluders} <= set(h.core.registry.entitled(a.id, height, 3))
    )
    judged = (Judgement.of(bad, int(Reason.OK)),)
    verdicts = [sign(Verdict(CHAIN, d.public, assignment, judged), d) for d in colluders]
    built = build_block(
        h.core.state.copy(), proposer=NODE, timestamp_ms=h.now, candidates=[bad],
        justification={bad.id: verdicts}, seal=False,
    )  # fmt: skip
    assert built.block.txs == (bad,)
    assert verify_block(h.core.state, built.block, validators=(NODE.public,))  # rules hold
    assert not h.core.replica.is_valid(built.block)
    assert h.core.stats.dropped["consensus.forged_tx"] == 1
    assert set(h.core.frauds.pending) == {d.public for d in colluders}


def test_a_forgery_committed_and_missed_by_every_node_is_banned_on_a_watchers_report() -> None:
    """As above, but no node's sample picks the forgery (commit_audit_rate 0): nobody is
    banned.  A watcher that checks every committed signature (``blocks watch
    --verify``: chain.verdicts.fraud_proofs_in) reports the block's lying verdicts on
    the frauds topic; the node checks each as a block's fraud proof, and its next block
    bans both judges.  A report that proves nothing (an honest verdict, a transfer that
    is fine) is dropped, and counted."""
    h, bad, liars = forgery_both_judges_call_valid(commit_audit_rate=0.0)
    run(h, {}, rounds=30)
    assert bad.id in committed(h)
    assert not any(h.core.registry.is_banned(device) for device in liars)  # missed

    block = next(b for b in h.blocks() if bad.id in {t.id for t in b.txs})
    proofs = fraud_proofs_in(block, CHAIN)
    assert {proof.device for proof in proofs} == liars
    honest = tx(SENDERS[1], 0)
    not_a_lie = FraudProof(proofs[0].verdict, honest)  # the verdict did not judge this
    h.feed(topics.frauds(CHAIN), encode(FraudReport(CHAIN, not_a_lie)))
    assert h.core.stats.dropped["fraud_report.not_judged_valid"] == 1
    assert not h.core.frauds.pending
    for proof in proofs:
        h.feed(topics.frauds(CHAIN), encode(FraudReport(CHAIN, proof)))
    assert h.core.stats.fraud_reports == len(liars)
    run(h, {}, rounds=20)
    banned = {proof.device for b in h.blocks() for proof in b.frauds}
    assert banned == liars
    assert all(h.core.registry.is_banned(device) for device in liars)
