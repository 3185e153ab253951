"""The simulator's processes: each hosts shipped code the way its real process does.

    SimLedger   a ledger node: node.LedgerNode (store, intake, LedgerCore, Replica,
                ConsensusCore) over a SimDisk, resumed from that disk on every restart
    SimDevice   a device agent: device_agent.core.AgentCore
    SimWallet   a client that submits transfers and resends what is not committed yet,
                and at once the nonce a HELD receipt says is missing, as micromine's
                load generator does; it keeps every receipt, for check.py

What a host adds is only what its real adapter adds: a clock (simulated time plus the
genesis timestamp and a per-process skew), subscriptions on (re)connection, carrying
out outputs in order.  A host that crashes part-way through an event's outputs has
carried out exactly the ones before the cut.
"""

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from micromine.device_agent.core import AgentCore, Lie
from micromine.ledger_node.consensus.tendermint import ROUND_WINDOW
from micromine.ledger_node.core.actions import Action, CommitBlock, EvidenceFound
from micromine.ledger_node.core.ledger import ReplicaFactory
from micromine.ledger_node.node import LedgerNode
from micromine.ledger_node.sim.chain import CHAIN_ID, GENESIS_MS, genesis, replay_of
from micromine.ledger_node.sim.disk import SimDisk
from micromine.protocol import topics
from micromine.protocol.block import Block
from micromine.protocol.codec import Message, decode, encode
from micromine.protocol.consensus import Precommit, Prevote, Proposal
from micromine.protocol.crypto import KeyPair
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.messages import Receipt, Receipts, Submission, Transaction
from micromine.protocol.topics import Channel, Publish

if TYPE_CHECKING:
    from micromine.ledger_node.sim.check import Observer

Vote = Proposal | Prevote | Precommit
RESEND_MS = 3_000  # a wallet resubmits what has no COMMITTED receipt after this long
HINT_RESEND_MS = 500  # ... and a nonce a HELD receipt asks for, unless sent this recently


class World(Protocol):
    """What a host may do to the rest of the simulation."""

    now_ms: int
    observer: "Observer"

    def connect(self, client: int, filters: list[str]) -> None: ...

    def disconnect(self, client: int) -> None: ...

    def publish(self, client: int, publish: Publish) -> None: ...

    def count(self, what: str, amount: int = 1) -> None: ...

    def well_formed(self, message: "Vote", proposer: bytes) -> bool: ...

    def trace(self, text: str) -> None: ...


