"""Which devices may be given work right now.

Device lifecycle, per device key:

    unknown --hello/heartbeat--> live --status offline--> offline --hello/heartbeat--> live
    live: online, heard from within device_timeout_ms, not stalled, spare capacity
    stalled: missed a batch deadline since its last heartbeat (maybe dead: the broker
             may never fire its Last Will), so it gets no new work until it speaks again

Liveness is application-level on purpose (amqtt does not enforce MQTT keep-alive).

Reputation is this node's own record of how often a device's judgements matched the
decided outcome (``agreed`` / ``disagreed``, counted by the tally), kept local and
bounded: once the two counts add up to more than REPUTATION_MEMORY, both are halved, so
old behaviour fades and a device cannot bank goodwill forever.

    reputation(d) = (agreed + 1) / (agreed + disagreed + 2)      in (0, 1)

a new device is at 1/2; one that always agreed tends to 1 - 1/(REPUTATION_MEMORY + 2).
It sets how often the node audits a transaction the device vouched for:

    audit_probability(r) = audit_rate + (1 - audit_rate) * (1 - r)

linear in the reputation's shortfall: audit_rate for a device with a perfect record
(0.05 + 0.001 by default), 0.525 for a new one, and 1 as r goes to 0; a transaction is
audited with the probability of the lowest-reputation device that vouched for it.  And
it weights which of the 2k entitled devices get a batch: the issuer draws k of the
live ones with probability proportional to r (``weighted_sample``; dispatch.py), a
local choice, since validators check only that a device is entitled.
"""

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat

MAX_OUTSTANDING_BATCHES = 4  # per device; bounds what a dying device can strand
DEFAULT_CAPACITY = 64
REPUTATION_MEMORY = 1024  # agreed + disagreed above this: both halved


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

    @property
    def reputation(self) -> float:
        return (self.agreed + 1) / (self.agreed + self.disagreed + 2)

    def record_judgement(self, *, agreed: bool) -> None:
        if agreed:
            self.agreed += 1
        else:
            self.disagreed += 1
        if self.agreed + self.disagreed > REPUTATION_MEMORY:
            self.agreed //= 2
            self.disagreed //= 2


NEW_DEVICE_REPUTATION = DeviceRecord(b"").reputation  # 1/2: nothing known yet


def audit_probability(reputation: float, audit_rate: float) -> float:
    """How likely a transaction vouched for by a device of ``reputation`` is audited."""
    return audit_rate + (1.0 - audit_rate) * (1.0 - reputation)


def weighted_sample(
    items: Sequence[bytes], weights: Sequence[float], count: int, rng: random.Random
) -> list[bytes]:
    """``count`` of ``items`` without replacement, each draw proportional to its weight
    (Efraimidis and Spirakis: the largest u ** (1 / w)), in ``items`` order."""
    if count >= len(items):
        return list(items)
    keys = [rng.random() ** (1.0 / max(weight, 1e-9)) for weight in weights]
    chosen = set(sorted(range(len(items)), key=lambda i: -keys[i])[:count])
    return [item for i, item in enumerate(items) if i in chosen]


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

    def reputation(self, key: bytes) -> float:
        record = self.records.get(key)
        return record.reputation if record is not None else NEW_DEVICE_REPUTATION

    def record_outcome(self, matched: Iterable[bytes], other: Iterable[bytes]) -> None:
        """Devices whose vote matched a decided outcome, and those whose vote did not."""
        for key in matched:
            if (record := self.records.get(key)) is not None:
                record.record_judgement(agreed=True)
        for key in other:
            if (record := self.records.get(key)) is not None:
                record.record_judgement(agreed=False)

    def count_live(self, now_ms: int) -> int:
        return sum(1 for record in self.records.values() if self.is_live(record, now_ms))
