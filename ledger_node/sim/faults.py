"""The simulator's fault model: scenarios, the fault plan drawn for a seed, the network.

A scenario names a kind of run; ``draw_plan`` turns (scenario, rng) into a concrete
``FaultPlan``: when the network stabilises (GST), how lossy and slow it is before, which
links are cut when, which node crashes or falls silent and when, which node is Byzantine
and how it misbehaves.  Every number comes from the ``random.Random`` it is given, so a
seed names one run exactly.

Before GST a message may be lost, duplicated, or delayed by up to ``max_delay_ms``
(which reorders messages), and partitions cut links.  After GST nothing is lost or
duplicated and every delay is at most ``stable_delay_ms``: the partial-synchrony model
under which Tendermint promises progress.
"""

import random
from dataclasses import dataclass, field, replace

# Scenarios without a Byzantine node, then the ones with one; ``seed % len`` picks.
CRASH_SCENARIOS = (
    "clean", "lossy", "crash", "silent", "restarts", "power", "restart-crashed",
    "broker-restart",
)  # fmt: skip
BYZANTINE_SCENARIOS = ("byzantine", "lock-attack")

# How a Byzantine node misbehaves (the "byzantine" scenario draws a subset of these).
BYZANTINE_MODES = (
    "equivocate",  # two different signed proposals / votes for one height and round
    "invalid-proposals",  # proposes blocks that break a validity rule
    "invalid-votes",  # votes for invalid blocks and for hashes of no block
    "garbage",  # random bytes and mutated valid encodings
    "replay",  # re-sends old messages of other nodes
    "bad-sync",  # answers sync requests with tampered blocks
)
# Never hands out the work it owns, nor answers its submitters.  Drawn last, on its own,
# so that the plans of seeds drawn before it existed are unchanged.
WITHHOLD = "withhold"
AMNESIA = "amnesia"  # the lock attack: votes for every proposal, ignoring every lock


@dataclass(frozen=True, slots=True)
class Partition:
    """During [start_ms, end_ms) no message crosses between ``group`` and the rest; if
    ``one_way``, only the group's messages to the rest are lost (it still hears them)."""

    start_ms: int
    end_ms: int
    group: frozenset[int]
    one_way: bool = False

    def cuts(self, src: int, dst: int, now_ms: int) -> bool:
        if not self.start_ms <= now_ms < self.end_ms:
            return False
        if self.one_way:
            return src in self.group and dst not in self.group
        return (src in self.group) != (dst in self.group)


@dataclass(frozen=True, slots=True)
class Crash:
    """``node`` stops at ``at_ms`` (its process killed, or with ``power_loss`` the whole
    machine: what the disk had not synced is lost too) and starts again from its disk
    at ``restart_ms``; None: it never comes back (the run's one faulty node)."""

    node: int
    at_ms: int
    restart_ms: int | None
    power_loss: bool = False


@dataclass(frozen=True, slots=True)
class Silence:
    """``node`` sends nothing during [start_ms, end_ms); end_ms None = never again."""

    node: int
    start_ms: int
    end_ms: int | None


@dataclass(frozen=True, slots=True)
class BrokerRestart:
    """At ``at_ms`` the broker restarts: every subscription is gone (clean sessions),
    its retained messages too unless ``keep_retained`` (persistence on).  Each client
    notices and connects again, subscribing anew, after its own delay of up to
    ``reconnect_ms``; until then what it publishes waits in its outbox (paho queues QoS 1
    messages while disconnected), and goes out the moment it is back, whoever else has
    not subscribed yet."""

    at_ms: int
    keep_retained: bool
    reconnect_ms: int = 3_000