class SimLedger:
    def __init__(
        self,
        *,
        index: int,
        key: KeyPair,
        world: World,
        validators: int,
        seed: int,
        skew_ms: int,
        audit_rate: float,
        replica: ReplicaFactory,
        honest: bool,
        withhold: bool = False,
    ) -> None:
        self.index, self.key, self.world, self.honest = index, key, world, honest
        # A Byzantine owner that keeps its transactions from devices and its receipts
        # from submitters (faults.BYZANTINE_MODES "withhold"): its peers must take over.
        self.withhold = withhold
        self.genesis = genesis(validators)
        self.seed, self.skew_ms, self.audit_rate = seed, skew_ms, audit_rate
        self.replica = replica
        self.disk = SimDisk(f"n{index}.db")
        self.node: LedgerNode | None = None
        self.boots = 0
        self.crash_after: int | None = None  # crash after this many actions of the next event
        self.power_loss = False  # ... and lose what was not synced
        self.silent_from, self.silent_until = 0, 0  # publishes nothing in [from, until)
        self.consensus_topic = topics.consensus(CHAIN_ID, key.public)

    def clock(self, now_ms: int) -> int:
        return GENESIS_MS + now_ms + self.skew_ms

    @property
    def alive(self) -> bool:
        return self.node is not None

    @property
    def height(self) -> int:
        """Committed blocks (on disk, when crashed)."""
        if self.node is not None:
            return self.node.core.tip.height
        return -1

    def boot(self, now_ms: int) -> None:
        self.boots += 1
        store = self.disk.open(self.genesis)
        self.node = LedgerNode.open(
            store,
            self.genesis,
            self.key,
            rng=random.Random(f"{self.seed}/n{self.index}/boot{self.boots}"),
            now_ms=self.clock(now_ms),
            audit_rate=self.audit_rate,
            replica=self.replica,
        )
        self.world.connect(self.index, [f for f, _qos in self.node.subscriptions()])
        self.carry_out(self.node.start(self.clock(now_ms)), now_ms)

    def reconnect(self, now_ms: int) -> None:
        """After a broker restart: subscribe again (the link does; the node is told
        nothing, as service.py's loop only logs the reconnection)."""
        if self.node is not None:
            self.world.connect(self.index, [f for f, _qos in self.node.subscriptions()])

    def crash(self, now_ms: int) -> None:
        if self.node is None:
            return
        power, self.power_loss = self.power_loss, False
        self.world.trace(
            f"n{self.index} {'loses power' if power else 'crashes'} at height {self.height}"
        )
        self.world.disconnect(self.index)
        self.disk.crash(self.node.store, power_loss=power)
        self.node = None
        self.crash_after = None
        self.world.observer.on_crash(self.index)

    def tick(self, now_ms: int) -> None:
        if self.node is not None:
            self.carry_out(self.node.tick(self.clock(now_ms)), now_ms)

    def deliver(self, topic: str, payload: bytes, now_ms: int) -> None:
        node = self.node
        if node is None:
            self.world.count("lost.crashed")
            return
        if self.world.observer.byzantine is not None and topic.startswith(
            topics.all_consensus(CHAIN_ID).removesuffix("+")
        ):
            self.witness(payload)
        errors = node.errors
        actions = node.handle(topic, payload, self.clock(now_ms))
        if node.errors != errors:
            self.world.observer.violation(
                now_ms, f"n{self.index} raised on {topic}: {node.last_error!r}"
            )
        self.carry_out(actions, now_ms)

    def witness(self, payload: bytes) -> None:
        """Note an equivocation of the Byzantine node that this core can see."""
        assert self.node is not None
        try:
            message: Message = decode(payload)
        except DecodeError:
            return
        consensus = self.node.core.replica.consensus
        if isinstance(message, Proposal | Prevote | Precommit) and self.world.well_formed(
            message, consensus.proposer(message.height, message.round)
        ):
            self.world.observer.on_delivered(
                self.index, message, consensus.height, consensus.round + ROUND_WINDOW
            )

    def carry_out(self, actions: Sequence[Action], now_ms: int) -> None:
        """The node's adapter: storage in order, then the publications (LedgerNode.execute)
        -- or only the first ``crash_after`` actions, and then the crash."""
        assert self.node is not None
        cut = self.crash_after
        if cut is not None:
            actions = actions[:cut]
        for publish in self.node.execute(actions):
            self.observe_publish(publish, now_ms)
            if self.withhold and self.is_withheld(publish):
                self.world.count("byzantine.withheld")
            elif not self.silent_from <= now_ms < self.silent_until:
                self.world.publish(self.index, publish)
            else:
                self.world.count("lost.silent")
        for action in actions:
            if isinstance(action, CommitBlock):
                self.world.observer.on_decide(self.index, action.block, now_ms)
                self.world.count("decisions")
                self.world.trace(
                    f"n{self.index} committed height {action.block.height} "
                    f"{action.block.hash.hex()[:10]} ({len(action.block.txs)} txs, "
                    f"round {action.block.commit_round})"
                )
            elif isinstance(action, EvidenceFound):
                self.world.observer.on_evidence(self.index, action.first, action.second, now_ms)
        if cut is not None:
            self.world.count("crash.mid_outputs")
            self.crash(now_ms)

    def is_withheld(self, publish: Publish) -> bool:
        parsed = topics.parse(CHAIN_ID, publish.topic)
        return parsed is not None and parsed.channel in (Channel.WORK, Channel.RECEIPTS)

    def observe_publish(self, publish: Publish, now_ms: int) -> None:
        """What an honest node signs must never contradict what it signed before."""
        if not self.honest or publish.topic != self.consensus_topic:
            return
        message: Message = decode(publish.payload)
        if (
            isinstance(message, Proposal | Prevote | Precommit)
            and message.signer == self.key.public
        ):
            self.world.observer.on_signed(self.index, message, now_ms)

    def blocks(self) -> list[Block]:
        """The committed chain as this node's disk holds it."""
        if self.node is None:
            return []
        store = self.node.store
        return [decode(data, Block) for data in store.blocks_bytes(1, self.height)]


