"""AgentCore: pure, clock-free, so every rule is checked in microseconds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from micromine.device_agent.core import (
    WORK_RATE,
    AgentCore,
    Discarded,
    Drop,
    Judged,
    Lie,
    Publish,
)
from micromine.protocol import codec, topics
from micromine.protocol.assignment import compute_batch_root, compute_judgements_root
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import MAX_AMOUNT, MAX_FEE
from micromine.protocol.messages import Assignment, Transaction, Verdict, WorkBatch
from micromine.protocol.topics import Channel

CHAIN = "testchain"
NOW = 1_700_000_000_000
DEVICE_KEY = KeyPair(bytes(range(32)))
ISSUER_KEY = KeyPair(bytes(range(1, 33)))
ALICE = KeyPair(bytes([7]) * 32)
BOB = KeyPair(bytes([8]) * 32)


def make_tx(**overrides: object) -> Transaction:
    """A valid signed transfer from Alice to Bob; ``overrides`` break one rule (re-signed)."""
    signer = overrides.pop("signer", ALICE)
    assert isinstance(signer, KeyPair)
    fields: dict[str, object] = {
        "chain_id": CHAIN,
        "sender": ALICE.public,
        "recipient": BOB.public,
        "amount": 10,
        "fee": 1,
        "nonce": 0,
        "expiry_ms": NOW + 60_000,
        "memo": "",
    }
    fields.update(overrides)
    tx = Transaction(**fields)  # type: ignore[arg-type]
    if tx.sender == signer.public:
        return codec.sign(tx, signer)
    # Signed by someone other than the sender: a forged transfer.
    return dataclasses.replace(tx, signature=signer.sign(tx.KIND, tx.chain_id, tx.id))


REGISTRY_HEIGHT = 41  # any height: the agent copies it into its verdict


def make_batch(txs: list[Transaction], seq: int = 1, chain: str = CHAIN) -> WorkBatch:
    root = compute_batch_root(txs)
    assignment = Assignment(chain, ISSUER_KEY.public, seq, REGISTRY_HEIGHT, NOW + 5_000, root)
    return WorkBatch(codec.sign(assignment, ISSUER_KEY), tuple(txs))


def new_core(**kwargs: object) -> AgentCore:
    return AgentCore(DEVICE_KEY, CHAIN, heartbeat_ms=2000, **kwargs)  # type: ignore[arg-type]


def only_verdict(outputs: Sequence[object]) -> Verdict:
    publishes = [o for o in outputs if isinstance(o, Publish)]
    assert len(publishes) == 1
    pub = publishes[0]
    assert pub.topic == topics.verdicts(CHAIN, DEVICE_KEY.public)
    assert (pub.qos, pub.retain) == (Channel.VERDICTS.qos, Channel.VERDICTS.retain)
    verdict = codec.decode(pub.payload, Verdict)
    assert codec.is_signature_valid(verdict)
    return verdict


def test_mixed_batch_gets_one_verdict_with_each_reason_in_batch_order() -> None:
    cases = [
        (make_tx(), Reason.OK),
        (make_tx(chain_id="otherchain"), Reason.WRONG_CHAIN),
        (make_tx(amount=0), Reason.BAD_AMOUNT),
        (make_tx(amount=MAX_AMOUNT + 1), Reason.BAD_AMOUNT),
        (make_tx(fee=MAX_FEE + 1), Reason.BAD_FEE),
        (make_tx(recipient=ALICE.public), Reason.SELF_TRANSFER),
        (make_tx(expiry_ms=NOW - 1), Reason.EXPIRED),
        (make_tx(signer=BOB), Reason.BAD_SIGNATURE),
        (make_tx(nonce=5, memo="second valid"), Reason.OK),
    ]
    batch = make_batch([tx for tx, _ in cases])
    core = new_core()
    outputs = core.on_work(codec.encode(batch), NOW)

    verdict = only_verdict(outputs)
    assert verdict.chain_id == CHAIN
    assert verdict.batch_id == batch.id == batch.assignment.id
    assert verdict.device == DEVICE_KEY.public
    assert verdict.assignment == batch.assignment  # copied unchanged, signature and all
    assert verdict.registry_height == REGISTRY_HEIGHT
    assert [(j.tx_id, j.signature_hash, j.reason) for j in verdict.judgements] == [
        (tx.id, sha256(tx.signature), int(reason)) for tx, reason in cases
    ]
    assert compute_judgements_root(verdict.judgements) == batch.assignment.tx_root
    judged = [o for o in outputs if isinstance(o, Judged)]
    assert judged == [Judged(batch.id, ISSUER_KEY.public, len(cases), 2, late=False)]
    assert (core.stats.batches, core.stats.txs_judged) == (1, len(cases))
    assert (core.stats.valid, core.stats.invalid) == (2, len(cases) - 2)


def test_duplicate_batch_is_ignored() -> None:
    core = new_core()
    payload = codec.encode(make_batch([make_tx()]))
    assert len([o for o in core.on_work(payload, NOW) if isinstance(o, Publish)]) == 1
    again = core.on_work(payload, NOW + 10)
    assert [o.why for o in again if isinstance(o, Discarded)] == [Drop.DUPLICATE]
    assert not any(isinstance(o, Publish) for o in again)
    assert (core.stats.batches, core.stats.duplicates) == (1, 1)


def test_dedupe_memory_is_bounded_and_forgets_oldest() -> None:
    core = new_core(recent_batches=2)
    payloads = [codec.encode(make_batch([make_tx()], seq=s)) for s in (1, 2, 3)]
    for payload in payloads:
        core.on_work(payload, NOW)
    assert core.stats.batches == 3
    core.on_work(payloads[0], NOW)  # forgotten: judged again
    assert core.stats.batches == 4
    core.on_work(payloads[2], NOW)  # remembered
    assert core.stats.duplicates == 1


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", "not_cbor"),
        (b"\xff\x00garbage", "not_cbor"),
        (codec.encode(codec.sign(make_tx(), ALICE)), "wrong_kind"),
        (codec.encode(make_batch([make_tx()])) + b"\x00", "trailing_bytes"),
    ],
)
def test_malformed_bytes_are_counted_not_raised(payload: bytes, code: str) -> None:
    core = new_core()
    outputs = core.on_work(payload, NOW)
    assert len(outputs) == 1
    assert isinstance(outputs[0], Discarded)
    assert outputs[0].why is Drop.MALFORMED
    assert core.stats.malformed == 1
    assert core.stats.malformed_by_code == {code: 1}


def test_bad_batch_signature_is_dropped_and_does_not_poison_dedupe() -> None:
    core = new_core()
    genuine = make_batch([make_tx()])
    forged = dataclasses.replace(
        genuine, assignment=dataclasses.replace(genuine.assignment, signature=bytes(64))
    )
    outputs = core.on_work(codec.encode(forged), NOW)
    assert [o.why for o in outputs if isinstance(o, Discarded)] == [Drop.BAD_SIGNATURE]
    assert core.stats.bad_signature_batches == 1
    # Same id as the forgery: must still be judged.
    assert only_verdict(core.on_work(codec.encode(genuine), NOW)).batch_id == genuine.id


def test_wrong_chain_batch_is_dropped() -> None:
    core = new_core()
    batch = make_batch([make_tx(chain_id="otherchain")], chain="otherchain")
    outputs = core.on_work(codec.encode(batch), NOW)
    assert [o.why for o in outputs if isinstance(o, Discarded)] == [Drop.WRONG_CHAIN]
    assert core.stats.wrong_chain == 1
    assert core.stats.batches == 0


def test_unknown_issuer_dropped_when_issuers_are_pinned() -> None:
    core = new_core(known_issuers=frozenset({BOB.public}))
    outputs = core.on_work(codec.encode(make_batch([make_tx()])), NOW)
    assert [o.why for o in outputs if isinstance(o, Discarded)] == [Drop.UNKNOWN_ISSUER]
    assert core.stats.unknown_issuer == 1
    trusting = new_core(known_issuers=frozenset({ISSUER_KEY.public}))
    only_verdict(trusting.on_work(codec.encode(make_batch([make_tx()])), NOW))


def test_late_batch_is_still_answered_but_flagged() -> None:
    core = new_core()
    batch = make_batch([make_tx(expiry_ms=NOW + 100_000)])
    outputs = core.on_work(codec.encode(batch), batch.assignment.deadline_ms + 1)
    only_verdict(outputs)
    assert [o.late for o in outputs if isinstance(o, Judged)] == [True]
    assert core.stats.late_batches == 1


@pytest.mark.parametrize(
    "change",
    ["another transaction", "a transaction left out", "another signature", "reordered"],
)
def test_a_batch_whose_txs_are_not_its_assignments_is_refused(change: str) -> None:
    """The assignment's tx_root names the transactions (ids and signatures, in order);
    a batch that carries others is refused, counted, and does not poison dedupe."""
    core = new_core()
    txs = [make_tx(), make_tx(nonce=1)]
    genuine = make_batch(txs)
    other = {
        "another transaction": [txs[0], make_tx(nonce=2)],
        "a transaction left out": txs[:1],
        "another signature": [dataclasses.replace(txs[0], signature=bytes(64)), txs[1]],
        "reordered": txs[::-1],
    }[change]
    tampered = WorkBatch(genuine.assignment, tuple(other))
    outputs = core.on_work(codec.encode(tampered), NOW)
    assert [o.why for o in outputs if isinstance(o, Discarded)] == [Drop.TX_ROOT_MISMATCH]
    assert core.stats.tx_root_mismatches == 1 and core.stats.batches == 0
    assert only_verdict(core.on_work(codec.encode(genuine), NOW)).batch_id == genuine.id


def test_a_lying_agent_judges_everything_valid() -> None:
    """For tests of the ledger's defences only (cli.py refuses it without an env var)."""
    core = new_core(lie=Lie.ALWAYS_VALID)
    batch = make_batch([make_tx(), make_tx(signer=BOB), make_tx(amount=0)])
    verdict = only_verdict(core.on_work(codec.encode(batch), NOW))
    assert [j.reason for j in verdict.judgements] == [0, 0, 0]
    assert compute_judgements_root(verdict.judgements) == batch.assignment.tx_root


