"""Which devices may be given work right now.

Device lifecycle, per device key:

    unknown --hello/heartbeat--> live --status offline--> offline --hello/heartbeat--> live
    live: online, heard from within device_timeout_ms, not stalled
    stalled: missed a batch deadline since its last heartbeat (maybe dead: the broker
             may never fire its Last Will), so it gets no new work until it speaks again
    paused: live, but its latest heartbeat's window is 0 (its host is busy): no new work,
            yet nothing is taken back early; the batches it holds keep their deadlines

A live device is given a new batch only while the batches it holds unanswered from us are
fewer than both its heartbeat's ``window`` and MAX_OUTSTANDING_BATCHES (``has_room``).

Liveness is application-level on purpose (amqtt does not enforce MQTT keep-alive).

Replays (anyone on an open broker can resend a device's signed messages) must not keep a
dead device live: a heartbeat older than the device's latest one is stale and refused;
a hello or an online status older than it counts for registration (registration.py) but not
for liveness.  An offline status is taken whatever its age: the Last Will is signed
when the agent starts, so it is older than the heartbeats it follows; a replayed one
only hides the device until its next heartbeat.

At most ``max_records`` devices are remembered: a new one evicts the device heard from
longest ago if that one is no longer live, and is refused (``devices_full``) otherwise,
so keys made up by the thousand cannot grow the table.

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
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat

MAX_OUTSTANDING_BATCHES = 4  # per device; bounds what a dying device can strand
DEFAULT_WINDOW = 2  # until a heartbeat says otherwise (the reference agent's default)
DEFAULT_CAPACITY = 64
MAX_DEVICE_RECORDS = 65_536
STALE = "stale"  # refusal reasons, for the core's drop counters
FULL = "devices_full"
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
    last_beat_ts: int = -1  # the device's own timestamp of its latest heartbeat
    window: int = DEFAULT_WINDOW  # batches it takes at once, from its latest heartbeat

    @property
    def paused(self) -> bool:
        return self.window == 0

    @property
    def has_room(self) -> bool:
        """Room for one more batch: fewer held than its window and than our own cap."""
        return self.outstanding < min(self.window, MAX_OUTSTANDING_BATCHES)

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

    def __init__(self, device_timeout_ms: int, max_records: int = MAX_DEVICE_RECORDS) -> None:
        self.device_timeout_ms = device_timeout_ms
        self.max_records = max_records
        self.records: OrderedDict[bytes, DeviceRecord] = OrderedDict()  # least recent first

    def _record(self, key: bytes, now_ms: int) -> DeviceRecord | None:
        record = self.records.get(key)
        if record is not None:
            self.records.move_to_end(key)
            return record
        if len(self.records) >= self.max_records:
            oldest = next(iter(self.records.values()))
            if self.is_live(oldest, now_ms):
                return None  # every device we know was heard from since it
            del self.records[oldest.key]
        record = self.records[key] = DeviceRecord(key)
        return record

    def on_hello(self, hello: DeviceHello, now_ms: int) -> str | None:
        """Capacity always; liveness unless the hello is older than the latest
        heartbeat.  Returns why nothing was taken, or None."""
        record = self._record(hello.device, now_ms)
        if record is None:
            return FULL
        record.capacity = max(1, hello.capacity)
        if hello.timestamp_ms >= record.last_beat_ts:
            record.last_seen_ms = now_ms
            record.online = True
        return None

    def on_heartbeat(self, heartbeat: Heartbeat, now_ms: int) -> str | None:
        """None if taken, else why not (``stale``: older than the latest one)."""
        record = self._record(heartbeat.device, now_ms)
        if record is None:
            return FULL
        # [REJECT] Not older than the device's latest heartbeat (a replay).
        if heartbeat.timestamp_ms < record.last_beat_ts:
            return STALE
        record.last_beat_ts = heartbeat.timestamp_ms
        record.last_seen_ms = now_ms
        record.online = True
        record.window = heartbeat.window
        return None

    def on_status(self, status: DeviceStatus, now_ms: int) -> str | None:
        """None if taken, else why not (``stale``: online, but older than the latest
        heartbeat)."""
        record = self._record(status.device, now_ms)
        if record is None:
            return FULL
        if status.online and status.timestamp_ms < record.last_beat_ts:
            return STALE
        record.online = status.online
        if status.online:
            record.last_seen_ms = now_ms
        return None

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
        """Live devices with room for another batch (not paused, outstanding below their
        window), in key order (for seeded choice)."""
        return [
            record
            for key, record in sorted(self.records.items())
            if record.has_room and self.is_live(record, now_ms)
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

    def count_paused(self, now_ms: int) -> int:
        """Live devices that asked for no work (window 0); they still count as live."""
        return sum(
            1 for record in self.records.values() if record.paused and self.is_live(record, now_ms)
        )
