"""The agent's whole behaviour as a pure state machine: bytes and times in, outputs out.

No sockets, files, threads or clocks here, so every rule (dedupe, issuer checks, heartbeat
cadence, what a verdict contains) is tested in microseconds without a broker, and a
firmware author can port it line by line.  :mod:`.service` is the only code that does I/O.

Order of checks on a work batch, cheapest and least exploitable first:
rate -> decode -> chain -> known issuer -> already judged -> tx_root is the root of the
txs -> assignment signature -> judge each tx.  The rate (WORK_RATE, a token bucket) only
matters on a broker that lets anyone publish on our work topic: the ledger nodes send a
few batches a second.  Only batches that passed every check enter the "already judged"
set (keyed by the assignment id), so a forged copy of a batch (same assignment, other
transactions or a bad signature) sent first cannot suppress the genuine one.  The
verdict copies the assignment unchanged and judges every transaction in batch order;
the agent computes nothing about device assignment.

Flow control: every heartbeat carries ``window``, how many batches the device takes at
once from each ledger node (0: paused).  :meth:`AgentCore.set_window` makes a heartbeat
due at once when it changes, so the ledger nodes stop (or resume) sending work within a
message's flight rather than a heartbeat interval later.  *Whether* to pause is decided
by :mod:`.idle`; work that arrives while paused is dropped by the adapter and counted
here (``dropped_paused``): answering nothing is safe, the ledger re-dispatches it.

``lie`` is for tests only (``Lie.ALWAYS_VALID``: judge every transaction valid without
looking), so that the ledger's defences against lying devices can be exercised; the
command line refuses it unless MICROMINE_ALLOW_LYING=1 (cli.py).
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, fields
from typing import Any

from micromine.protocol import codec, topics
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.crypto import KeyPair
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import MAX_DEVICE_WINDOW, MAX_HEARTBEAT_BUSY
from micromine.protocol.messages import Judgement, Verdict, WorkBatch
from micromine.protocol.quota import Rate, TokenBucket
from micromine.protocol.topics import Channel, Publish
from micromine.protocol.validation import check_transaction

__all__ = [
    "AGENT_VERSION",
    "AgentCore",
    "AgentStats",
    "Discarded",
    "Drop",
    "Judged",
    "Lie",
    "Output",
    "Publish",
]

AGENT_VERSION = "micromine-agent/0.1.0"
DEFAULT_RECENT_BATCHES = 4096
WORK_RATE = Rate(50, 200)  # batches a second on the work topic, and the burst


class Drop(enum.Enum):
    """Why a work message was not answered."""

    MALFORMED = "malformed"
    WRONG_CHAIN = "wrong_chain"
    UNKNOWN_ISSUER = "unknown_issuer"
    DUPLICATE = "duplicate"
    TX_ROOT_MISMATCH = "tx_root_mismatch"  # the assignment does not name these transactions
    BAD_SIGNATURE = "bad_signature"
    RATE_LIMITED = "rate_limited"
    UNEXPECTED_TOPIC = "unexpected_topic"
    PAUSED = "paused"  # arrived while we asked for no work (window 0)


class Lie(enum.Enum):
    """How a lying agent lies.  FOR TESTS ONLY: never run a lying agent on a real chain."""

    ALWAYS_VALID = "always-valid"  # every transaction "valid", nothing checked


@dataclass(frozen=True, slots=True)
class Discarded:
    """A work message dropped unanswered; for the adapter to log, never to send."""

    why: Drop
    detail: str
    batch_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class Judged:
    """A batch answered (the verdict itself is the accompanying :class:`Publish`)."""

    batch_id: bytes
    issuer: bytes
    txs: int
    valid: int
    late: bool  # its deadline had already passed by our clock


Output = Publish | Discarded | Judged


@dataclass(slots=True)
class AgentStats:
    batches: int = 0  # judged and answered
    txs_judged: int = 0
    valid: int = 0
    invalid: int = 0
    malformed: int = 0
    malformed_by_code: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    bad_signature_batches: int = 0
    tx_root_mismatches: int = 0
    wrong_chain: int = 0
    unknown_issuer: int = 0
    late_batches: int = 0
    heartbeats: int = 0
    rate_limited: int = 0
    unexpected_topic: int = 0  # counted by the adapter: a message not on our work topic
    dropped_paused: int = 0  # work that arrived while paused (window 0), unjudged

    def dropped(self) -> dict[str, int]:
        """Work messages not answered, by reason (Drop values; malformed ones by code)."""
        counts = {
            Drop.WRONG_CHAIN.value: self.wrong_chain,
            Drop.UNKNOWN_ISSUER.value: self.unknown_issuer,
            Drop.DUPLICATE.value: self.duplicates,
            Drop.BAD_SIGNATURE.value: self.bad_signature_batches,
            Drop.RATE_LIMITED.value: self.rate_limited,
            Drop.UNEXPECTED_TOPIC.value: self.unexpected_topic,
            Drop.PAUSED.value: self.dropped_paused,
            **{f"malformed_{code}": n for code, n in self.malformed_by_code.items()},
        }
        return {reason: n for reason, n in counts.items() if n}

    def as_dict(self) -> dict[str, Any]:
        """Flat, JSON-friendly form for the periodic counters log line."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "malformed_by_code"
        }
        if self.malformed_by_code:
            out["malformed_by_code"] = dict(self.malformed_by_code)
        out["dropped"] = self.dropped()
        return out


