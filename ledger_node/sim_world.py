"""The simulation engine: one run of n nodes over the simulated network (see simulator.py).

A discrete-event loop over simulated milliseconds: a heap of (time, seq, event).  No wall
clock, threads or sockets; all randomness comes from ``random.Random`` objects derived
from the seed (one per concern, so the network's draws do not shift when the Byzantine
node's do).  ``seed % len(scenarios)`` picks the scenario (sim_faults.py), unless the
config names one.  Nodes exchange bytes (sim_node.py decodes them); transactions are
acknowledged to every live node at random times until the progress target is met; then
the run drains until every acknowledged transaction is committed everywhere.  The
invariants are listed in sim_check.py.
"""

import heapq
import random
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micromine.ledger_node.consensus import ConsensusCore, Timeouts
from micromine.ledger_node.sim_app import (
    CHAIN_ID,
    CertificateChecker,
    tx_pool,
    validator_keys,
    validator_publics,
)
from micromine.ledger_node.sim_byzantine import ByzantineNode
from micromine.ledger_node.sim_check import Observer, check_nothing_lost, check_validity
from micromine.ledger_node.sim_faults import FaultPlan, Network, draw_plan, scenarios
from micromine.ledger_node.sim_node import SimNode, reply_to_of
from micromine.protocol.codec import is_signature_valid
from micromine.protocol.consensus import Precommit, Prevote, Proposal
from micromine.protocol.messages import Transaction

