"""What a ledger node refuses before its core decodes anything: floods, exact replays
and heartbeats out of the time window.

    Intake.check(topic, payload, now_ms) -> Dropped | None    (None: hand it to the core)

The adapter (service.py) asks this for every message from the broker, whatever broker
it is: the embedded broker already limits each client (broker/access.py), but Mosquitto
and others do not, and a ledger node cannot tell who published a message.  So the
limits here are per *topic key* (the device of a verdicts/<device> topic, the node of a
consensus/<node> topic; one key for tx/submit and sync/request), generous enough never
to touch honest traffic, and bounded in memory (quota.Buckets).  Rules, in order:

    [REJECT] rate_limited   more messages on the topic key than its channel's Rate
    [IGNORE] replayed       the same bytes on the same topic within REPLAY_WINDOW_MS, on
                            the channels where the core would check a signature again
                            (verdicts, hello, heartbeat, status); the core ignores copies
                            of consensus messages and transactions cheaply itself, and a
                            resubmitted Submission must be answered again
    [REJECT] out_of_window  a heartbeat whose timestamp is more than PRESENCE_WINDOW_MS
                            from now (devices keep their clocks within the login window;
                            hello and status are retained and may be old: devices.py
                            keeps stale ones from refreshing liveness instead)

Pure: time comes with each call, the caches are bounded, nothing here reads a clock.
"""

from collections import Counter, OrderedDict
from collections.abc import Mapping

from micromine.ledger_node.core.actions import Dropped
from micromine.protocol import topics
from micromine.protocol.auth import LOGIN_WINDOW_MS
from micromine.protocol.codec import decode
from micromine.protocol.crypto import sha256
from micromine.protocol.device import Heartbeat
from micromine.protocol.errors import DecodeError
from micromine.protocol.quota import Buckets, Quota, Rate
from micromine.protocol.topics import Channel

PRESENCE_WINDOW_MS = LOGIN_WINDOW_MS  # a device further off than this cannot log in either
REPLAY_WINDOW_MS = 120_000
REPLAY_CACHE_SIZE = 65_536
RATE_KEYS = 65_536  # topic keys with a bucket of their own (quota.Buckets)

# The drop source of each channel, as the core names them in its counters.
SOURCE: Mapping[Channel, str] = {
    Channel.SUBMIT: "submit",
    Channel.VERDICTS: "verdict",
    Channel.HELLO: "hello",
    Channel.HEARTBEAT: "heartbeat",
    Channel.DEVICE_STATUS: "status",
    Channel.CONSENSUS: "consensus",
    Channel.SYNC_REQUEST: "sync",
    Channel.SYNC_REPLY: "sync",
    Channel.FRAUDS: "fraud_report",
}

# Per topic key: a device heartbeats every 2 s and says hello once per connection; it
# answers at most a few batches a second per ledger node; a validator sends a handful
# of consensus messages per round and relays the others' when a height is slow; each
# lagging node asks for blocks every 2 s and gets up to 64 per answer.
RATES: Mapping[Channel, Quota] = {
    Channel.SUBMIT: Quota(Rate(1000, 5000)),  # one key: every submitter shares it
    Channel.VERDICTS: Quota(Rate(100, 400)),
    Channel.HELLO: Quota(Rate(2, 10)),
    Channel.HEARTBEAT: Quota(Rate(5, 20)),
    Channel.DEVICE_STATUS: Quota(Rate(2, 10)),
    Channel.CONSENSUS: Quota(Rate(2000, 10_000)),
    Channel.SYNC_REQUEST: Quota(Rate(20, 100)),
    Channel.SYNC_REPLY: Quota(Rate(1000, 2000)),
    # One key (the topic names none): every reporter shares it.  Proofs are rare, each
    # costs signature checks, and one per device is enough.
    Channel.FRAUDS: Quota(Rate(20, 100)),
}
_REPLAYS = frozenset({
    Channel.VERDICTS, Channel.HELLO, Channel.HEARTBEAT, Channel.DEVICE_STATUS, Channel.FRAUDS,
})  # fmt: skip


class Intake:
    """The checks above for one chain; ``dropped`` counts by "source.reason"."""

    def __init__(self, chain_id: str, *, rate_keys: int = RATE_KEYS) -> None:
        self.chain_id = chain_id
        self.buckets = Buckets(rate_keys)
        self._seen: OrderedDict[bytes, int] = OrderedDict()  # digest -> time, oldest first
        self.dropped: Counter[str] = Counter()

    def check(self, topic: str, payload: bytes, now_ms: int) -> Dropped | None:
        parsed = topics.parse(self.chain_id, topic)
        if parsed is None or parsed.channel not in RATES:
            return None  # the core drops what it does not expect, with its reason
        channel, source = parsed.channel, SOURCE[parsed.channel]
        who = parsed.key.hex()[:16] if parsed.key else ""
        # [REJECT] Within its topic key's rate.
        quota = RATES[channel]
        if not self.buckets.allow((channel, parsed.key), quota, 0, now_ms, group=channel):
            return self._drop(source, "rate_limited", who)
        # [IGNORE] Not a copy of a message seen lately (its signature was checked then).
        if channel in _REPLAYS and self._is_replay(topic, payload, now_ms):
            return self._drop(source, "replayed", who)
        # [REJECT] A heartbeat's time is within the window of ours.
        if channel is Channel.HEARTBEAT:
            try:
                beat = decode(payload, Heartbeat)
            except DecodeError:
                return None  # the core reports how it is malformed
            if abs(beat.timestamp_ms - now_ms) > PRESENCE_WINDOW_MS:
                return self._drop(source, "out_of_window", f"{who} at {beat.timestamp_ms}")
        return None

    def _is_replay(self, topic: str, payload: bytes, now_ms: int) -> bool:
        while self._seen:
            digest, seen_ms = next(iter(self._seen.items()))
            if now_ms - seen_ms <= REPLAY_WINDOW_MS and len(self._seen) < REPLAY_CACHE_SIZE:
                break
            del self._seen[digest]
        digest = sha256(topic.encode() + b"\x00" + payload)[:16]
        if digest in self._seen:
            return True
        self._seen[digest] = now_ms
        return False

    def _drop(self, source: str, reason: str, detail: str) -> Dropped:
        self.dropped[f"{source}.{reason}"] += 1
        return Dropped(source, reason, detail)
