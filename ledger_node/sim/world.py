"""The simulation engine: one run of n ledger nodes, the devices and a wallet over the
simulated broker and network (see sim/__init__.py).

A discrete-event loop over simulated milliseconds: a heap of (time, seq, kind, client,
topic, payload).  No wall clock, threads or sockets; all randomness comes from
``random.Random`` objects derived from the seed, one per concern (so the network's draws
do not shift when the Byzantine node's do).  ``seed % len(scenarios)`` picks the
scenario (faults.py), unless the config names one.

Clients: ledger nodes 0..n-1 (hosts.SimLedger), then the devices (hosts.SimDevice), then
one wallet (hosts.SimWallet).  A publication goes to the broker's subscribers of its
topic (broker.py), each copy delayed, duplicated or lost by the network (faults.Network)
between publisher and subscriber.  The wallet submits the pool's transfers at random
gaps until the progress target is met; then the run drains until every submitted
transfer is committed on every live honest node, and every replay finally rejected.
A broker restart (faults.BrokerRestart) drops every subscription; each client connects
again in its own time, and what it published meanwhile waits in its outbox until then.
The invariants are in check.py.

Longer than 400 lines because the event loop, the World protocol the hosts call and the
end-of-run checks share the run's state; the hosts, faults, broker and invariants are
modules of their own.
"""

import heapq
import random
import sys
import traceback
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from micromine.ledger_node.core.ledger import ReplicaFactory
from micromine.ledger_node.core.replica import Replica
from micromine.ledger_node.sim.broker import SimBroker
from micromine.ledger_node.sim.byzantine import ByzantineReplica
from micromine.ledger_node.sim.chain import (
    CHAIN_ID,
    device_keys,
    genesis,
    tx_pool,
    validator_keys,
    validator_publics,
)
from micromine.ledger_node.sim.check import (
    CertificateChecker,
    Observer,
    check_nothing_lost,
    check_receipts,
    check_validity,
)
from micromine.ledger_node.sim.faults import (
    WITHHOLD,
    FaultPlan,
    Network,
    draw_plan,
    scenarios,
)
from micromine.ledger_node.sim.hosts import SimDevice, SimLedger, SimWallet
from micromine.protocol.codec import is_signature_valid
from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal
from micromine.protocol.limits import REPLY_TO_LEN
from micromine.protocol.topics import Publish

DELIVER, TICK, SUBMIT, CRASH, RESTART, SETTLE, NOISE, BROKER, RECONNECT = range(9)
EVENT_NAMES = (
    "deliver", "tick", "submit", "crash", "restart", "settle", "noise", "broker", "reconnect",
)  # fmt: skip
MAX_OUTBOX = 10_000  # what a disconnected client queues (paho's max_queued_messages)
Event = tuple[int, int, int, int, str, bytes]  # time, seq, kind, client, topic, payload
Host = SimLedger | SimDevice | SimWallet


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 4
    byzantine: bool = False  # add the Byzantine scenarios to the mix
    scenario: str | None = None  # run only this scenario (default: seed % len(mix))
    replica: ReplicaFactory = Replica  # the honest nodes' consensus adapter
    tick_ms: int = 50  # how often each ledger node's on_tick runs (LedgerConfig's default)
    device_tick_ms: int = 250
    progress_heights: int = 3  # H: blocks every live honest node must commit after faults
    min_blocks: int = 6  # ... and at least this many in all (a run's length)
    progress_ms: int = 30_000  # ... within this long after the faults end
    drain_ms: int = 20_000  # then every submitted transfer committed everywhere in this
    submit_gap_ms: tuple[int, int] = (100, 700)  # time between two new transfers

    def __post_init__(self) -> None:
        if self.nodes < 4:
            raise ValueError("the scenarios need n >= 4 nodes (n = 3f + 1 with f >= 1)")
        if self.scenario is not None and self.scenario not in scenarios(True):
            raise ValueError(f"unknown scenario {self.scenario!r}")


