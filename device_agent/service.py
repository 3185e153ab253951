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

Idle time (policy in :mod:`.idle`, readings in :mod:`.host`): at start the agent lowers
its priority (nice, SCHED_IDLE).  It takes one work message at a time off the bounded
inbox and, with a CPU budget, holds it until the budget allows judging it, so the
inbox (not the agent) holds the backlog, and nothing is pulled that cannot be judged.
Every POLICY_INTERVAL_S it asks the pause policy; a pause sets the heartbeat window to
0 and sends a heartbeat at once, the batch in hand is still judged, and work that
arrives (or was queued) while paused is dropped and counted (``dropped_paused``).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import structlog

from micromine.common.mqtt import (
    Incoming,
    LinkConfig,
    LinkEvent,
    LinkEventKind,
    Login,
    MqttLink,
    Will,
)
from micromine.device_agent import host
from micromine.device_agent.config import AgentConfig
from micromine.device_agent.core import AgentCore, Discarded, Drop, Judged, Output, Publish
from micromine.device_agent.idle import (
    Activity,
    CpuBudget,
    CpuShare,
    HostCpuMeter,
    Reason,
    State,
    decide,
)
from micromine.device_agent.status import Identity
from micromine.device_agent.watch import Observation, Watch
from micromine.protocol.crypto import KeyPair
from micromine.protocol.topics import Channel

__all__ = ["AgentService"]

log = structlog.get_logger("micromine.device_agent")

