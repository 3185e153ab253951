"""Everything that lets a person watch the agent: status file, Home Assistant, Prometheus.

An adapter next to :class:`~micromine.device_agent.service.AgentService`, called from
its one thread: the service tells it what happened (a connect, a judged batch, an
account summary) and calls :meth:`Watch.tick` on every loop turn; the watch decides
when a status write or a Home Assistant state update is due and returns what to
publish.  The figures themselves come from :mod:`.status` (pure), so the three outputs
always agree.  A failing status write (disk full, read-only directory) is logged once
per interval and counted, never fatal: watching must not stop the work.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from micromine.common.mqtt import LinkStats
from micromine.device_agent import homeassistant as ha
from micromine.device_agent.config import AgentConfig
from micromine.device_agent.idle import Activity
from micromine.device_agent.metrics import MetricsServer, render_metrics
from micromine.device_agent.status import (
    Earnings,
    Identity,
    RateWindow,
    SummaryError,
    build_status,
    compute_agent_state,
    parse_account_summary,
)
from micromine.device_agent.status_file import WRITE_INTERVAL_S, write_status
from micromine.protocol import topics
from micromine.protocol.topics import Channel, Publish

__all__ = ["Observation", "Watch"]

log = structlog.get_logger("micromine.device_agent")

_LINK_FIELDS = ("connects", "disconnects", "connect_failures", "publish_failed", "dropped_inbox")
_WRITE_ERROR_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class Observation:
    """The service's side of the status: its clock, link, activity and counters now."""

    now_ms: int
    connected: bool
    activity: Activity
    stats: dict[str, Any]  # AgentStats.as_dict()
    link: LinkStats


class Watch:
    def __init__(self, config: AgentConfig, identity: Identity) -> None:
        self.config = config
        self.identity = identity
        self.account_topic = topics.accounts(config.chain_id, identity.device)
        self.earnings = Earnings()
        self.verdicts = RateWindow()
        self.last_verdict_ms: int | None = None
        self.status_write_failures = 0
        self.ha = (
            ha.HaTopics(config.homeassistant_prefix, identity.device)
            if (config.homeassistant)
            else None
        )
        self.metrics: MetricsServer | None = None
        if config.metrics_port is not None:
            self.metrics = MetricsServer(config.metrics_host, config.metrics_port).start()
        self._started = time.monotonic()
        self._next_write = 0.0
        self._next_ha = 0.0
        self._last_state: str | None = None
        self._last_error_log = -_WRITE_ERROR_LOG_INTERVAL_S
        self._ever_connected = False

    @property
    def subscription(self) -> tuple[str, int]:
        return self.account_topic, Channel.ACCOUNTS.qos

    # --- events from the service -----------------------------------------------------------

    def on_connected(self) -> list[Publish]:
        """Home Assistant's discovery configs and "online", re-sent on every connect (a
        restarted broker without persistence forgot the retained ones)."""
        self._ever_connected = True
        self._next_ha = 0.0
        if self.ha is None:
            return []
        return ha.discovery_messages(
            self.ha, version=self.identity.version, chain_id=self.identity.chain_id
        )

    def on_judged(self, txs: int, now_ms: int) -> None:
        self.verdicts.add(time.monotonic(), txs)
        self.last_verdict_ms = now_ms

    def on_account_message(self, payload: bytes) -> None:
        try:
            summary = parse_account_summary(payload, self.identity.device)
        except SummaryError as exc:
            self.earnings.dropped += 1
            log.warning("account summary dropped", error=str(exc)[:200])
            return
        if self.earnings.on_summary(summary):
            log.info("rewarded", height=summary.height, reward=summary.reward,
                     balance=summary.balance, unvested=summary.unvested)  # fmt: skip

    # --- periodic --------------------------------------------------------------------------

    def seconds_until_due(self) -> float:
        due = min(self._next_write, self._next_ha if self.ha is not None else self._next_write)
        return max(0.0, due - time.monotonic())

    def is_due(self, activity: Activity, connected: bool) -> bool:
        """Whether :meth:`tick` would do anything: lets the service skip gathering
        counters on the many loop turns where nothing is due."""
        monotonic = time.monotonic()
        state = compute_agent_state(activity, connected, self._ever_connected)
        changed = state != self._last_state
        return (
            changed
            or monotonic >= self._next_write
            or self._is_ha_due(connected, changed, monotonic)
        )

    def _is_ha_due(self, connected: bool, changed: bool, monotonic: float) -> bool:
        return self.ha is not None and connected and (changed or monotonic >= self._next_ha)

    def tick(self, seen: Observation, *, final: bool = False) -> list[Publish]:
        """Write the status file when due or when the state changed; the Home Assistant
        state when due (and connected).  ``final``: the last call, before shutdown."""
        monotonic = time.monotonic()
        state = compute_agent_state(seen.activity, seen.connected, self._ever_connected)
        changed = state != self._last_state
        ha_due = self._is_ha_due(seen.connected, changed, monotonic)
        if not (final or changed or ha_due or monotonic >= self._next_write):
            return []
        status = self.status(seen)
        if final:
            status["state"] = "offline"
            status["connected"] = False
        out: list[Publish] = []
        if final or changed or monotonic >= self._next_write:
            self._last_state = state
            self._next_write = monotonic + WRITE_INTERVAL_S
            self._write(status)
            if self.metrics is not None:
                self.metrics.update(render_metrics(status))
        if self.ha is not None and ha_due:
            self._next_ha = monotonic + ha.STATE_INTERVAL_S
            out.append(ha.state_message(self.ha, status))
        return out

    def status(self, seen: Observation) -> dict[str, Any]:
        link_counts = {name: asdict(seen.link)[name] for name in _LINK_FIELDS}
        link_counts["status_write_failures"] = self.status_write_failures
        return build_status(
            self.identity,
            now_ms=seen.now_ms,
            uptime_s=time.monotonic() - self._started,
            activity=seen.activity,
            connected=seen.connected,
            ever_connected=self._ever_connected,
            stats=seen.stats,
            link=link_counts,
            earnings=self.earnings,
            txs_last_hour=self.verdicts.last_hour(time.monotonic()),
            last_verdict_ms=self.last_verdict_ms,
        )

    def goodbye(self) -> list[Publish]:
        """What to send before a clean disconnect: Home Assistant's "offline"."""
        if self.ha is None:
            return []
        return [ha.availability_message(self.ha, online=False)]

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()

    def _write(self, status: dict[str, Any]) -> None:
        try:
            write_status(self.config.status_file, status)
        except OSError as exc:
            self.status_write_failures += 1
            if time.monotonic() - self._last_error_log >= _WRITE_ERROR_LOG_INTERVAL_S:
                self._last_error_log = time.monotonic()
                log.warning(
                    "cannot write status file",
                    path=str(self.config.status_file),
                    error=str(exc),
                    failures=self.status_write_failures,
                )
