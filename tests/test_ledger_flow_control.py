"""The ledger honours each device's heartbeat window: at most that many batches held at
once, none while it is paused (window 0), and a paused device stays live, so what it
holds is not taken back before its deadline.  In memory, with the core's harness."""

from test_ledger_core import SENDERS, Harness, make_harness, tx

from micromine.ledger_node.core.devices import (
    DEFAULT_WINDOW,
    MAX_OUTSTANDING_BATCHES,
    DeviceRecord,
    LiveDevices,
)
from micromine.protocol import codec
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import Heartbeat
from micromine.protocol.messages import WorkBatch

CHAIN = "testchain"
DEVICE = KeyPair(sha256(b"flow control device"))


def beat(timestamp_ms: int, window: int) -> Heartbeat:
    return codec.sign(Heartbeat(CHAIN, DEVICE.public, 1, timestamp_ms, 0, window), DEVICE)


def test_room_is_the_smaller_of_the_window_and_our_cap() -> None:
    record = DeviceRecord(b"d")
    assert record.window == DEFAULT_WINDOW and record.has_room and not record.paused
    for window in range(0, 17):
        record.window = window
        room = [n for n in range(20) if _with_outstanding(record, n).has_room]
        assert len(room) == min(window, MAX_OUTSTANDING_BATCHES)
    record.window = 0
    assert record.paused


def _with_outstanding(record: DeviceRecord, n: int) -> DeviceRecord:
    record.outstanding = n
    return record


def test_a_paused_device_is_live_but_not_available_and_is_counted() -> None:
    devices = LiveDevices(device_timeout_ms=6000)
    assert devices.on_heartbeat(beat(1000, 0), 1000) is None
    record = devices.records[DEVICE.public]
    assert record.paused and devices.is_live(record, 2000)
    assert devices.count_live(2000) == 1 and devices.count_paused(2000) == 1
    assert devices.available(2000) == []
    devices.on_heartbeat(beat(2000, 3), 2000)  # resume
    assert devices.count_paused(2000) == 0 and devices.available(2000) == [record]
    # A paused device that falls silent is no longer counted as anything.
    devices.on_heartbeat(beat(3000, 0), 3000)
    assert devices.count_paused(3000 + 6001) == 0


def sent_to(h: Harness, device: bytes) -> list[WorkBatch]:
    return [
        codec.decode(p.payload, WorkBatch)
        for p in h.published
        if p.topic.endswith("/work/" + device.hex())
    ]


def test_the_dispatcher_respects_windows_and_pauses_without_reassigning() -> None:
    h = make_harness(n_devices=1, k=1, q=1, batch_size=1)
    device = h.devices[0].public
    h.windows[device] = 1
    h.heartbeat_all()
    for n in range(4):
        h.submit([codec.encode(tx(SENDERS[n], 0))])
    h.tick(100)
    h.tick(100)
    assert len(sent_to(h, device)) == 1  # window 1: one batch at a time
    h.answer_work()
    h.tick(100)
    assert len(sent_to(h, device)) == 1  # the next one, after the answer

    # Pause: the batch in hand keeps its deadline, nothing new is sent, nothing stalls.
    h.windows[device] = 0
    h.heartbeat_all()
    held = h.core.devices.records[device].outstanding
    assert held == 1
    for _ in range(10):
        h.heartbeat_all()
        h.tick(100)
    assert sent_to(h, device) == [sent_to(h, device)[0]]  # still only the held one
    assert h.core.devices.is_live(h.core.devices.records[device], h.now)
    assert h.core.dispatcher.redispatched == 0
    h.answer_work()
    for _ in range(5):
        h.heartbeat_all()
        h.tick(100)
    assert sent_to(h, device) == []  # paused: still nothing new

    # Resume: work flows again, up to the new window.
    h.windows[device] = 2
    h.heartbeat_all()
    h.tick(100)
    assert len(sent_to(h, device)) == 2