STATS_INTERVAL_S = 30.0
OFFLINE_ACK_TIMEOUT_S = 2.0
# A flood of junk must not turn into a flood of log lines: one per kind per interval.
DISCARD_LOG_INTERVAL_S = 10.0
POLICY_INTERVAL_S = 1.0  # how often the pause policy is asked
# Work messages queued in the link: a few windows' worth from a few ledger nodes.  The
# rest is dropped by the link (counted), so memory stays bounded whatever arrives.
INBOX_MAX = 64
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
            window=config.window,
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
        self.link = MqttLink(
            LinkConfig(
                client_id=config.client_id(self.core.device),
                broker_url=config.broker_url,
                will=Will(will.topic, will.payload, will.qos, will.retain),
                subscriptions=((self.core.work_topic, Channel.WORK.qos), self.watch.subscription),
                login=Login(key, config.chain_id, config.login),
                tls=config.tls,
                inbox_max=INBOX_MAX,
            )
        )
        self._budget: CpuBudget | None = None  # made when run() starts
        self._held: Incoming | None = None  # a batch taken, waiting for the budget
        self._reason: Reason | None = None  # why paused; None while working
        self._next_policy_s = 0.0
        self._own_share = CpuShare()
        self._host_cpu = HostCpuMeter()
        self._stop = threading.Event()
        self._online = False
        self._last_discard_log: dict[Drop, float] = {}
        self._log = log.bind(device=self.core.device.hex()[:16], chain=config.chain_id)

    def request_stop(self) -> None:
        """Ask :meth:`run` to shut down; safe from a signal handler or another thread."""
        self._stop.set()
        self.link.wake()

    def activity(self) -> Activity:
        """What the agent is doing now (for status files, Home Assistant, metrics); safe
        to call from another thread: a snapshot of plain values."""
        reason = self._reason
        return Activity(
            state=State.WORKING if reason is None else State.PAUSED,
            reason=reason,
            window=self.core.window,
            cpu_budget=self.config.cpu_budget,
            cpu_percent=self._own_share.percent(),
            dropped_paused=self.core.stats.dropped_paused,
        )

    def run(self) -> int:
        """Serve until stopped; returns the process exit code (0 after a clean stop)."""
        previous = self._install_signal_handlers()
        try:
            self._lower_priority()  # before the link's thread starts: it inherits it
            if self.config.cpu_budget is not None:
                self._budget = CpuBudget(self.config.cpu_budget, time.monotonic(), host.own_cpu_s())
            self.link.start()
            if self.config.lie is not None:
                self._log.warning("LYING AGENT, for tests only", lie=self.config.lie.value)
            self._log.info(
                "agent started",
                broker=self.config.broker_url,
                client_id=self.link.config.client_id,
                capacity=self.config.capacity,
                heartbeat_s=self.config.heartbeat_s,
                window=self.config.window,
                cpu_budget=self.config.cpu_budget,
                pause_file=str(self.config.pause_file),
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
            self._check_policy()
            # Offline, heartbeats could only be dropped; the CONNECTED event wakes us.  Online
            # means "CONNECTED event handled", so the hello always precedes heartbeats.
            timeout_s = self.config.heartbeat_s
            if self._online:
                timeout_s = self.core.ms_until_tick(self._clock_ms()) / 1000
            monotonic = time.monotonic()
            timeout_s = min(
                timeout_s,
                max(0.0, next_stats - monotonic),
                max(0.0, self._next_policy_s - monotonic),
                self.watch.seconds_until_due(),
            )
            if self._held is not None:
                # A batch in hand: judge it when the budget allows, pull nothing more.
                wait_s = self._budget_wait_s()
                if wait_s <= 0:
                    held, self._held = self._held, None
                    self._judge(held, self._clock_ms())
                elif self._stop.wait(min(timeout_s, wait_s)):
                    break
            else:
                item = self.link.get(timeout_s)
                if self._stop.is_set():
                    break
                now = self._clock_ms()
                if isinstance(item, LinkEvent):
                    self._on_link_event(item, now)
                elif isinstance(item, Incoming):
                    self._on_message(item, now)
            if self._online:
                self._emit(self.core.on_tick(self._clock_ms(), busy=self._busy()))
            self._watch_tick()
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + STATS_INTERVAL_S
                self._log_counters("counters")

    def _on_link_event(self, event: LinkEvent, now_ms: int) -> None:
        self._online = event.kind is LinkEventKind.CONNECTED
        if self._online:
            self._log.info("connected", broker=self.config.broker_url)
            self._emit(self.core.on_connected(now_ms, busy=self._busy()))
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
        if self._reason is not None:  # paused: we asked for none; the ledger re-sends
            self._log_discard(self.core.discard_paused())
            return
        if self._budget_wait_s() > 0:
            self._held = item
            return
        self._judge(item, now_ms)

    def _judge(self, item: Incoming, now_ms: int) -> None:
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

    # --- idle time ----------------------------------------------------------------------

    def _busy(self) -> int:
        """Batches received and not yet answered: queued, and the one in hand."""
        return self.link.pending() + (self._held is not None)

    def _budget_wait_s(self) -> float:
        if self._budget is None:
            return 0.0
        return self._budget.wait_s(time.monotonic(), host.own_cpu_s())

    def _check_policy(self) -> None:
        """Every POLICY_INTERVAL_S: pause or resume per the owner's policy, and tell the
        ledger nodes at once (a heartbeat with the new window)."""
        monotonic = time.monotonic()
        if monotonic < self._next_policy_s:
            return
        self._next_policy_s = monotonic + POLICY_INTERVAL_S
        own = host.own_cpu_s()
        self._own_share.add(monotonic, own)
        if self.config.max_host_cpu is not None and (times := host.read_host_cpu()):
            self._host_cpu.add(monotonic, times, own)
        seen = host.observe(self.config.pause_file, self._host_cpu.others_percent())
        reason = decide(self.config.pause_policy, seen)
        if reason == self._reason:
            return
        self._reason = reason
        now = self._clock_ms()
        if reason is None:
            self._log.info("resumed", window=self.config.window)
            self.core.set_window(self.config.window, now)
        else:
            self._log.info("paused", reason=reason.value, load_per_core=seen.load_per_core,
                           others_cpu_percent=seen.others_cpu_percent)  # fmt: skip
            self.core.set_window(0, now)
        if self._online:
            self._emit(self.core.on_tick(now, busy=self._busy()))

    def _lower_priority(self) -> None:
        priority = host.apply_priority(self.config.nice, self.config.idle_priority)
        for problem in priority.problems:
            self._log.warning("cannot lower priority", problem=problem)
        self._log.info("priority", nice=priority.nice, sched_idle=priority.idle)

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
