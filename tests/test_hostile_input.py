"""Hostile input at the ledger node, in memory: the mempool's memory caps, the device
table's replay and size rules, and the intake's rates, replays and time window."""

from test_ledger_core import CHAIN, SENDERS, T0, make_harness, tx

from micromine.ledger_node.chain.state import Account
from micromine.ledger_node.core.devices import FULL, STALE, LiveDevices
from micromine.ledger_node.core.intake import (
    PRESENCE_WINDOW_MS,
    RATES,
    REPLAY_WINDOW_MS,
    Intake,
)
from micromine.ledger_node.core.mempool import Mempool, PendingTx, compute_footprint
from micromine.protocol import topics
from micromine.protocol.codec import encode, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.genesis import ChainParams
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.topics import Channel

RICH = {s.public: Account(10**9, 0) for s in SENDERS}


def fill(pool: Mempool, sender: KeyPair, count: int, **fields: object) -> list[Reason]:
    reasons = []
    for nonce in range(count):
        t = tx(sender, nonce, **fields)
        reason = pool.check_admission(t, T0, RICH).reason
        reasons.append(reason)
        if reason is Reason.OK:
            pool.add(PendingTx(t, t.id, bytes(16), T0))
    return reasons


def test_the_mempool_sheds_per_sender_by_count_and_by_bytes() -> None:
    pool = Mempool(CHAIN, ChainParams(max_pending_per_sender=3))
    assert fill(pool, SENDERS[0], 4) == [Reason.OK] * 3 + [Reason.SENDER_LIMIT]
    size = compute_footprint(tx(SENDERS[0], 0, memo="m" * 64))
    pool = Mempool(CHAIN, ChainParams(), max_sender_bytes=2 * size)
    assert fill(pool, SENDERS[1], 3, memo="m" * 64) == [Reason.OK] * 2 + [Reason.SENDER_LIMIT]
    assert pool.shed == {"sender_limit": 1}


def test_the_mempool_sheds_in_total_by_count_and_by_bytes() -> None:
    pool = Mempool(CHAIN, ChainParams(max_pending=2))
    assert fill(pool, SENDERS[0], 1) == [Reason.OK]
    assert fill(pool, SENDERS[1], 2) == [Reason.OK, Reason.MEMPOOL_FULL]
    size = compute_footprint(tx(SENDERS[0], 0))
    pool = Mempool(CHAIN, ChainParams(), max_bytes=3 * size)
    fill(pool, SENDERS[0], 2)
    assert fill(pool, SENDERS[1], 2) == [Reason.OK, Reason.MEMPOOL_FULL]
    assert pool.bytes == 3 * size and pool.shed == {"mempool_full": 1}
    for entry in list(pool.by_id.values()):  # memory is given back as they leave
        pool.remove(entry.tx_id)
    assert pool.bytes == 0 and fill(pool, SENDERS[2], 1) == [Reason.OK]


def test_shed_transactions_get_a_receipt_with_the_reason() -> None:
    h = make_harness(max_pending_per_sender=2)
    items = [encode(tx(SENDERS[0], n)) for n in range(3)]
    h.submit(items)
    latest = h.receipts()
    shed = tx(SENDERS[0], 2).id
    assert latest[shed] == (ReceiptStatus.REJECTED, Reason.SENDER_LIMIT)
    assert h.core.mempool.shed == {"sender_limit": 1}


DEVICE = KeyPair(sha256(b"hostile input device"))


def beat(timestamp_ms: int, device: KeyPair = DEVICE) -> Heartbeat:
    return sign(Heartbeat(CHAIN, device.public, 1, timestamp_ms, 0, 2), device)


def test_replayed_presence_cannot_keep_a_dead_device_live() -> None:
    devices = LiveDevices(device_timeout_ms=6000)
    assert devices.on_heartbeat(beat(T0 + 2000), T0 + 2000) is None
    later = T0 + 20_000  # silent since: no longer live
    record = devices.records[DEVICE.public]
    assert devices.on_heartbeat(beat(T0 + 1000), later) == STALE
    hello = sign(DeviceHello(CHAIN, DEVICE.public, "t", 8, T0), DEVICE)
    assert devices.on_hello(hello, later) is None and record.capacity == 8
    online = sign(DeviceStatus(CHAIN, DEVICE.public, True, T0), DEVICE)
    assert devices.on_status(online, later) == STALE
    assert not devices.is_live(record, later)
    offline = sign(DeviceStatus(CHAIN, DEVICE.public, False, T0), DEVICE)  # a Last Will
    assert devices.on_status(offline, later) is None and not record.online
    assert devices.on_heartbeat(beat(later), later) is None and devices.is_live(record, later)