@dataclass(frozen=True, slots=True)
class FaultPlan:
    scenario: str
    gst_ms: int = 0
    loss: float = 0.0
    duplicate: float = 0.0
    max_delay_ms: int = 20
    stable_delay_ms: int = 20
    partitions: tuple[Partition, ...] = ()
    crashes: tuple[Crash, ...] = ()
    silence: Silence | None = None
    broker_restarts: tuple[BrokerRestart, ...] = ()
    byzantine: int | None = None
    byzantine_modes: frozenset[str] = field(default_factory=frozenset)

    @property
    def settled_ms(self) -> int:
        """When every transient fault is over: progress is measured from here."""
        ends = [self.gst_ms, *(c.restart_ms for c in self.crashes if c.restart_ms is not None)]
        ends += [b.at_ms + b.reconnect_ms for b in self.broker_restarts]
        if self.silence is not None and self.silence.end_ms is not None:
            ends.append(self.silence.end_ms)
        return max(ends)

    def describe(self) -> str:
        parts = [self.scenario, f"gst={self.gst_ms}ms"]
        if self.loss or self.duplicate or self.max_delay_ms != self.stable_delay_ms:
            parts.append(
                f"loss={self.loss:.2f} dup={self.duplicate:.2f} delay<={self.max_delay_ms}ms"
            )
        parts += [
            f"{'unheard' if p.one_way else 'partition'} {sorted(p.group)} {p.start_ms}-{p.end_ms}ms"
            for p in self.partitions
        ]
        parts += [
            f"{'power loss' if c.power_loss else 'crash'} n{c.node} {c.at_ms}-"
            + (f"{c.restart_ms}ms" if c.restart_ms is not None else "end")
            for c in self.crashes
        ]
        parts += [
            f"broker restart {b.at_ms}ms (retained {'kept' if b.keep_retained else 'lost'})"
            for b in self.broker_restarts
        ]
        if self.silence is not None:
            end = self.silence.end_ms if self.silence.end_ms is not None else "end"
            parts.append(f"silent n{self.silence.node} {self.silence.start_ms}-{end}ms")
        if self.byzantine is not None:
            parts.append(f"byzantine n{self.byzantine} {','.join(sorted(self.byzantine_modes))}")
        return "; ".join(parts)


def scenarios(byzantine: bool) -> tuple[str, ...]:
    return CRASH_SCENARIOS + BYZANTINE_SCENARIOS if byzantine else CRASH_SCENARIOS


def _lossy(rng: random.Random, scenario: str, gst_ms: int, heavy: bool) -> FaultPlan:
    """A plan whose network is lossy until ``gst_ms`` (heavily or mildly)."""
    return FaultPlan(
        scenario,
        gst_ms=gst_ms,
        loss=rng.uniform(0.05, 0.35) if heavy else rng.uniform(0.0, 0.1),
        duplicate=rng.uniform(0.0, 0.2),
        max_delay_ms=rng.choice((60, 250, 800, 2000)) if heavy else rng.choice((40, 150)),
    )