def heartbeats(outputs: Sequence[object]) -> list[Heartbeat]:
    topic = topics.device_topic(CHAIN, DEVICE_KEY.public, Channel.HEARTBEAT)
    beats = []
    for out in outputs:
        assert isinstance(out, Publish)
        assert out.topic == topic
        assert (out.qos, out.retain) == (0, False)
        beat = codec.decode(out.payload, Heartbeat)
        assert codec.is_signature_valid(beat)
        beats.append(beat)
    return beats


def test_heartbeat_cadence_seq_and_busy() -> None:
    core = new_core()
    first = heartbeats(core.on_tick(NOW, busy=3))
    assert [(b.seq, b.busy, b.timestamp_ms) for b in first] == [(1, 3, NOW)]
    assert core.ms_until_tick(NOW) == 2000
    assert core.on_tick(NOW + 1999) == []
    assert core.ms_until_tick(NOW + 1500) == 500
    assert [b.seq for b in heartbeats(core.on_tick(NOW + 2000))] == [2]
    # Late by 10 s: exactly one beat, then the cadence restarts from now (no burst).
    assert [b.seq for b in heartbeats(core.on_tick(NOW + 12_000))] == [3]
    assert core.on_tick(NOW + 13_999) == []
    assert [b.seq for b in heartbeats(core.on_tick(NOW + 14_000, busy=5000))] == [4]
    assert core.stats.heartbeats == 4
    assert core.on_tick(NOW + 14_001) == []