class AgentCore:
    """One device on one chain.  Not thread-safe: the adapter calls it from one thread."""

    def __init__(
        self,
        key: KeyPair,
        chain_id: str,
        *,
        capacity: int = 64,
        heartbeat_ms: int = 2000,
        window: int = 2,
        known_issuers: frozenset[bytes] | None = None,
        recent_batches: int = DEFAULT_RECENT_BATCHES,
        agent_version: str = AGENT_VERSION,
        lie: Lie | None = None,
    ) -> None:
        if heartbeat_ms <= 0 or recent_batches <= 0:
            raise ValueError("heartbeat_ms and recent_batches must be positive")
        if not 1 <= window <= MAX_DEVICE_WINDOW:
            raise ValueError(f"window must be in 1..{MAX_DEVICE_WINDOW}")
        self._key = key
        self.device = key.public  # derived once: KeyPair.public recomputes it on every call
        self.chain_id = chain_id
        self.capacity = capacity
        self.heartbeat_ms = heartbeat_ms
        self.window = window  # sent in every heartbeat; 0 while paused
        self.known_issuers = known_issuers
        self.agent_version = agent_version
        self.lie = lie
        self.stats = AgentStats()
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._recent_max = recent_batches
        self._heartbeat_seq = 0
        self._next_heartbeat_ms = 0  # first tick sends one at once
        self._work_rate = TokenBucket.full(WORK_RATE, 0)
        self.work_topic = topics.work(chain_id, self.device)
        self._verdict_topic = topics.verdicts(chain_id, self.device)

    # --- presence ---------------------------------------------------------------------------

    def hello(self, now_ms: int) -> Publish:
        hello = DeviceHello(self.chain_id, self.device, self.agent_version, self.capacity, now_ms)
        return self._device_publish(Channel.HELLO, codec.encode(codec.sign(hello, self._key)))

    def status(self, online: bool, now_ms: int) -> Publish:
        """Signed retained status; ``status(False, t)`` is also the connection's Last Will."""
        status = DeviceStatus(self.chain_id, self.device, online, now_ms)
        return self._device_publish(
            Channel.DEVICE_STATUS, codec.encode(codec.sign(status, self._key))
        )

    def on_connected(self, now_ms: int, busy: int = 0) -> list[Output]:
        """A (re)connect: announce ourselves and prove liveness at once, not an interval later."""
        self._next_heartbeat_ms = now_ms
        return [self.hello(now_ms), self.status(True, now_ms), *self.on_tick(now_ms, busy)]

    def on_tick(self, now_ms: int, busy: int = 0) -> list[Output]:
        """A heartbeat when one is due.  ``busy``: batches waiting to be judged."""
        if self._next_heartbeat_ms - now_ms > self.heartbeat_ms:
            self._next_heartbeat_ms = now_ms  # the wall clock stepped back: don't go silent
        if now_ms < self._next_heartbeat_ms:
            return []
        self._next_heartbeat_ms += self.heartbeat_ms
        if self._next_heartbeat_ms <= now_ms:  # we fell behind: skip, don't burst
            self._next_heartbeat_ms = now_ms + self.heartbeat_ms
        self._heartbeat_seq += 1
        self.stats.heartbeats += 1
        beat = Heartbeat(
            self.chain_id,
            self.device,
            self._heartbeat_seq,
            now_ms,
            min(max(busy, 0), MAX_HEARTBEAT_BUSY),
            self.window,
        )
        return [self._device_publish(Channel.HEARTBEAT, codec.encode(codec.sign(beat, self._key)))]

    def set_window(self, window: int, now_ms: int) -> bool:
        """Ask for ``window`` batches at once (0: pause).  A change makes a heartbeat due
        now, so the next :meth:`on_tick` tells the ledger nodes at once; returns whether
        it changed."""
        if not 0 <= window <= MAX_DEVICE_WINDOW:
            raise ValueError(f"window must be in 0..{MAX_DEVICE_WINDOW}")
        if window == self.window:
            return False
        self.window = window
        self._next_heartbeat_ms = now_ms
        return True

    def discard_paused(self) -> Discarded:
        """Count a work message dropped unjudged because we are paused."""
        self.stats.dropped_paused += 1
        return Discarded(Drop.PAUSED, "arrived while paused")

    def ms_until_tick(self, now_ms: int) -> int:
        """How long the adapter may block before calling :meth:`on_tick` again."""
        return max(0, min(self._next_heartbeat_ms - now_ms, self.heartbeat_ms))

    # --- work -------------------------------------------------------------------------------

    def on_work(self, payload: bytes, now_ms: int) -> list[Output]:
        """Judge one WorkBatch: exactly one signed Verdict, or one Discarded saying why not."""
        if not self._work_rate.take(now_ms):
            self.stats.rate_limited += 1
            return [Discarded(Drop.RATE_LIMITED, f"more than {WORK_RATE.per_s:g} batches/s")]
        try:
            batch = codec.decode(payload, WorkBatch)
        except DecodeError as exc:
            self.stats.malformed += 1
            self.stats.malformed_by_code[exc.code.name.lower()] += 1
            return [Discarded(Drop.MALFORMED, str(exc))]
        assignment = batch.assignment
        if assignment.chain_id != self.chain_id:
            self.stats.wrong_chain += 1
            return [Discarded(Drop.WRONG_CHAIN, f"batch for chain {assignment.chain_id!r}")]
        if self.known_issuers is not None and assignment.issuer not in self.known_issuers:
            self.stats.unknown_issuer += 1
            return [Discarded(Drop.UNKNOWN_ISSUER, f"issuer {assignment.issuer.hex()[:16]}")]
        batch_id = assignment.id
        if batch_id in self._recent:
            self.stats.duplicates += 1
            self._recent.move_to_end(batch_id)
            return [Discarded(Drop.DUPLICATE, "already judged", batch_id)]
        if compute_batch_root(batch.txs) != assignment.tx_root:
            self.stats.tx_root_mismatches += 1
            return [Discarded(Drop.TX_ROOT_MISMATCH, "tx_root is not the txs' root", batch_id)]
        if not codec.is_signature_valid(assignment):
            self.stats.bad_signature_batches += 1
            return [Discarded(Drop.BAD_SIGNATURE, "issuer signature invalid", batch_id)]
        self._remember(batch_id)
        return self._judge(batch, batch_id, now_ms)

    def _judge(self, batch: WorkBatch, batch_id: bytes, now_ms: int) -> list[Output]:
        if self.lie is Lie.ALWAYS_VALID:
            judgements = tuple(Judgement.of(tx, int(Reason.OK)) for tx in batch.txs)
        else:
            judgements = tuple(
                Judgement.of(tx, int(check_transaction(tx, self.chain_id, now_ms)))
                for tx in batch.txs
            )
        valid = sum(1 for j in judgements if j.reason == Reason.OK)
        assignment = batch.assignment
        late = assignment.deadline_ms < now_ms
        stats = self.stats
        stats.batches += 1
        stats.txs_judged += len(judgements)
        stats.valid += valid
        stats.invalid += len(judgements) - valid
        stats.late_batches += late
        # The assignment is copied unchanged: the ledger nodes check from it that a
        # validator made the batch, that this device was entitled to judge it, and (by
        # its tx_root) that the judgements are about exactly its transactions.
        verdict = Verdict(self.chain_id, self.device, assignment, judgements)
        verdict = codec.sign(verdict, self._key)
        return [
            Publish.on(Channel.VERDICTS, self._verdict_topic, codec.encode(verdict)),
            Judged(batch_id, assignment.issuer, len(judgements), valid, late),
        ]

    def _remember(self, batch_id: bytes) -> None:
        self._recent[batch_id] = None
        if len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def _device_publish(self, channel: Channel, payload: bytes) -> Publish:
        topic = topics.device_topic(self.chain_id, self.device, channel)
        return Publish.on(channel, topic, payload)