DELIVER, TICK, ACK, CRASH, RESTART, SETTLE, NOISE = range(7)
EVENT_NAMES = ("deliver", "tick", "ack", "crash", "restart", "settle", "noise")
Event = tuple[int, int, int, int, int, bytes]  # time, seq, kind, node, src, payload


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 4
    byzantine: bool = False  # add the Byzantine scenarios to the mix
    scenario: str | None = None  # run only this scenario (default: seed % len(mix))
    core: type[ConsensusCore] | None = None  # the honest nodes' core (default: the real one)
    timeouts: Timeouts = field(default_factory=Timeouts)
    tick_ms: int = 50  # how often each core's on_tick runs
    progress_heights: int = 3  # H: blocks every honest node must commit after the faults
    min_blocks: int = 6  # ... and at least this many in all (a run's length)
    progress_ms: int = 30_000  # ... within this long after the faults end
    drain_ms: int = 20_000  # then every acknowledged tx committed everywhere within this
    ack_gap_ms: tuple[int, int] = (100, 700)  # time between acknowledgements
    gossip_ms: int = 1_000  # a stuck node re-sends its height's messages this often; 0: never

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
    heights: tuple[int, ...]  # committed blocks per node (the Byzantine one included)
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
    parts = ["python -m micromine.ledger_node.simulator", f"--seed {seed}"]
    if config.nodes != 4:
        parts.append(f"--nodes {config.nodes}")
    if config.byzantine:
        parts.append("--byzantine")
    if config.scenario is not None:
        parts.append(f"--scenario {config.scenario}")
    prefix = ""
    if config.core is not None and config.core is not ConsensusCore:
        parts.append(f"--core {config.core.__module__}:{config.core.__qualname__}")
        module_file = getattr(sys.modules.get(config.core.__module__), "__file__", None)
        if module_file and not config.core.__module__.startswith("micromine."):
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
        self.ack_rng = random.Random(f"{seed}/ack")
        self.fault_rng = random.Random(f"{seed}/faults")
        self.now_ms = 0
        self.gossip_ms = config.gossip_ms
        self.counters: Counter[str] = Counter()
        self._signatures: dict[tuple[bytes, bytes], bool] = {}
        self.trace_lines: list[str] | None = [] if trace else None
        self.queue: list[Event] = []
        self.seq = 0
        keys = validator_keys(config.nodes)
        publics = validator_publics(config.nodes)
        self.certificates = CertificateChecker(CHAIN_ID, publics)
        self.registry: set[bytes] = set()  # every acknowledged transaction id
        self.acknowledged: list[Transaction] = []
        byzantine = self.plan.byzantine
        self.observer = Observer(
            names={key: f"n{i}" for i, key in enumerate(publics)},
            honest=frozenset(k for i, k in enumerate(publics) if i != byzantine),
            byzantine=publics[byzantine] if byzantine is not None else None,
        )
        self.nodes: list[SimNode] = []
        for i, key in enumerate(keys):
            common: dict[str, Any] = {
                "index": i, "key": key, "world": self, "chain_id": CHAIN_ID,
                "validators": publics, "timeouts": config.timeouts,
                "certificates": self.certificates, "registry": self.registry,
            }  # fmt: skip
            if i == byzantine:
                rng = random.Random(f"{seed}/byzantine")
                modes = self.plan.byzantine_modes
                node: SimNode = ByzantineNode(
                    modes=modes, rng=rng, core_class=ConsensusCore, **common
                )
            else:
                node = SimNode(core_class=config.core or ConsensusCore, **common)
            self.nodes.append(node)
        self.honest = [node for node in self.nodes if node.honest]
        # Liveness is owed by the nodes that can talk: not one that never speaks again.
        mute = (
            self.plan.silence.node
            if self.plan.silence and self.plan.silence.end_ms is None
            else None
        )
        self.live = [node for node in self.honest if node.index != mute]
        self.reply_index = {reply_to_of(i): i for i in range(config.nodes)}
        self.progress_base: dict[int, int] | None = None  # honest node -> blocks at settle
        self.progress_done_ms: int | None = None
        self.drained = False

    # ---- the World protocol (what nodes may call) ---------------------------------

    def send(self, src: int, dst: int, payload: bytes) -> None:
        delays = self.network.delays(src, dst, self.now_ms)
        self.counters["net.sent"] += 1
        if not delays:
            self.counters["net.lost"] += 1
        elif len(delays) > 1:
            self.counters["net.duplicated"] += 1
        for delay in delays:
            self.push(self.now_ms + delay, DELIVER, dst, src, payload)

    def signature_valid(self, message: Proposal | Prevote | Precommit) -> bool:
        """Memoised (a pure function of the message), for the evidence bookkeeping."""
        memo_key = (message.id, message.signature)
        found = self._signatures.get(memo_key)
        if found is None:
            found = self._signatures[memo_key] = is_signature_valid(message)
        return found

    def unheard(self, now_ms: int) -> set[int]:
        return self.network.unheard(now_ms)

    def node_of_reply_to(self, reply_to: bytes) -> int | None:
        return self.reply_index.get(reply_to)

    def trace(self, text: str) -> None:
        if self.trace_lines is not None:
            self.trace_lines.append(f"t={self.now_ms:>6}ms {text}")

    # ---- the loop -----------------------------------------------------------------

    def push(
        self, at_ms: int, kind: int, node: int = 0, src: int = 0, payload: bytes = b""
    ) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at_ms, self.seq, kind, node, src, payload))

    def run(self) -> SimResult:
        plan, config = self.plan, self.config
        for node in self.nodes:
            node.boot(0)
        self.push(config.tick_ms, TICK)
        self.push(self.ack_rng.randint(0, config.ack_gap_ms[1]), ACK)
        for crash in plan.crashes:
            self.push(crash.at_ms, CRASH, crash.node)
            self.push(crash.restart_ms, RESTART, crash.node)
        if plan.silence is not None:
            silent = self.nodes[plan.silence.node]
            silent.silent_from = plan.silence.start_ms
            silent.silent_until = plan.silence.end_ms if plan.silence.end_ms is not None else 2**62
        self.push(plan.settled_ms, SETTLE)
        if plan.byzantine is not None and plan.byzantine_modes & {"garbage", "replay"}:
            self.push(50, NOISE, plan.byzantine)
        decisions = 0
        while self.queue and not self.observer.failed and not self.drained:
            at_ms, _seq, kind, index, src, payload = heapq.heappop(self.queue)
            if self.progress_done_ms is None:
                deadline = plan.settled_ms + config.progress_ms
            else:
                deadline = self.progress_done_ms + config.drain_ms
            if at_ms > deadline:
                break
            self.now_ms = at_ms
            try:
                self.dispatch(kind, index, src, payload)
            except Exception as exc:  # a core must never raise, whatever arrives
                where = "".join(traceback.format_exception(exc, limit=-3)).strip().splitlines()
                self.observer.violation(
                    at_ms,
                    f"n{index} raised on {EVENT_NAMES[kind]}: {exc!r} | " + " / ".join(where[-4:]),
                )
                break
            if self.counters["decisions"] != decisions:
                decisions = self.counters["decisions"]
                self.check_targets()
        self.finish()
        return self.result()

    def dispatch(self, kind: int, index: int, src: int, payload: bytes) -> None:
        now, node = self.now_ms, self.nodes[index]
        if kind == DELIVER:
            node.deliver(src, payload, now)
        elif kind == TICK:
            for each in self.nodes:
                each.tick(now)
            self.push(now + self.config.tick_ms, TICK)
            if self.progress_done_ms is None and self.progress_base is not None:
                self.check_targets()
        elif kind == ACK:
            self.acknowledge()
        elif kind == CRASH:
            node.crash_after = self.fault_rng.randrange(4)  # during its next event
            self.trace(f"n{index} crashes (after {node.crash_after} outputs of its next event)")
        elif kind == RESTART:
            if node.alive:
                node.crash()
            node.boot(now)
            self.trace(f"n{index} restarts at height {node.height}")
        elif kind == SETTLE:
            self.progress_base = {n.index: len(n.app.chain) for n in self.live}
            self.trace(f"faults over; committed so far {self.progress_base}")
        elif kind == NOISE:
            assert isinstance(node, ByzantineNode)
            node.noise(now)
            self.push(now + node.rng.randint(20, 300), NOISE, index)

    def acknowledge(self) -> None:
        """The next pool transaction is acknowledged to every live node."""
        if self.progress_done_ms is not None or len(self.acknowledged) >= len(tx_pool()):
            return  # enough: the run drains from here
        tx = tx_pool()[len(self.acknowledged)]
        reached = [node for node in self.nodes if node.alive]
        if any(node.honest for node in reached):
            self.acknowledged.append(tx)
            self.registry.add(tx.id)
            for node in reached:
                node.app.acknowledge(tx)
        self.push(self.now_ms + self.ack_rng.randint(*self.config.ack_gap_ms), ACK)

    def check_targets(self) -> None:
        """After a decision: is the progress target met, are all acks committed?"""
        base = self.progress_base
        if base is not None and self.progress_done_ms is None:
            goal, least = self.config.progress_heights, self.config.min_blocks
            if all(len(n.app.chain) >= max(base[n.index] + goal, least) for n in self.live):
                self.progress_done_ms = self.now_ms
                self.trace(
                    f"progress target met (+{goal} blocks, at least {least}, on every live node)"
                )
        if self.progress_done_ms is not None:
            self.drained = all(self.registry <= n.app.committed for n in self.live)

    def finish(self) -> None:
        """The end-of-run invariants (see sim_check.py)."""
        observer, plan, config = self.observer, self.plan, self.config
        if observer.failed:
            return  # a violation stopped the run: the state after it proves nothing more
        now = self.now_ms
        if self.progress_done_ms is None:
            base = self.progress_base or {}
            for node in self.live:
                start = base.get(node.index, 0)
                target = max(start + config.progress_heights, config.min_blocks)
                if len(node.app.chain) < target:
                    observer.violation(
                        now,
                        f"progress: n{node.index} has {len(node.app.chain)} blocks, "
                        f"{start} when the faults ended at {plan.settled_ms}ms; needs "
                        f"{target} (+{config.progress_heights}, at least {config.min_blocks}) "
                        f"within {config.progress_ms}ms; stuck at height {node.height} "
                        f"round {getattr(node.core, 'round', '-')}",
                    )
        else:
            chains = {node.index: node.app.chain for node in self.live}
            for problem in check_nothing_lost(chains, self.acknowledged):
                observer.violation(now, problem)
        for problem in check_validity(
            {node.index: node.app.chain for node in self.honest},
            chain_id=CHAIN_ID,
            validators=validator_publics(config.nodes),
            acknowledged=self.acknowledged,
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
        counters["acknowledged"] = len(self.acknowledged)
        counters["evidence"] = sum(self.observer.evidence.values())
        counters["equivocation_witnessed"] = int(self.observer.equivocation_witnessed)
        return SimResult(
            seed=self.seed,
            scenario=self.scenario,
            plan=self.plan.describe(),
            ok=not self.observer.violations,
            violations=tuple(self.observer.violations),
            heights=tuple(len(node.app.chain) for node in self.nodes),
            counters=counters,
            sim_ms=self.now_ms,
            replay=replay_command(self.seed, self.config),
            trace=tuple(self.trace_lines or ()),
        )