def _partitions(rng: random.Random, nodes: int, gst_ms: int, count: int) -> tuple[Partition, ...]:
    cuts = []
    for _ in range(count):
        start = rng.randrange(0, max(1, gst_ms - 300))
        end = min(gst_ms, start + rng.randint(300, 2_500))
        group = frozenset(rng.sample(range(nodes), rng.randint(1, nodes // 2)))
        cuts.append(Partition(start, end, group))
    return tuple(cuts)


def draw_plan(scenario: str, nodes: int, rng: random.Random) -> FaultPlan:
    """The concrete faults of one run of ``scenario`` (see the module docstring)."""
    if scenario == "clean":
        return FaultPlan(scenario, max_delay_ms=rng.choice((5, 20, 60)), stable_delay_ms=60)
    if scenario == "lossy":
        gst = rng.randint(2_000, 6_000)
        cuts = _partitions(rng, nodes, gst, rng.choice((0, 0, 1, 2)))
        return replace(_lossy(rng, scenario, gst, heavy=True), partitions=cuts)
    if scenario == "crash":
        gst = rng.randint(3_000, 7_000)
        node = rng.randrange(nodes)
        crashes = []
        at = rng.randint(200, gst // 2)
        for _ in range(rng.choice((1, 1, 2))):  # one node; a second crash after restarting
            if at >= gst - 100:
                break
            restart = rng.randint(at + 100, min(gst, at + 3_000))
            crashes.append(Crash(node, at, restart))
            at = restart + rng.randint(100, 1_500)
        return replace(_lossy(rng, scenario, gst, heavy=False), crashes=tuple(crashes))
    if scenario in ("restarts", "power"):
        # Several nodes restart, some more than once, often within one height: what a
        # restarted node kept (its lock, its valid value, its own votes) must be enough.
        gst = rng.randint(3_000, 8_000)
        nodes_hit = rng.sample(range(nodes), rng.randint(2, max(2, nodes // 2 + 1)))
        restarts = _restarts(rng, nodes_hit, gst, power=0.5 if scenario == "power" else 0.0)
        return replace(_lossy(rng, scenario, gst, heavy=False), crashes=restarts)
    if scenario == "restart-crashed":
        # One node down for good (the faulty one), and another restarts: the other
        # three can decide only with the restarted node's votes.
        gst = rng.randint(2_000, 6_000)
        dead, restarting = rng.sample(range(nodes), 2)
        gone = Crash(dead, rng.randint(0, gst // 2), None)
        restarts = (gone, *_restarts(rng, [restarting], gst, power=0.3))
        return replace(_lossy(rng, scenario, gst, heavy=False), crashes=restarts)
    if scenario == "silent":
        # Silent for a while (maybe past GST: it must then catch up), or for good: then
        # it is the faulty one and the other three must make progress without it.
        gst = rng.randint(1_000, 5_000)
        start = rng.randint(0, gst // 2)
        end = None if rng.random() < 0.3 else rng.randint(start + 500, gst + 4_000)
        silence = Silence(rng.randrange(nodes), start, end)
        return replace(_lossy(rng, scenario, gst, heavy=False), silence=silence)
    if scenario == "broker-restart":
        return _broker_restarts(rng, scenario, nodes)
    if scenario == "byzantine":
        gst = rng.randint(1_000, 5_000)
        modes = frozenset(mode for mode in BYZANTINE_MODES if rng.random() < 0.5)
        modes = modes or frozenset({rng.choice(BYZANTINE_MODES)})
        plan = _lossy(rng, scenario, gst, heavy=rng.random() < 0.3)
        plan = replace(plan, byzantine=rng.randrange(nodes), byzantine_modes=modes)
        if rng.random() < 0.3:
            plan = replace(plan, byzantine_modes=modes | {WITHHOLD})
        return plan
    if scenario == "lock-attack":
        # The Byzantine node votes for every proposal it sees while, one after another,
        # honest nodes go unheard (they still hear): the setting in which only the lock
        # rule keeps two honest nodes from committing different blocks.
        gst = rng.randint(5_000, 10_000)
        byzantine = rng.randrange(nodes)
        honest = [i for i in range(nodes) if i != byzantine]
        mutes, at = [], rng.randint(0, 500)
        while at < gst - 300:
            end = min(gst, at + rng.randint(1_500, 4_000))
            mutes.append(Partition(at, end, frozenset({rng.choice(honest)}), one_way=True))
            at = end + rng.randint(0, 1_000)
        return replace(
            _lossy(rng, scenario, gst, heavy=False),
            partitions=tuple(mutes),
            byzantine=byzantine,
            byzantine_modes=frozenset({AMNESIA}),
        )
    raise ValueError(f"unknown scenario {scenario!r}")


def _broker_restarts(rng: random.Random, scenario: str, nodes: int) -> FaultPlan:
    """The broker restarts once or twice, keeping or losing its retained messages; every
    client comes back a little later, in its own time; sometimes a node crashes and
    restarts too."""
    gst = rng.randint(2_000, 7_000)
    restarts = tuple(
        BrokerRestart(at, keep_retained=rng.random() < 0.5)
        for at in sorted(rng.sample(range(300, gst), rng.choice((1, 1, 2))))
    )
    crashes: tuple[Crash, ...] = ()
    if rng.random() < 0.5:
        at = rng.randint(200, gst)
        crashes = (Crash(rng.randrange(nodes), at, at + rng.randint(100, 2_500)),)
    plan = _lossy(rng, scenario, gst, heavy=False)
    return replace(plan, broker_restarts=restarts, crashes=crashes)


def _restarts(
    rng: random.Random, nodes: list[int], gst_ms: int, *, power: float
) -> tuple[Crash, ...]:
    """One to three crash-restarts of each of ``nodes`` before ``gst_ms``; each is a
    power loss with probability ``power``."""
    crashes = []
    for node in nodes:
        at = rng.randint(100, max(200, gst_ms // 2))
        for _ in range(rng.randint(1, 3)):
            if at >= gst_ms - 100:
                break
            restart = rng.randint(at + 50, min(gst_ms, at + 2_500))
            crashes.append(Crash(node, at, restart, power_loss=rng.random() < power))
            at = restart + rng.randint(50, 1_500)
    return tuple(sorted(crashes, key=lambda c: (c.at_ms, c.node)))


class Network:
    """Decides, per message, when (and how often) it arrives; see the module docstring."""

    def __init__(self, plan: FaultPlan, rng: random.Random) -> None:
        self.plan = plan
        self.rng = rng

    def cut(self, src: int, dst: int, now_ms: int) -> bool:
        return any(p.cuts(src, dst, now_ms) for p in self.plan.partitions)

    def unheard(self, now_ms: int) -> set[int]:
        """Nodes whose messages to others are being cut right now."""
        return {
            node
            for p in self.plan.partitions
            if p.one_way and p.start_ms <= now_ms < p.end_ms
            for node in p.group
        }

    def delays(self, src: int, dst: int, now_ms: int) -> list[int]:
        """Delivery delays of one message: [] lost, [d] once, [d1, d2] duplicated."""
        plan, rng = self.plan, self.rng
        if now_ms >= plan.gst_ms:
            return [rng.randint(1, plan.stable_delay_ms)]
        if self.cut(src, dst, now_ms) or rng.random() < plan.loss:
            return []
        first = rng.randint(1, plan.max_delay_ms)
        if rng.random() < plan.duplicate:
            return [first, rng.randint(1, plan.max_delay_ms)]
        return [first]
