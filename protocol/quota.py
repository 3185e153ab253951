"""Input quotas: the largest payload each topic may carry, and token buckets for rates.

Used where input arrives before anything is decoded: the embedded broker's access plugin
(per publishing client, by role) and the ledger node's intake (per topic key).  Pure:
time is an argument (``now_ms``), nothing reads a clock.

    MAX_PAYLOAD[channel]   the largest payload a topic of that channel can legitimately
                           carry: the size cap of its message kind (limits.py), or a bound
                           on the JSON documents of the two JSON topics
    Rate(per_s, burst)     a token bucket's refill rate and size
    Quota(messages, bytes) a message rate and, optionally, a byte rate, charged together
    Buckets                a bounded table of buckets by key; past its capacity, new keys
                           share one overflow bucket, so no stream of fresh keys escapes
                           the limit and memory stays bounded
    ROLE_QUOTAS            the broker's default publish quota per role: devices and
                           clients low, ledger nodes high

A bucket holds at most ``burst`` tokens and gains ``per_s`` per second; a message costs one
message token and its length in byte tokens, and is refused (nothing charged) when
either bucket cannot pay.
"""

from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from micromine.protocol.acl import TABLE, Role
from micromine.protocol.limits import (
    MAX_BLOCK_APPROVALS,
    MAX_BLOCK_FRAUDS,
    MAX_BLOCK_REGISTRATIONS,
    MAX_BLOCK_REWARDS,
    MAX_BLOCK_TXS,
    MAX_CERTIFICATE_SIGNATURES,
    MAX_MESSAGE_BYTES,
)
from micromine.protocol.topics import Channel

KIB = 1024
MIB = 1024 * KIB

# A JSON block (ledger_node/core/render.py): per transaction id, reward, registration,
# approval, banned device and signer its hex and punctuation, plus the fixed fields;
# PROTOCOL.md section 11.
MAX_BLOCK_JSON_BYTES = (
    4 * KIB
    + MAX_BLOCK_TXS * (64 + 3)
    + MAX_BLOCK_REWARDS * (64 + 4 + 16 + 1)
    + MAX_BLOCK_APPROVALS * (64 + 4 + 5 + 1)
    + (MAX_BLOCK_REGISTRATIONS + MAX_BLOCK_FRAUDS + MAX_CERTIFICATE_SIGNATURES) * (64 + 3)
)
MAX_LEDGER_STATUS_BYTES = 256 * KIB  # ledger_node/service.py keeps its status below this
MAX_ACCOUNT_SUMMARY_BYTES = 1 * KIB  # ledger_node/accounts.py: a few numbers and two keys

MAX_PAYLOAD: Mapping[Channel, int] = {
    Channel.SUBMIT: MAX_MESSAGE_BYTES["submission"],
    Channel.RECEIPTS: MAX_MESSAGE_BYTES["receipts"],
    Channel.WORK: MAX_MESSAGE_BYTES["work_batch"],
    Channel.VERDICTS: MAX_MESSAGE_BYTES["verdict"],
    Channel.HELLO: MAX_MESSAGE_BYTES["device_hello"],
    Channel.HEARTBEAT: MAX_MESSAGE_BYTES["heartbeat"],
    Channel.DEVICE_STATUS: MAX_MESSAGE_BYTES["device_status"],
    Channel.BLOCKS: MAX_MESSAGE_BYTES["block"],
    Channel.BLOCKS_JSON: MAX_BLOCK_JSON_BYTES,
    Channel.LEDGER_STATUS: MAX_LEDGER_STATUS_BYTES,
    Channel.CONSENSUS: MAX_MESSAGE_BYTES["proposal"],
    Channel.SYNC_REQUEST: MAX_MESSAGE_BYTES["sync_request"],
    Channel.SYNC_REPLY: MAX_MESSAGE_BYTES["block"],
    Channel.APPROVALS: MAX_MESSAGE_BYTES["device_approval"],
    Channel.ACCOUNTS: MAX_ACCOUNT_SUMMARY_BYTES,
    Channel.FRAUDS: MAX_MESSAGE_BYTES["fraud_report"],
}
MQTT_OVERHEAD = 64 * KIB  # room for a PUBLISH packet's topic and header above its payload
MAX_CONNECT_PACKET = 64 * KIB  # a CONNECT: client id, login token, a Will of a DeviceStatus


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_s`` tokens a second, at most ``burst`` held (and so spent at once)."""

    per_s: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.per_s > 0 and self.burst >= 1):
            raise ValueError(f"a rate needs per_s > 0 and burst >= 1, got {self}")

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """``"50"`` (burst = 4 s worth) or ``"50/200"`` (per second / burst)."""
        per_s, _, burst = text.partition("/")
        try:
            rate = float(per_s)
            return cls(rate, float(burst) if burst else max(1.0, 4 * rate))
        except ValueError:
            raise ValueError(f"{text!r} is not RATE or RATE/BURST") from None


@dataclass(frozen=True, slots=True)
class Quota:
    messages: Rate
    bytes: Rate | None = None  # None: no byte limit


@dataclass(slots=True)
class TokenBucket:
    rate: Rate
    tokens: float
    updated_ms: int

    @classmethod
    def full(cls, rate: Rate, now_ms: int) -> "TokenBucket":
        return cls(rate, rate.burst, now_ms)

    def refill(self, now_ms: int) -> None:
        elapsed = max(0, now_ms - self.updated_ms)  # a clock stepping back refills nothing
        self.tokens = min(self.rate.burst, self.tokens + elapsed * self.rate.per_s / 1000)
        self.updated_ms = max(self.updated_ms, now_ms)

    def is_full(self, now_ms: int) -> bool:
        self.refill(now_ms)
        return self.tokens >= self.rate.burst

    def take(self, now_ms: int, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; False (nothing spent) if not."""
        self.refill(now_ms)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