def test_the_device_table_is_bounded() -> None:
    devices = LiveDevices(device_timeout_ms=6000, max_records=2)
    keys = [KeyPair(sha256(b"d%d" % i)) for i in range(3)]
    assert devices.on_heartbeat(beat(T0, keys[0]), T0) is None
    assert devices.on_heartbeat(beat(T0, keys[1]), T0) is None
    assert devices.on_heartbeat(beat(T0, keys[2]), T0) == FULL  # both others are live
    later = T0 + 10_000  # keys[0] and keys[1] went silent
    assert devices.on_heartbeat(beat(later, keys[1]), later) is None
    assert devices.on_heartbeat(beat(later, keys[2]), later) is None  # evicts keys[0]
    assert set(devices.records) == {keys[1].public, keys[2].public}


def test_the_core_counts_stale_heartbeats() -> None:
    h = make_harness()
    device = h.devices[0]
    topic = topics.device_topic(CHAIN, device.public, Channel.HEARTBEAT)
    h.feed(topic, encode(beat(h.now, device)))
    h.feed(topic, encode(beat(h.now - 5000, device)))
    assert h.core.stats.dropped["heartbeat.stale"] == 1


def test_intake_limits_each_topic_key_to_its_rate() -> None:
    intake = Intake(CHAIN)
    topic = topics.verdicts(CHAIN, DEVICE.public)
    burst = int(RATES[Channel.VERDICTS].messages.burst)
    drops = [intake.check(topic, b"%d" % i, T0) for i in range(burst + 5)]
    assert drops[:burst] == [None] * burst
    assert {d.reason for d in drops[burst:] if d} == {"rate_limited"}
    other = topics.verdicts(CHAIN, KeyPair(sha256(b"other")).public)
    assert intake.check(other, b"x", T0) is None  # another key, its own bucket
    assert intake.dropped["verdict.rate_limited"] == 5


def test_intake_drops_exact_replays_within_the_window() -> None:
    intake = Intake(CHAIN)
    topic = topics.device_topic(CHAIN, DEVICE.public, Channel.HEARTBEAT)
    payload = encode(beat(T0))
    assert intake.check(topic, payload, T0) is None
    dropped = intake.check(topic, payload, T0 + 1000)
    assert dropped is not None and dropped.reason == "replayed"
    assert intake.check(topic, payload, T0 + REPLAY_WINDOW_MS + 1001) is None
    submit = topics.submit(CHAIN)  # resubmission must be answered again: no replay rule
    assert intake.check(submit, b"same", T0) is None and intake.check(submit, b"same", T0) is None


def test_intake_drops_heartbeats_out_of_the_window() -> None:
    intake = Intake(CHAIN)
    topic = topics.device_topic(CHAIN, DEVICE.public, Channel.HEARTBEAT)
    now = T0 + 10 * PRESENCE_WINDOW_MS
    for offset in (-PRESENCE_WINDOW_MS - 1, PRESENCE_WINDOW_MS + 1):
        dropped = intake.check(topic, encode(beat(now + offset)), now)
        assert dropped is not None and dropped.reason == "out_of_window"
    assert intake.check(topic, encode(beat(now - PRESENCE_WINDOW_MS)), now) is None
    assert intake.check(topic, b"\xff", now) is None  # malformed: the core says how
    assert intake.check("micromine/other/tx/submit", b"", now) is None


def test_watchers_survive_what_anyone_may_publish_on_an_open_broker() -> None:
    import time  # noqa: PLC0415

    from micromine.cli.blocks import _clock_time  # noqa: PLC0415
    from micromine.common.mqtt import Incoming  # noqa: PLC0415
    from micromine.devnet import Progress  # noqa: PLC0415

    assert len(_clock_time(2**53)) == 8  # the largest valid time (some platforms refuse it)
    progress = Progress()
    node = "ab" * 32
    for topic, payload in (
        (topics.blocks_json(CHAIN), b'{"height": "high", "tx_count": [1]}'),
        (f"micromine/{CHAIN}/ledger/{node}/status", b'{"online": true, "height": 1e99}'),
        (f"micromine/{CHAIN}/ledger/{node}/status", b"[1, 2]"),
        (topics.blocks_json(CHAIN), b"\xff"),
    ):
        progress.take(Incoming(topic, payload, time.monotonic(), False), CHAIN)
    # Each is ignored whole (and counted): a status whose counters are not integers is
    # not believed at all.
    assert progress.height == 0 and progress.online_heights() == [] and progress.ignored == 4
    assert progress.line(agents=1)
    status = b'{"online": true, "dropped": {"verdict.replayed": 3, "x": "y"}}'
    progress.take(
        Incoming(f"micromine/{CHAIN}/ledger/{'cd' * 32}/status", status, 0.0, False), CHAIN
    )
    assert progress.drops() == {"verdict.replayed": 3, "x": 0}