@dataclass(frozen=True, slots=True)
class SimResult:
    seed: int
    scenario: str
    plan: str
    ok: bool
    violations: tuple[str, ...]
    heights: tuple[int, ...]  # committed blocks per node (-1: down at the end)
    counters: dict[str, int]
    sim_ms: int
    replay: str  # the command that replays just this run
    trace: tuple[str, ...] = ()

    def report(self) -> str:
        lines = [f"seed {self.seed} [{self.plan}] FAILED:"]
        lines += [f"  {violation}" for violation in self.violations]
        lines.append(f"  replay: {self.replay}")
        return "\n".join(lines)


def replay_command(seed: int, config: SimConfig) -> str:
    parts = ["python -m micromine.ledger_node.sim", f"--seed {seed}"]
    if config.nodes != 4:
        parts.append(f"--nodes {config.nodes}")
    if config.byzantine:
        parts.append("--byzantine")
    if config.scenario is not None:
        parts.append(f"--scenario {config.scenario}")
    replica, prefix = config.replica, ""
    if replica is not Replica and isinstance(replica, type):
        parts.append(f"--replica {replica.__module__}:{replica.__qualname__}")
        module_file = getattr(sys.modules.get(replica.__module__), "__file__", None)
        if module_file and not replica.__module__.startswith("micromine."):
            folder = Path(module_file).resolve().parent
            if folder.is_relative_to(Path.cwd()):
                folder = folder.relative_to(Path.cwd())
            prefix = f"PYTHONPATH={folder} "
    return prefix + " ".join([*parts, "-v"])


