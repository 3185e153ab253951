"""The agent's I/O shell: MQTT link, clocks, signals and logs around :class:`AgentCore`.

One thread does all the work: it blocks on the link's inbox for at most the time to the
next heartbeat, hands what arrives to the core and publishes what the core returns.
Signature checks are CPU-bound and run here, which is fine: paho's own thread only queues
messages and keeps the connection alive, so a long batch never delays a keep-alive.

Presence: the connection's Last Will is an *offline* status signed at start-up (retained,
QoS 1), so the broker marks the device offline if it dies; on every (re)connect the agent
sends a hello and a retained *online* status; on SIGTERM/SIGINT it sends a fresh offline
status itself, waits briefly for the broker's acknowledgement, then disconnects cleanly
(a clean disconnect suppresses the Will).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import structlog

from micromine.device_agent.config import AgentConfig
from micromine.device_agent.core import AgentCore, Discarded, Drop, Judged, Output, Publish
from micromine.device_agent.status import WORKING_ACTIVITY, Activity, Identity
from micromine.device_agent.watch import Observation, Watch
from micromine.mqtt import Incoming, LinkConfig, LinkEvent, LinkEventKind, Login, MqttLink, Will
from micromine.protocol.crypto import KeyPair
from micromine.protocol.topics import Channel

__all__ = ["AgentService"]

log = structlog.get_logger("micromine.device_agent")

STATS_INTERVAL_S = 30.0
OFFLINE_ACK_TIMEOUT_S = 2.0
# A flood of junk must not turn into a flood of log lines: one per kind per interval.
DISCARD_LOG_INTERVAL_S = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class AgentService:
    def __init__(
        self,
        config: AgentConfig,
        key: KeyPair,
        *,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.config = config
        self._clock_ms = clock_ms
        self.core = AgentCore(
            key,
            config.chain_id,
            capacity=config.capacity,
            heartbeat_ms=config.heartbeat_ms,
            known_issuers=config.known_issuers,
            lie=config.lie,
        )
        will = self.core.status(False, clock_ms())
        # Watching: status file, Home Assistant, Prometheus (watch.py).  ``activity`` is
        # the seam for the pause policy: it says whether the agent works now and why not.
        self.watch = Watch(
            config,
            Identity(
                self.core.device,
                config.chain_id,
                config.broker_url,
                self.core.agent_version,
                clock_ms(),
            ),
        )
        self.activity: Callable[[], Activity] = lambda: WORKING_ACTIVITY
        self.link = MqttLink(
            LinkConfig(
                client_id=config.client_id(self.core.device),
                broker_url=config.broker_url,
                will=Will(will.topic, will.payload, will.qos, will.retain),
                subscriptions=((self.core.work_topic, Channel.WORK.qos), self.watch.subscription),
                login=Login(key, config.chain_id, config.login),
                tls=config.tls,
            )
        )
        self._stop = threading.Event()
        self._online = False
        self._last_discard_log: dict[Drop, float] = {}
        self._log = log.bind(device=self.core.device.hex()[:16], chain=config.chain_id)

    def request_stop(self) -> None:
        """Ask :meth:`run` to shut down; safe from a signal handler or another thread."""
        self._stop.set()
        self.link.wake()

    def run(self) -> int:
        """Serve until stopped; returns the process exit code (0 after a clean stop)."""
        previous = self._install_signal_handlers()
        try:
            self.link.start()
            if self.config.lie is not None:
                self._log.warning("LYING AGENT, for tests only", lie=self.config.lie.value)
            self._log.info(
                "agent started",
                broker=self.config.broker_url,
                client_id=self.link.config.client_id,
                capacity=self.config.capacity,
                heartbeat_s=self.config.heartbeat_s,
            )
            self._serve()
            self._shutdown()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    # --- main loop --------------------------------------------------------------------------

    def _serve(self) -> None:
        next_stats = time.monotonic() + STATS_INTERVAL_S
        while not self._stop.is_set():
            # Offline, heartbeats could only be dropped; the CONNECTED event wakes us.  Online
            # means "CONNECTED event handled", so the hello always precedes heartbeats.
            timeout_s = self.config.heartbeat_s
            if self._online:
                timeout_s = self.core.ms_until_tick(self._clock_ms()) / 1000
            timeout_s = min(timeout_s, max(0.0, next_stats - time.monotonic()))
            timeout_s = min(timeout_s, self.watch.seconds_until_due())
            item = self.link.get(timeout_s)
            if self._stop.is_set():
                break
            now = self._clock_ms()
            if isinstance(item, LinkEvent):
                self._on_link_event(item, now)
            elif isinstance(item, Incoming):
                self._on_message(item, now)
            if self._online:
                self._emit(self.core.on_tick(self._clock_ms(), busy=self.link.pending()))
            self._watch_tick()
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + STATS_INTERVAL_S
                self._log_counters("counters")

    def _on_link_event(self, event: LinkEvent, now_ms: int) -> None:
        self._online = event.kind is LinkEventKind.CONNECTED
        if self._online:
            self._log.info("connected", broker=self.config.broker_url)
            self._emit(self.core.on_connected(now_ms, busy=self.link.pending()))
            self._emit(self.watch.on_connected())
        else:
            self._log.info("disconnected", reason=event.reason)

    def _on_message(self, item: Incoming, now_ms: int) -> None:
        if item.topic == self.watch.account_topic:
            self.watch.on_account_message(item.payload)
            return
        if item.topic != self.core.work_topic:
            self.core.stats.unexpected_topic += 1
            self._log_discard(Discarded(Drop.UNEXPECTED_TOPIC, item.topic[:120]))
            return
        started = time.perf_counter()
        outputs = self.core.on_work(item.payload, now_ms)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        queued_ms = round((time.monotonic() - item.received_monotonic) * 1000, 2)
        self._emit(outputs, elapsed_ms=elapsed_ms, queued_ms=queued_ms)

    def _emit(self, outputs: Iterable[Output], **timing: Any) -> None:
        for out in outputs:
            if isinstance(out, Publish):
                self.link.publish(out.topic, out.payload, out.qos, out.retain)
            elif isinstance(out, Judged):
                self.watch.on_judged(out.txs, self._clock_ms())
                self._log.debug(
                    "batch judged",
                    batch=out.batch_id.hex()[:16],
                    issuer=out.issuer.hex()[:16],
                    txs=out.txs,
                    valid=out.valid,
                    late=out.late,
                    **timing,
                )
            elif isinstance(out, Discarded):
                self._log_discard(out)

    def _watch_tick(self, *, final: bool = False) -> None:
        activity = self.activity()
        if not final and not self.watch.is_due(activity, self._online):
            return
        seen = Observation(
            self._clock_ms(), self._online, activity, self.core.stats.as_dict(), self.link.stats
        )
        outputs = self.watch.tick(seen, final=final)
        self._emit(outputs)

    def _log_discard(self, out: Discarded) -> None:
        batch = out.batch_id.hex()[:16] if out.batch_id else None
        if out.why is Drop.DUPLICATE:  # QoS 1 redelivery: routine
            self._log.debug("work discarded", why=out.why.value, batch=batch)
            return
        now = time.monotonic()
        if now - self._last_discard_log.get(out.why, -DISCARD_LOG_INTERVAL_S) < (
            DISCARD_LOG_INTERVAL_S
        ):
            return
        self._last_discard_log[out.why] = now
        self._log.warning("work discarded", why=out.why.value, detail=out.detail[:200], batch=batch)

    def _log_counters(self, event: str) -> None:
        link = self.link.stats
        self._log.info(
            event,
            **self.core.stats.as_dict(),
            received=link.received,
            dropped_inbox=link.dropped_inbox,
            publish_failed=link.publish_failed,
            connects=link.connects,
        )

    # --- shutdown ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        offline_sent = False
        self._watch_tick(final=True)
        if self.link.connected:
            for goodbye in self.watch.goodbye():
                self.link.publish(goodbye.topic, goodbye.payload, goodbye.qos, goodbye.retain)
            status = self.core.status(False, self._clock_ms())
            offline_sent = self.link.publish(
                status.topic, status.payload, status.qos, status.retain, wait=OFFLINE_ACK_TIMEOUT_S
            )
        self.link.close()
        self.watch.close()
        self._log_counters("agent stopped")
        if not offline_sent:
            self._log.warning("offline status not acknowledged; the broker's Will may be late")

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals can only be handled there; the embedder calls request_stop()

        def handler(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        return {signum: signal.signal(signum, handler) for signum in _STOP_SIGNALS}
