"""The ledger node process: the MQTT link, the wall clock and logs around ``LedgerNode``.

One thread owns the node (node.py: SQLite store, intake, core); paho's network thread
only fills the link's inbox.  The loop hands each message to the node, runs the node's
clock every ``tick_ms``, and carries out the returned actions in order: storage by the
node, then the publications.  It decides nothing; the simulator (sim/) runs the same
LedgerNode with an in-memory broker and clock.  An exception out of the core while it
handles a message is counted (``internal_error``) and logged with its traceback, never
allowed to end the process: a message that trips a bug must not be a way to stop every
node at once.
"""

import json
import os
import random
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType

import structlog

from micromine.common.genesis_file import load_genesis
from micromine.common.mqtt import (
    Incoming,
    LinkConfig,
    LinkEvent,
    LinkEventKind,
    Login,
    MqttLink,
    Will,
)
from micromine.ledger_node.config import LedgerConfig
from micromine.ledger_node.core.actions import Action, CommitBlock, Dropped, EvidenceFound
from micromine.ledger_node.core.ledger import ReplicaFactory
from micromine.ledger_node.core.replica import Replica
from micromine.ledger_node.node import LedgerNode
from micromine.ledger_node.storage import LedgerStore
from micromine.protocol import topics
from micromine.protocol.codec import encode
from micromine.protocol.crypto import KeyPair
from micromine.protocol.genesis import Genesis
from micromine.protocol.topics import Channel

log = structlog.get_logger("micromine.ledger")