@dataclass(slots=True)
class _Pair:
    messages: TokenBucket
    bytes: TokenBucket | None

    @classmethod
    def full(cls, quota: Quota, now_ms: int) -> "_Pair":
        by_size = TokenBucket.full(quota.bytes, now_ms) if quota.bytes else None
        return cls(TokenBucket.full(quota.messages, now_ms), by_size)

    def take(self, size: int, now_ms: int) -> bool:
        self.messages.refill(now_ms)
        if self.messages.tokens < 1:
            return False
        if self.bytes is not None:
            self.bytes.refill(now_ms)
            # A message larger than the burst can never pass; one that fits needs the
            # tokens it costs.
            if self.bytes.tokens < size:
                return False
            self.bytes.tokens -= size
        self.messages.tokens -= 1
        return True

    def is_idle(self, now_ms: int) -> bool:
        """Full again: forgetting it loses nothing."""
        return self.messages.is_full(now_ms) and (self.bytes is None or self.bytes.is_full(now_ms))


class Buckets:
    """Token buckets by key, at most ``capacity`` of them.

    A new key evicts the least recently used bucket if that one has refilled (nothing is
    lost by forgetting it); otherwise it is charged to the shared overflow bucket of its
    ``group``, which has the quota of one key.  So a flood spread over fresh keys is
    limited like one key, and memory stays bounded."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._pairs: OrderedDict[Hashable, _Pair] = OrderedDict()
        self._overflow: dict[Hashable, _Pair] = {}

    def __len__(self) -> int:
        return len(self._pairs)

    def allow(
        self, key: Hashable, quota: Quota, size: int, now_ms: int, group: Hashable = None
    ) -> bool:
        """Charge one message of ``size`` bytes to ``key``; False: over its quota."""
        pair = self._pairs.get(key)
        if pair is not None:
            self._pairs.move_to_end(key)
        else:
            if len(self._pairs) >= self.capacity:
                oldest_key, oldest = next(iter(self._pairs.items()))
                if not oldest.is_idle(now_ms):
                    shared = self._overflow.get(group)
                    if shared is None:
                        shared = self._overflow[group] = _Pair.full(quota, now_ms)
                    return shared.take(size, now_ms)
                del self._pairs[oldest_key]
            pair = self._pairs[key] = _Pair.full(quota, now_ms)
        return pair.take(size, now_ms)


# The broker's default publish quota per client, by role.  Devices publish a heartbeat
# every 2 s, a verdict per batch, and their owners' submissions; wallets (clients) a few
# submissions a second; ledger nodes everything the platform runs on (work, receipts,
# blocks, consensus, sync), whose size is bounded by MAX_PAYLOAD alone.
ROLE_QUOTAS: Mapping[Role, Quota] = {
    Role.LEDGER: Quota(Rate(5000, 20_000)),
    Role.OPERATOR: Quota(Rate(200, 1000), Rate(8 * MIB, 16 * MIB)),
    Role.DEVICE: Quota(Rate(50, 200), Rate(2 * MIB, 4 * MIB)),
    Role.CLIENT: Quota(Rate(50, 200), Rate(2 * MIB, 4 * MIB)),
    Role.ANONYMOUS: Quota(Rate(10, 20), Rate(64 * KIB, 64 * KIB)),  # may publish nothing
}


def parse_role_quotas(specs: list[str]) -> dict[Role, Quota]:
    """``ROLE=RATE[/BURST][,BYTES_PER_S[/BURST]]`` entries over ROLE_QUOTAS, e.g.
    ``device=20/100`` or ``client=10,1048576``; a byte rate of 0 lifts the byte limit."""
    quotas = dict(ROLE_QUOTAS)
    for spec in specs:
        name, _, rates = spec.partition("=")
        try:
            role = Role(name.strip())
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise ValueError(f"{spec!r}: role must be one of {known}") from None
        messages, _, by_size = rates.partition(",")
        size_rate = quotas[role].bytes
        if by_size:
            size_rate = None if by_size.strip() in ("0", "0/0") else Rate.parse(by_size)
        quotas[role] = Quota(Rate.parse(messages), size_rate)
    return quotas


def max_packet_for(role: Role) -> int:
    """The largest MQTT packet a client of ``role`` can need: its largest publication
    (acl.TABLE), or a SUBSCRIBE if it may publish nothing."""
    sizes = (MAX_PAYLOAD[c] for c, rule in TABLE.items() if role in rule.publish)
    return max(sizes, default=0) + MQTT_OVERHEAD