def test_heartbeat_survives_wall_clock_stepping_back() -> None:
    core = new_core()
    core.on_tick(NOW)
    assert len(heartbeats(core.on_tick(NOW - 3_600_000))) == 1


def test_on_connected_announces_hello_online_status_and_a_heartbeat() -> None:
    core = new_core(capacity=32)
    core.on_tick(NOW)  # the next beat is not due yet, but a connect sends one anyway
    hello, status, beat = core.on_connected(NOW + 100)
    assert isinstance(hello, Publish)
    assert isinstance(status, Publish)
    assert hello.topic == topics.device_topic(CHAIN, DEVICE_KEY.public, Channel.HELLO)
    decoded_hello = codec.decode(hello.payload, DeviceHello)
    assert codec.is_signature_valid(decoded_hello)
    assert (decoded_hello.capacity, decoded_hello.timestamp_ms) == (32, NOW + 100)
    assert status.topic == topics.device_topic(CHAIN, DEVICE_KEY.public, Channel.DEVICE_STATUS)
    assert (status.qos, status.retain) == (1, True)
    assert codec.decode(status.payload, DeviceStatus).online is True
    assert [b.seq for b in heartbeats([beat])] == [2]


def test_offline_status_is_signed_and_retained() -> None:
    pub = new_core().status(False, NOW)
    status = codec.decode(pub.payload, DeviceStatus)
    assert (status.online, status.device, status.timestamp_ms) == (False, DEVICE_KEY.public, NOW)
    assert codec.is_signature_valid(status)
    assert (pub.qos, pub.retain) == (1, True)


def test_stats_as_dict_is_flat() -> None:
    core = new_core()
    core.on_work(b"", NOW)
    flat = core.stats.as_dict()
    assert flat["malformed"] == 1
    assert flat["malformed_by_code"] == {"not_cbor": 1}


def test_a_flood_on_the_work_topic_is_rate_limited_and_counted() -> None:
    core = new_core()
    burst = int(WORK_RATE.burst)
    outputs = [core.on_work(b"\xff", NOW)[0] for _ in range(burst + 3)]
    assert [o.why for o in outputs if isinstance(o, Discarded)].count(Drop.RATE_LIMITED) == 3
    assert core.stats.dropped() == {"rate_limited": 3, "malformed_not_cbor": burst}
    later = NOW + int(1000 / WORK_RATE.per_s)  # one batch's worth of tokens back
    assert isinstance(core.on_work(b"\xff", later)[0], Discarded)
    assert core.stats.rate_limited == 3