DROP_LOG_INTERVAL_S = 1.0
STATUS_MAX_DEVICES = 256  # keep the retained status message small
STATUS_MAX_DROP_KEYS = 128  # "source.reason" counters in the status; the rest summed


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LedgerService:
    def __init__(
        self,
        config: LedgerConfig,
        genesis: Genesis,
        key: KeyPair,
        *,
        replica: ReplicaFactory = Replica,
    ) -> None:
        self.config = config
        self.genesis = genesis
        self.key = key
        self.node = LedgerNode.open(
            LedgerStore(config.db_path, genesis),
            genesis,
            key,
            rng=random.Random(),
            now_ms=now_ms(),
            audit_rate=config.audit_rate,
            commit_audit_rate=config.commit_audit_rate,
            replica=replica,
        )
        self.store, self.core, self.intake = self.node.store, self.node.core, self.node.intake
        self.errors = 0
        self._last_error_log = 0.0
        chain = genesis.chain_id
        self.status_topic = topics.ledger_status(chain, key.public)
        self.link = MqttLink(
            LinkConfig(
                # A fresh suffix per process: a restarted node must not contend with its
                # own dead session (amqtt mishandles a client-id takeover).
                client_id=f"ledger-{key.public.hex()[:16]}-{os.urandom(3).hex()}",
                broker_url=config.broker_url,
                will=Will(self.status_topic, self._status_payload(online=False), 1, True),
                subscriptions=self.node.subscriptions(),
                inbox_max=100_000,
                # Consensus before the transaction flow: a proposal queued behind a
                # backlog of submissions let the round time out, and the next
                # proposer's bigger block took longer still.
                urgent_prefixes=(topics.all_consensus(chain).removesuffix("+"),),
                max_queued_messages=100_000,
                login=Login(key, chain, config.login),
                tls=config.tls,
            )
        )
        self.stop = threading.Event()
        self._last_drop_log = 0.0
        self._drops_since_log = 0

    def run(self) -> int:
        tip = self.core.tip
        log.info(
            "ledger node starting",
            node=self.key.public.hex()[:16],
            chain=self.genesis.chain_id,
            height=tip.height,
            pending=len(self.core.mempool),
            db=str(self.config.db_path),
        )
        self.link.start()
        self.link.wait_connected(timeout=10)
        self.execute(self.core.start(now_ms()))
        tick_s = self.config.tick_ms / 1000
        next_tick = time.monotonic()
        next_status = time.monotonic()
        try:
            while not self.stop.is_set():
                item = self.link.get(timeout=max(0.0, next_tick - time.monotonic()))
                if isinstance(item, Incoming):
                    self.receive(item)
                elif isinstance(item, LinkEvent) and item.kind is LinkEventKind.CONNECTED:
                    log.info("connected to broker", broker=self.config.broker_url)
                    next_status = 0.0
                monotonic = time.monotonic()
                if monotonic >= next_tick:
                    self.execute(self.core.on_tick(now_ms()))
                    next_tick = max(next_tick + tick_s, monotonic)
                if monotonic >= next_status:
                    self.publish_status()
                    next_status = monotonic + self.config.status_interval_s
        finally:
            self.shutdown()
        return 0

    def receive(self, item: Incoming) -> None:
        """One message from the broker: the intake's checks, then the core."""
        errors = self.node.errors
        actions = self.node.handle(item.topic, item.payload, now_ms())
        if self.node.errors != errors:
            self.errors = self.node.errors
            if time.monotonic() - self._last_error_log >= DROP_LOG_INTERVAL_S:
                self._last_error_log = time.monotonic()
                log.error(
                    "message handler failed",
                    topic=item.topic[:120],
                    errors=self.errors,
                    exc_info=self.node.last_error,
                )
        self.execute(actions)

    def dropped(self) -> dict[str, int]:
        """Drop counters by "source.reason", the intake's and the core's, bounded."""
        counts = self.core.stats.dropped + self.intake.dropped
        if self.errors:
            counts["message.internal_error"] = self.errors
        top = dict(counts.most_common(STATUS_MAX_DROP_KEYS))
        rest = counts.total() - sum(top.values())
        if rest:
            top["other.other"] = rest
        return top

    def execute(self, actions: Sequence[Action]) -> None:
        """Storage first, in order (LedgerNode.execute), then the publications; the
        node's notable events are logged."""
        for publish in self.node.execute(actions):
            self.link.publish(publish.topic, publish.payload, publish.qos, publish.retain)
        for action in actions:
            match action:
                case CommitBlock(block, _changes):
                    log.info(
                        "block committed",
                        height=block.height,
                        txs=len(block.txs),
                        hash=block.hash.hex()[:16],
                    )
                case Dropped(source, reason, detail):
                    self._log_drop(source, reason, detail)
                case EvidenceFound(first, second):
                    log.warning(
                        "equivocation detected",
                        validator=first.signer.hex(),
                        height=first.height,
                        round=first.round,
                        kind=type(first).__name__,
                        first=encode(first).hex(),
                        second=encode(second).hex(),
                    )

    def _log_drop(self, source: str, reason: str, detail: str) -> None:
        self._drops_since_log += 1
        monotonic = time.monotonic()
        if monotonic - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            log.warning(
                "input dropped",
                source=source,
                reason=reason,
                detail=detail[:120],
                dropped_since_last_log=self._drops_since_log,
            )
            self._last_drop_log = monotonic
            self._drops_since_log = 0

    def _status_payload(self, online: bool) -> bytes:
        core = self.core
        now = now_ms()
        status = {
            "node": self.key.public.hex(),
            "online": online,
            "timestamp": now,
            "height": core.tip.height,
            "round": core.replica.consensus.round,
            "tip_signers": core.replica.tip_signers,
            "tip_round": core.replica.tip_round,
            "validators_live": core.peers.count_live(now),
            "evidence": core.replica.evidence,
            "tip": core.tip.hash.hex(),
            "mempool": len(core.mempool),
            "mempool_bytes": core.mempool.bytes,
            "shed": dict(core.mempool.shed),
            "devices_live": core.devices.count_live(now) if online else 0,
            "devices_paused": core.devices.count_paused(now) if online else 0,
            "devices_registered": len(core.registry),
            "devices_banned": len(core.registry.banned),
            "frauds_found": core.frauds.found,
            "frauds_pending": len(core.frauds.pending),
            "registrations_pending": len(core.hellos),
            "committed": core.stats.committed,
            "rejected": core.stats.rejected,
            "settled": core.stats.settled,
            "forged": core.stats.forged,
            "audited": core.stats.audited,
            "checked_in_blocks": core.stats.checked_in_blocks,
            "fraud_reports": core.stats.fraud_reports,
            "batches_sent": core.dispatcher.batches_sent,
            "redispatched": core.dispatcher.redispatched,
            "reissued": core.dispatcher.reissued,
            "dropped": self.dropped(),
            # each device's agreement with decided outcomes (the tally records it)
            "devices": {
                key.hex()[:16]: {
                    "live": core.devices.is_live(record, now),
                    "registered": key in core.registry,
                    "banned": core.registry.is_banned(key),
                    "agreed": record.agreed,
                    "disagreed": record.disagreed,
                    "reputation": round(record.reputation, 4),
                }
                for key, record in list(core.devices.records.items())[:STATUS_MAX_DEVICES]
            },
        }
        return json.dumps(status, separators=(",", ":")).encode()

    def publish_status(self) -> None:
        payload = self._status_payload(online=True)
        self.link.publish(self.status_topic, payload, Channel.LEDGER_STATUS.qos, True)

    def shutdown(self) -> None:
        payload = self._status_payload(online=False)
        self.link.publish(self.status_topic, payload, Channel.LEDGER_STATUS.qos, True, wait=2.0)
        self.link.close()
        self.store.close()
        log.info("ledger node stopped", height=self.core.tip.height)


def run_ledger(config: LedgerConfig, key: KeyPair, *, replica: ReplicaFactory = Replica) -> int:
    """Run a ledger node until SIGTERM or SIGINT.  ``replica``: see LedgerNode."""
    genesis = load_genesis(config.genesis_path)
    if key.public not in genesis.ledger_nodes:
        raise ValueError(
            f"key {key.public.hex()[:16]}… is not a ledger node of {config.genesis_path}"
        )
    service = LedgerService(config, genesis, key, replica=replica)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        service.stop.set()
        service.link.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return service.run()