class Simulation:
    def __init__(self, seed: int, config: SimConfig, *, trace: bool = False) -> None:
        self.seed, self.config = seed, config
        mix = scenarios(config.byzantine)
        self.scenario = config.scenario or mix[seed % len(mix)]
        self.plan: FaultPlan = draw_plan(self.scenario, config.nodes, random.Random(f"{seed}/plan"))
        self.network = Network(self.plan, random.Random(f"{seed}/net"))
        self.submit_rng = random.Random(f"{seed}/submit")
        self.fault_rng = random.Random(f"{seed}/faults")
        self.now_ms = 0
        self.counters: Counter[str] = Counter()
        self._signatures: dict[tuple[bytes, bytes], bool] = {}
        self.trace_lines: list[str] | None = [] if trace else None
        self.queue: list[Event] = []
        self.seq = 0
        self.broker = SimBroker()
        self.outbox: dict[int, list[Publish]] = {}  # what disconnected clients published
        publics = validator_publics(config.nodes)
        self.certificates = CertificateChecker(CHAIN_ID, publics)
        byzantine = self.plan.byzantine
        self.observer = Observer(
            names={key: f"n{i}" for i, key in enumerate(publics)},
            honest=frozenset(k for i, k in enumerate(publics) if i != byzantine),
            byzantine=publics[byzantine] if byzantine is not None else None,
        )
        skew_rng = random.Random(f"{seed}/skew")
        self.ledgers: list[SimLedger] = []
        for i, key in enumerate(validator_keys(config.nodes)):
            replica: ReplicaFactory = config.replica
            if i == byzantine:
                replica = partial(
                    ByzantineReplica,
                    world=self,
                    index=i,
                    modes=self.plan.byzantine_modes,
                    rng=random.Random(f"{seed}/byzantine"),
                )
            self.ledgers.append(
                SimLedger(
                    index=i, key=key, world=self, validators=config.nodes, seed=seed,
                    skew_ms=skew_rng.randint(-200, 200), audit_rate=0.05, replica=replica,
                    honest=i != byzantine,
                    withhold=i == byzantine and WITHHOLD in self.plan.byzantine_modes,
                )
            )  # fmt: skip
        first_device = config.nodes
        self.devices = [
            SimDevice(index=first_device + i, key=key, world=self, lie=None)
            for i, key in enumerate(device_keys())
        ]
        reply_to = random.Random(f"{seed}/wallet").randbytes(REPLY_TO_LEN)
        self.wallet = SimWallet(
            index=first_device + len(self.devices), world=self, reply_to=reply_to
        )
        self.hosts: list[Host] = [*self.ledgers, *self.devices, self.wallet]
        self.honest = [node for node in self.ledgers if node.honest]
        # Liveness is owed by the nodes that can talk: not one silent or down for good.
        gone = {crash.node for crash in self.plan.crashes if crash.restart_ms is None}
        if self.plan.silence and self.plan.silence.end_ms is None:
            gone.add(self.plan.silence.node)
        self.live = [node for node in self.honest if node.index not in gone]
        self.progress_base: dict[int, int] | None = None  # live node -> blocks at settle
        self.progress_done_ms: int | None = None
        self.drained = False

    # ---- the World protocol (what hosts may call) -----------------------------------

    def connect(self, client: int, filters: list[str]) -> None:
        for topic, payload in self.broker.subscribe(client, filters):
            self.push(self.now_ms + 1, DELIVER, client, topic, payload)
        for publish in self.outbox.pop(client, []):  # queued while disconnected
            self.publish(client, publish)

    def disconnect(self, client: int) -> None:
        """``client``'s process ends: its subscriptions and its outbox go with it."""
        self.broker.disconnect(client)
        self.outbox.pop(client, None)

    def publish(self, client: int, publish: Publish) -> None:
        if not self.broker.connected(client):  # after a broker restart, not back yet
            queued = self.outbox.setdefault(client, [])
            if len(queued) < MAX_OUTBOX:
                queued.append(publish)
            return
        self.publish_to(client, self.broker.publish(publish.topic, publish.payload, publish.retain),
                        publish.topic, publish.payload)  # fmt: skip

    def publish_to(self, client: int, receivers: tuple[int, ...], topic: str, data: bytes) -> None:
        """Copies of one publication to ``receivers``, through the faulty network."""
        for receiver in receivers:
            delays = self.network.delays(client, receiver, self.now_ms)
            self.counters["net.sent"] += 1
            if not delays:
                self.counters["net.lost"] += 1
            for delay in delays:
                self.push(self.now_ms + delay, DELIVER, receiver, topic, data)

    def subscribers(self, topic: str) -> tuple[int, ...]:
        return self.broker.publish(topic, b"", False)

    def well_formed(self, message: Proposal | Prevote | Precommit, proposer: bytes) -> bool:
        """Would a correct core count ``message`` (and so must report a conflicting
        twin)?  Validator, signature, COMMIT signature, a proposal's proposer and block;
        checked apart from the core, signatures memoised."""
        if message.signer not in self.certificates.validators:
            return False
        memo_key = (message.id, message.signature)
        signed = self._signatures.get(memo_key)
        if signed is None:
            signed = self._signatures[memo_key] = is_signature_valid(message)
        if not signed:
            return False
        if isinstance(message, Precommit) and message.block_hash != NIL:
            return self.certificates.valid(
                message.voter, message.round, message.block_hash, message.commit_signature
            )
        if isinstance(message, Proposal):
            header = message.block.header
            return (
                message.proposer == proposer
                and header.chain_id == CHAIN_ID
                and header.height == message.height
                and (header.proposer == message.proposer or message.pol_round > 0)
            )
        return True

    def unheard(self) -> set[int]:
        return self.network.unheard(self.now_ms)

    def count(self, what: str, amount: int = 1) -> None:
        self.counters[what] += amount

    def trace(self, text: str) -> None:
        if self.trace_lines is not None:
            self.trace_lines.append(f"t={self.now_ms:>6}ms {text}")

    # ---- the loop -----------------------------------------------------------------

    def push(
        self, at_ms: int, kind: int, client: int = 0, topic: str = "", data: bytes = b""
    ) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at_ms, self.seq, kind, client, topic, data))

    def run(self) -> "SimResult":
        plan, config = self.plan, self.config
        for host in self.hosts:
            host.boot(0)
        self.push(config.tick_ms, TICK)
        self.push(self.submit_rng.randint(0, config.submit_gap_ms[1]), SUBMIT)
        for number, crash in enumerate(plan.crashes):
            self.push(crash.at_ms, CRASH, crash.node, str(number))
            if crash.restart_ms is not None:
                self.push(crash.restart_ms, RESTART, crash.node)
        if plan.silence is not None:
            silent = self.ledgers[plan.silence.node]
            silent.silent_from = plan.silence.start_ms
            silent.silent_until = plan.silence.end_ms if plan.silence.end_ms is not None else 2**62
        self.push(plan.settled_ms, SETTLE)
        if plan.byzantine is not None and plan.byzantine_modes & {"garbage", "replay"}:
            self.push(50, NOISE, plan.byzantine)
        for number, restart in enumerate(plan.broker_restarts):
            self.push(restart.at_ms, BROKER, 0, str(number))
        decisions = 0
        while self.queue and not self.observer.failed and not self.drained:
            at_ms, _seq, kind, client, topic, data = heapq.heappop(self.queue)
            if self.progress_done_ms is None:
                deadline = plan.settled_ms + config.progress_ms
            else:
                deadline = self.progress_done_ms + config.drain_ms
            if at_ms > deadline:
                break
            self.now_ms = at_ms
            try:
                self.dispatch(kind, client, topic, data)
            except Exception as exc:  # a host must never raise, whatever arrives
                where = "".join(traceback.format_exception(exc, limit=-3)).strip().splitlines()
                self.observer.violation(
                    at_ms,
                    f"client {client} raised on {EVENT_NAMES[kind]}: {exc!r} | "
                    + " / ".join(where[-4:]),
                )
                break
            if self.counters["decisions"] != decisions:
                decisions = self.counters["decisions"]
                self.check_targets()
        self.finish()
        return self.result()

    def dispatch(self, kind: int, client: int, topic: str, data: bytes) -> None:
        now = self.now_ms
        if kind == DELIVER:
            self.hosts[client].deliver(topic, data, now)
        elif kind == TICK:
            for node in self.ledgers:
                node.tick(now)
            if now % self.config.device_tick_ms < self.config.tick_ms:
                for device in self.devices:
                    device.tick(now)
                self.wallet.tick(now)
            self.push(now + self.config.tick_ms, TICK)
            if self.progress_done_ms is None and self.progress_base is not None:
                self.check_targets()
        elif kind == SUBMIT:
            self.submit()
        elif kind == CRASH:
            self.crash(self.ledgers[client], self.plan.crashes[int(topic)])
        elif kind == RESTART:
            node = self.ledgers[client]
            node.crash(now)  # if it is still up (a crash still waiting for its next event)
            node.boot(now)
            self.trace(f"n{client} restarts at height {node.height}")
        elif kind == SETTLE:
            self.progress_base = {n.index: max(n.height, 0) for n in self.live}
            self.trace(f"faults over; committed so far {self.progress_base}")
        elif kind == NOISE:
            node = self.ledgers[client]
            if node.node is not None:
                replica = node.node.core.replica
                assert isinstance(replica, ByzantineReplica)
                replica.noise(now)
            self.push(now + self.fault_rng.randint(20, 300), NOISE, client)
        elif kind == BROKER:
            restart = self.plan.broker_restarts[int(topic)]
            self.broker.restart(keep_retained=restart.keep_retained)
            self.trace(
                f"the broker restarts ({'keeping' if restart.keep_retained else 'losing'} retained)"
            )
            for host in range(len(self.hosts)):
                self.push(now + self.fault_rng.randint(100, restart.reconnect_ms), RECONNECT, host)
        elif kind == RECONNECT and not self.broker.connected(client):
            self.hosts[client].reconnect(now)

    def crash(self, node: SimLedger, crash: Any) -> None:
        """Stop ``node`` part-way through its next event (after 0-3 of its actions)."""
        node.crash_after = self.fault_rng.randrange(4)
        node.power_loss = crash.power_loss
        self.trace(f"n{node.index} crashes (after {node.crash_after} actions of its next event)")
        if crash.restart_ms is None:
            node.crash(self.now_ms)  # down for good: at once

    def submit(self) -> None:
        """The wallet submits the pool's next transfer."""
        pool = tx_pool()
        if self.progress_done_ms is not None or len(self.wallet.submitted) >= len(pool):
            return  # enough: the run drains from here
        self.wallet.submit(pool[len(self.wallet.submitted)], self.now_ms)
        self.push(self.now_ms + self.submit_rng.randint(*self.config.submit_gap_ms), SUBMIT)

    def check_targets(self) -> None:
        """After a decision: is the progress target met, is everything committed?"""
        base = self.progress_base
        if base is not None and self.progress_done_ms is None:
            goal, least = self.config.progress_heights, self.config.min_blocks
            if all(n.height >= max(base[n.index] + goal, least) for n in self.live):
                self.progress_done_ms = self.now_ms
                self.trace(f"progress target met (+{goal} blocks, at least {least})")
        if self.progress_done_ms is not None:
            submitted = set(self.wallet.submitted)
            self.drained = self.wallet.settled and all(
                submitted <= self.committed_ids(n) for n in self.live
            )

    def committed_ids(self, node: SimLedger) -> set[bytes]:
        core = node.node.core if node.node is not None else None
        return set(core.recent_committed) if core is not None else set()

    def finish(self) -> None:
        """The end-of-run invariants (see check.py)."""
        observer, plan, config = self.observer, self.plan, self.config
        if observer.failed:
            return  # a violation stopped the run: the state after it proves nothing more
        now = self.now_ms
        if self.progress_done_ms is None:
            base = self.progress_base or {}
            for node in self.live:
                start = base.get(node.index, 0)
                target = max(start + config.progress_heights, config.min_blocks)
                if node.height < target:
                    consensus = node.node.core.replica.consensus if node.node else None
                    observer.violation(
                        now,
                        f"progress: n{node.index} has {node.height} blocks, {start} when the "
                        f"faults ended at {plan.settled_ms}ms; needs {target} "
                        f"(+{config.progress_heights}, at least {config.min_blocks}) within "
                        f"{config.progress_ms}ms; stuck at height "
                        f"{consensus.height if consensus else '-'} round "
                        f"{consensus.round if consensus else '-'}",
                    )
        else:
            chains = {node.index: node.blocks() for node in self.live}
            for problem in check_nothing_lost(chains, list(self.wallet.submitted.values())):
                observer.violation(now, problem)
            unsettled = len(self.wallet.replays) - len(self.wallet.final)
            if unsettled:
                observer.violation(
                    now,
                    f"lost: {unsettled} replays without a final receipt within {config.drain_ms}ms",
                )
        longest = max((node.blocks() for node in self.honest if node.alive), key=len, default=[])
        wallet = self.wallet
        for problem in check_receipts(
            longest, wallet.receipts, {**wallet.submitted, **wallet.replays}
        ):
            observer.violation(now, problem)
        for problem in check_validity(
            {node.index: node.blocks() for node in self.honest if node.alive},
            genesis=genesis(config.nodes),
            certificates=self.certificates,
        ):
            observer.violation(now, problem)
        accused = observer.names.get(observer.byzantine or b"", "")
        if observer.equivocation_witnessed and not observer.evidence[accused]:
            observer.violation(
                now, f"evidence: {accused} equivocated to a node at that height, no Evidence"
            )

    def result(self) -> SimResult:
        counters = dict(sorted(self.counters.items()))
        counters["submitted"] = len(self.wallet.submitted)
        counters["evidence"] = sum(self.observer.evidence.values())
        counters["equivocation_witnessed"] = int(self.observer.equivocation_witnessed)
        return SimResult(
            seed=self.seed,
            scenario=self.scenario,
            plan=self.plan.describe(),
            ok=not self.observer.violations,
            violations=tuple(self.observer.violations),
            heights=tuple(node.height for node in self.ledgers),
            counters=counters,
            sim_ms=self.now_ms,
            replay=replay_command(self.seed, self.config),
            trace=tuple(self.trace_lines or ()),
        )


def run_seed(seed: int, config: SimConfig, *, trace: bool = False) -> SimResult:
    """One deterministic run: the same seed and config give the same result."""
    return Simulation(seed, config, trace=trace).run()