class SimDevice:
    def __init__(self, *, index: int, key: KeyPair, world: World, lie: Lie | None) -> None:
        self.index, self.world = index, world
        self.core = AgentCore(key, CHAIN_ID, window=4, heartbeat_ms=2_000, lie=lie)

    def clock(self, now_ms: int) -> int:
        return GENESIS_MS + now_ms

    def boot(self, now_ms: int) -> None:
        self.world.connect(self.index, [self.core.work_topic])
        self.emit(self.core.on_connected(self.clock(now_ms)))

    def reconnect(self, now_ms: int) -> None:
        self.boot(now_ms)  # the agent announces itself on every connection

    def tick(self, now_ms: int) -> None:
        self.emit(self.core.on_tick(self.clock(now_ms)))

    def deliver(self, topic: str, payload: bytes, now_ms: int) -> None:
        self.emit(self.core.on_work(payload, self.clock(now_ms)))

    def emit(self, outputs: Sequence[object]) -> None:
        for output in outputs:
            if isinstance(output, Publish):
                self.world.publish(self.index, output)


class SimWallet:
    """Submits transactions one by one and resends each until a COMMITTED receipt; once
    a sender's first transfer is committed, submits a replay of it (another transfer
    with its nonce) and resends that until a final receipt."""

    def __init__(self, *, index: int, world: World, reply_to: bytes) -> None:
        self.index, self.world, self.reply_to = index, world, reply_to
        self.submitted: dict[bytes, Transaction] = {}  # by tx id, in submission order
        self.by_nonce: dict[tuple[bytes, int], Transaction] = {}  # (sender, nonce) -> tx
        self.replays: dict[bytes, Transaction] = {}  # by tx id
        self.last_sent: dict[bytes, int] = {}
        self.committed: dict[bytes, int] = {}  # tx id -> height a receipt named
        self.final: set[bytes] = set()  # replays with a final receipt
        self.receipts: list[tuple[int, Receipt]] = []  # (time, receipt), every one taken

    def boot(self, now_ms: int) -> None:
        self.world.connect(self.index, [topics.receipts(CHAIN_ID, self.reply_to)])

    def reconnect(self, now_ms: int) -> None:
        self.boot(now_ms)

    def submit(self, tx: Transaction, now_ms: int) -> None:
        self.submitted[tx.id] = tx
        self.by_nonce[(tx.sender, tx.nonce)] = tx
        self.send(tx, now_ms)

    def send(self, tx: Transaction, now_ms: int) -> None:
        self.last_sent[tx.id] = now_ms
        submission = Submission(CHAIN_ID, self.reply_to, (encode(tx),))
        topic = topics.submit(CHAIN_ID)
        self.world.publish(self.index, Publish.on(Channel.SUBMIT, topic, encode(submission)))

    def tick(self, now_ms: int) -> None:
        for tx_id, tx in self.submitted.items():
            if tx_id not in self.committed and now_ms - self.last_sent[tx_id] >= RESEND_MS:
                self.world.count("wallet.resent")
                self.send(tx, now_ms)
        for tx_id, tx in self.replays.items():
            if tx_id not in self.final and now_ms - self.last_sent[tx_id] >= RESEND_MS:
                self.send(tx, now_ms)

    @property
    def settled(self) -> bool:
        """Every replay has a final receipt."""
        return len(self.final) == len(self.replays)

    def deliver(self, topic: str, payload: bytes, now_ms: int) -> None:
        receipts = decode(payload, Receipts)
        for receipt in receipts.receipts:
            self.receipts.append((now_ms, receipt))
            tx_id = receipt.item_id
            if receipt.final and tx_id in self.replays:
                self.final.add(tx_id)
            if receipt.status == ReceiptStatus.COMMITTED:
                self.committed[tx_id] = receipt.value
                self._replay(tx_id, now_ms)
            elif receipt.status == ReceiptStatus.REJECTED:
                self.world.count("wallet.rejected")
            elif receipt.status == ReceiptStatus.HELD:
                self.world.count("wallet.held")
                if receipt.value == Reason.NONCE_GAP:
                    self._send_missing(tx_id, receipt.next_nonce, now_ms)

    def _replay(self, tx_id: bytes, now_ms: int) -> None:
        tx = self.submitted.get(tx_id)
        if tx is not None and tx.nonce == 0:
            replay = replay_of(tx)
            if replay.id not in self.replays:
                self.replays[replay.id] = replay
                self.send(replay, now_ms)

    def _send_missing(self, held_id: bytes, nonce: int | None, now_ms: int) -> None:
        """A ledger holds ``held_id`` for the sender's ``nonce``: send that one again."""
        held = self.submitted.get(held_id)
        if held is None or nonce is None:
            return
        missing = self.by_nonce.get((held.sender, nonce))
        if (
            missing is not None
            and missing.id not in self.committed
            and now_ms - self.last_sent[missing.id] >= HINT_RESEND_MS
        ):
            self.world.count("wallet.hinted")
            self.send(missing, now_ms)
