"""What the agent reports about itself, as pure values: the status document and its parts.

One document, built here from the core's counters, the link's counters, the current
:class:`Activity` and the latest :class:`AccountSummary`, feeds every way of watching an
agent: the status file (``micromine agent status``), Home Assistant and Prometheus.  So
the three always agree, and this module is tested without files, sockets or clocks.

Honest figures only:

* ``agreement`` is the share of the device's judgements that matched decided outcomes,
  as the ledger node that published the latest account summary counted them.  The agent
  cannot know it alone (it never learns the outcome); without a summary it is unknown
  (None), never guessed.
* ``rewards.earned`` counts the rewards of the blocks whose summaries this agent process
  saw (each height once).  Only the latest summary is retained on the broker, so rewards
  paid while the agent was disconnected through several rewarding blocks are missed: it
  is a lower bound.  ``balance`` and ``unvested`` are the chain's exact figures as of
  ``rewards.height``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from micromine.device_agent.idle import Activity
from micromine.protocol.limits import PUBLIC_KEY_LEN
from micromine.protocol.quota import MAX_ACCOUNT_SUMMARY_BYTES

__all__ = [
    "STATUS_VERSION",
    "AccountSummary",
    "AgentState",
    "Earnings",
    "RateWindow",
    "SummaryError",
    "compute_agent_state",
    "parse_account_summary",
]

STATUS_VERSION = 1
WORKING, PAUSED, OFFLINE, CONNECTING = "working", "paused", "offline", "connecting"
AgentState = str  # one of the four above


def compute_agent_state(activity: Activity, connected: bool, ever_connected: bool) -> AgentState:
    """working / paused while connected; connecting before the first connect; else offline."""
    if connected:
        return activity.state.value  # idle.State: "working" / "paused"
    return OFFLINE if ever_connected else CONNECTING


class SummaryError(ValueError):
    """An account summary that is not the JSON object PROTOCOL.md describes."""


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """The ledger's latest word on this device's account (ledger_node/core/account_feed.py)."""

    height: int
    reward: int
    balance: int
    unvested: int
    nonce: int
    agreed: int | None = None
    disagreed: int | None = None

    @property
    def agreement(self) -> float | None:
        if self.agreed is None or self.disagreed is None or self.agreed + self.disagreed == 0:
            return None
        return self.agreed / (self.agreed + self.disagreed)


_REQUIRED = ("height", "reward", "balance", "unvested", "nonce")


def _count(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if type(value) is not int or value < 0:
        raise SummaryError(f"{name} is not a non-negative integer")
    return value


def parse_account_summary(payload: bytes, device: bytes) -> AccountSummary:
    """Decode a summary meant for ``device``; SummaryError says what is wrong."""
    if len(payload) > MAX_ACCOUNT_SUMMARY_BYTES:
        raise SummaryError(f"{len(payload)} bytes, more than {MAX_ACCOUNT_SUMMARY_BYTES}")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SummaryError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SummaryError("not a JSON object")
    if doc.get("device") != device.hex() or len(device) != PUBLIC_KEY_LEN:
        raise SummaryError("for another device")
    numbers = {name: _count(doc, name) for name in _REQUIRED}
    agreed = _count(doc, "agreed") if "agreed" in doc else None
    disagreed = _count(doc, "disagreed") if "disagreed" in doc else None
    return AccountSummary(**numbers, agreed=agreed, disagreed=disagreed)


@dataclass(slots=True)
class Earnings:
    """The latest summary, and the rewards of the heights seen (each counted once)."""

    latest: AccountSummary | None = None
    earned: int = 0
    summaries: int = 0
    dropped: int = 0  # malformed or misaddressed summaries

    def on_summary(self, summary: AccountSummary) -> bool:
        """Take a summary; False (ignored) when not newer than the latest."""
        if self.latest is not None and summary.height <= self.latest.height:
            return False
        self.latest = summary
        self.earned += summary.reward
        self.summaries += 1
        return True

    def as_dict(self) -> dict[str, Any]:
        latest = self.latest
        return {
            "earned": self.earned,
            "balance": None if latest is None else latest.balance,
            "unvested": None if latest is None else latest.unvested,
            "height": None if latest is None else latest.height,
            "summaries": self.summaries,
        }


class RateWindow:
    """Events over the trailing hour, in one-minute buckets: bounded memory at any rate."""

    BUCKET_S = 60
    BUCKETS = 60

    def __init__(self) -> None:
        self._counts = [0] * self.BUCKETS
        self._minutes = [-1] * self.BUCKETS

    def add(self, monotonic_s: float, n: int = 1) -> None:
        minute = math.floor(monotonic_s / self.BUCKET_S)
        slot = minute % self.BUCKETS
        if self._minutes[slot] != minute:
            self._minutes[slot] = minute
            self._counts[slot] = 0
        self._counts[slot] += n

    def last_hour(self, monotonic_s: float) -> int:
        """Events in the current minute and the 59 before it."""
        now = math.floor(monotonic_s / self.BUCKET_S)
        return sum(
            count
            for count, minute in zip(self._counts, self._minutes, strict=True)
            if now - self.BUCKETS < minute <= now
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """What does not change while the agent runs."""

    device: bytes
    chain_id: str
    broker: str
    version: str
    started_ms: int


def build_status(
    identity: Identity,
    *,
    now_ms: int,
    uptime_s: float,
    activity: Activity,
    connected: bool,
    ever_connected: bool,
    stats: dict[str, Any],
    link: dict[str, int],
    earnings: Earnings,
    txs_last_hour: int,
    last_verdict_ms: int | None,
) -> dict[str, Any]:
    """The status document (docs/AGENT_STATUS.md lists its fields); JSON-ready.

    ``stats`` is ``AgentStats.as_dict()``, ``link`` the link's counters.
    """
    latest = earnings.latest
    return {
        "version": STATUS_VERSION,
        "updated_ms": now_ms,
        "started_ms": identity.started_ms,
        "uptime_s": round(uptime_s, 1),
        "state": compute_agent_state(activity, connected, ever_connected),
        "pause_reason": activity.reason.value if activity.reason is not None else None,
        "budget_used_pct": activity.budget_used_percent,
        "connected": connected,
        "broker": identity.broker,
        "chain": identity.chain_id,
        "device": identity.device.hex(),
        "agent_version": identity.version,
        "batches": stats.get("batches", 0),
        "txs_judged": stats.get("txs_judged", 0),
        "valid": stats.get("valid", 0),
        "invalid": stats.get("invalid", 0),
        "late_batches": stats.get("late_batches", 0),
        "verdicts_last_hour": txs_last_hour,
        "last_verdict_ms": last_verdict_ms,
        "agreement": None if latest is None else latest.agreement,
        "agreed": None if latest is None else latest.agreed,
        "disagreed": None if latest is None else latest.disagreed,
        "rewards": earnings.as_dict(),
        "link": link,
        "dropped": {**stats.get("dropped", {}), "account_summary": earnings.dropped},
    }
