"""Which devices may be given work right now.

Device lifecycle, per device key:

    unknown --hello/heartbeat--> live --status offline--> offline --hello/heartbeat--> live
    live: online, heard from within device_timeout_ms, not stalled, spare capacity
    stalled: missed a batch deadline since its last heartbeat (maybe dead: the broker
             may never fire its Last Will), so it gets no new work until it speaks again

Liveness is application-level on purpose (amqtt does not enforce MQTT keep-alive).
"""

from dataclasses import dataclass

from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat

MAX_OUTSTANDING_BATCHES = 4  # per device; bounds what a dying device can strand
DEFAULT_CAPACITY = 64


@dataclass(slots=True)
class DeviceRecord:
    key: bytes
    capacity: int = DEFAULT_CAPACITY
    last_seen_ms: int = 0
    last_timeout_ms: int = -1
    online: bool = True
    outstanding: int = 0
    agreed: int = 0  # judgements that matched the decided outcome
    disagreed: int = 0


class LiveDevices:
    """Every device heard from, and whether it is live.  Hearing a device does not make
    it eligible for work: only devices the chain registered are (registry.py), and the
    dispatcher asks both."""

    def __init__(self, device_timeout_ms: int) -> None:
        self.device_timeout_ms = device_timeout_ms
        self.records: dict[bytes, DeviceRecord] = {}

    def _record(self, key: bytes) -> DeviceRecord:
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = DeviceRecord(key)
        return record

    def on_hello(self, hello: DeviceHello, now_ms: int) -> None:
        record = self._record(hello.device)
        record.capacity = max(1, hello.capacity)
        record.last_seen_ms = now_ms
        record.online = True

    def on_heartbeat(self, heartbeat: Heartbeat, now_ms: int) -> None:
        record = self._record(heartbeat.device)
        record.last_seen_ms = now_ms
        record.online = True

    def on_status(self, status: DeviceStatus, now_ms: int) -> None:
        record = self._record(status.device)
        record.online = status.online
        if status.online:
            record.last_seen_ms = now_ms

    def on_missed_deadline(self, key: bytes, now_ms: int) -> None:
        record = self.records.get(key)
        if record is not None:
            record.last_timeout_ms = now_ms
            record.outstanding = max(0, record.outstanding - 1)

    def is_live(self, record: DeviceRecord, now_ms: int) -> bool:
        return (
            record.online
            and now_ms - record.last_seen_ms <= self.device_timeout_ms
            and record.last_timeout_ms < record.last_seen_ms
        )

    def available(self, now_ms: int) -> list[DeviceRecord]:
        """Live devices with room for another batch, in key order (for seeded choice)."""
        return [
            record
            for key, record in sorted(self.records.items())
            if self.is_live(record, now_ms) and record.outstanding < MAX_OUTSTANDING_BATCHES
        ]

    def count_live(self, now_ms: int) -> int:
        return sum(1 for record in self.records.values() if self.is_live(record, now_ms))
