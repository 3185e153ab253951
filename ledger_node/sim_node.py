"""A simulated ledger node: a ConsensusCore, its SimApp, what it persists, and catch-up.

The node is the adapter the real service would be, minus sockets and clocks: it decodes
the bytes the simulated network delivers (``protocol.codec.decode``; a DecodeError is a
counted drop), hands consensus messages to its core, carries out the core's outputs in
order (persist, then send), answers SyncRequests with committed blocks, and feeds the
blocks it gets back to ``on_certified_block``.

What survives a crash is what a real node keeps on disk: the last ``SignedState``, the
committed chain and the acknowledged transactions.  A restart builds a new core from them.

Gossip.  Tendermint's liveness proof assumes that a message one correct node received
reaches every correct node by GST + delta (the paper's gossip layer).  Over a network that
loses messages before GST that takes retransmission and relaying (docs/CONSENSUS.md,
"Gossip").  Each honest node does what the adapters must: while its height has not moved
for ``gossip_ms``, it re-sends ``core.gossip_messages()`` (every validly signed message
the core keeps of this height and the next, others' included) to every peer.  The core
drops identical copies before any signature check.  With ``gossip_ms`` 0 there is no
gossip; a lossy run then often stalls for good.
"""

from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol

from micromine.ledger_node.consensus import (
    ROUND_WINDOW,
    Broadcast,
    ConsensusApp,
    ConsensusCore,
    Decide,
    Evidence,
    Output,
    PersistSigned,
    Rejected,
    SignedState,
    Timeouts,
)
from micromine.ledger_node.sim_app import CertificateChecker, SimApp
from micromine.ledger_node.sim_check import Observer
from micromine.protocol.block import Block
from micromine.protocol.codec import Message, decode, encode
from micromine.protocol.consensus import (
    MAX_SYNC_BLOCKS,
    NIL,
    Precommit,
    Prevote,
    Proposal,
    SyncRequest,
)
from micromine.protocol.crypto import KeyPair
from micromine.protocol.errors import DecodeError
from micromine.protocol.limits import REPLY_TO_LEN
from micromine.protocol.messages import Transaction

SYNC_GAP_MS = 400  # at most one SyncRequest per node per this long
STALL_SYNC_MS = 3_000  # no decision for this long: ask peers anyway
MAX_BUFFERED = 4  # sync candidates kept per height (a Byzantine peer may send junk)


class World(Protocol):
    """What a node may do to the rest of the simulation."""

    now_ms: int
    observer: Observer
    counters: Counter[str]
    gossip_ms: int

    def signature_valid(self, message: Proposal | Prevote | Precommit) -> bool: ...

    def send(self, src: int, dst: int, payload: bytes) -> None: ...

    def node_of_reply_to(self, reply_to: bytes) -> int | None: ...

    def trace(self, text: str) -> None: ...

    def unheard(self, now_ms: int) -> set[int]: ...


def reply_to_of(index: int) -> bytes:
    return index.to_bytes(REPLY_TO_LEN, "big")


class SimNode:
    """Shared by honest and Byzantine nodes: the core, the app, I/O and catch-up."""

    honest = True

    def __init__(
        self,
        *,
        index: int,
        key: KeyPair,
        world: World,
        chain_id: str,
        validators: tuple[bytes, ...],
        timeouts: Timeouts,
        core_class: type[ConsensusCore],
        certificates: CertificateChecker,
        registry: AbstractSet[bytes],
    ) -> None:
        self.index = index
        self.key = key
        self.public = key.public
        self.world = world
        self.chain_id = chain_id
        self.validators = validators
        self.timeouts = timeouts
        self.core_class = core_class
        self.certificates = certificates
        self.registry = registry
        self.peers = tuple(i for i in range(len(validators)) if i != index)
        self.app = self.new_app((), ())
        self.core: ConsensusCore | None = None
        self.signed: SignedState | None = None  # persisted before any send
        self.buffer: dict[int, list[Block]] = {}  # sync answers above our height
        self.last_sync_ms = -SYNC_GAP_MS
        self.last_decide_ms = 0
        self.silent_from = 0
        self.silent_until = 0  # sends nothing in [silent_from, silent_until)
        self.crash_after: int | None = None  # crash after this many outputs of the next event
        self.last_gossip_ms = 0

    # ---- lifecycle ----------------------------------------------------------------

    def new_app(self, chain: Sequence[Block], acknowledged: Sequence[Transaction]) -> SimApp:
        return SimApp(
            chain_id=self.chain_id,
            key=self.key,
            validators=self.validators,
            certificates=self.certificates,
            registry=self.registry,
            chain=chain,
            acknowledged=acknowledged,
        )

    def consensus_app(self) -> ConsensusApp:
        return self.app

    @property
    def alive(self) -> bool:
        return self.core is not None

    @property
    def height(self) -> int:
        return len(self.app.chain) + 1 if self.core is None else self.core.height

    def boot(self, now_ms: int) -> None:
        """(Re)start: a new core on top of the persisted chain and signed state."""
        self.app = self.new_app(self.app.chain, tuple(self.app.acknowledged.values()))
        self.buffer.clear()
        self.crash_after = None
        self.core = self.core_class(
            chain_id=self.chain_id,
            key=self.key,
            validators=self.validators,
            app=self.consensus_app(),
            timeouts=self.timeouts,
            height=len(self.app.chain) + 1,
            last_signed=self.signed,
        )
        self.last_decide_ms = now_ms
        self.apply(self.core.start(now_ms), now_ms)
        if self.app.chain or self.signed is not None:
            self.request_sync(now_ms)  # a restart: we have been away

    def crash(self) -> None:
        self.world.trace(f"n{self.index} crashed at height {self.height}")
        self.core = None
        self.buffer.clear()
        self.world.observer.on_crash(self.index)

    def silent(self, now_ms: int) -> bool:
        return self.silent_from <= now_ms < self.silent_until

    # ---- events -------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        if self.core is None:
            return
        self.apply(self.core.on_tick(now_ms), now_ms)
        if now_ms - self.last_decide_ms >= STALL_SYNC_MS:
            self.request_sync(now_ms)
        self.feed_buffer(now_ms)
        self.regossip(now_ms)

    def deliver(self, src: int, payload: bytes, now_ms: int) -> None:
        if self.core is None:
            self.world.counters["lost.crashed"] += 1
            return
        try:
            message: Message = decode(payload)
        except DecodeError as exc:
            self.world.counters[f"drop.decode.{exc.code.name.lower()}"] += 1
            return
        if isinstance(message, Proposal | Prevote | Precommit):
            self.on_consensus(message, now_ms)
        elif isinstance(message, SyncRequest):
            self.on_sync_request(message, now_ms)
        elif isinstance(message, Block):
            self.on_block(message, now_ms)
        else:
            self.world.counters["drop.unexpected_kind"] += 1
        self.feed_buffer(now_ms)  # a decision may have made a buffered block next

    def on_consensus(self, message: Proposal | Prevote | Precommit, now_ms: int) -> None:
        assert self.core is not None
        if message.height > self.core.height:
            self.request_sync(now_ms)
        observer = self.world.observer
        if message.signer == observer.byzantine and self.well_formed(message):
            observer.on_delivered(
                self.index, message, self.core.height, self.core.round + ROUND_WINDOW
            )
        self.apply(self.core.on_message(message, now_ms), now_ms)

    def well_formed(self, message: Proposal | Prevote | Precommit) -> bool:
        """Would a correct core count this message (so must report a conflicting twin)?
        Validator, signature, COMMIT signature, and a proposal's proposer and block."""
        assert self.core is not None
        if message.signer not in self.validators or not self.world.signature_valid(message):
            return False
        if isinstance(message, Precommit) and message.block_hash != NIL:
            return self.certificates.valid(
                message.voter, message.round, message.block_hash, message.commit_signature
            )
        if isinstance(message, Proposal):
            header = message.block.header
            return (
                message.proposer == self.core.proposer(message.height, message.round)
                and header.chain_id == self.chain_id
                and header.height == message.height
                and (header.proposer == message.proposer or message.pol_round > 0)
            )
        return True

    def on_sync_request(self, request: SyncRequest, now_ms: int) -> None:
        dst = self.world.node_of_reply_to(request.reply_to)
        if dst is None or request.chain_id != self.chain_id:
            self.world.counters["drop.sync_request"] += 1
            return
        chain = self.app.chain
        for height in range(request.from_height, min(request.to_height, len(chain)) + 1):
            self.send(dst, encode(chain[height - 1]), now_ms)

    def on_block(self, block: Block, now_ms: int) -> None:
        assert self.core is not None
        if block.height < self.core.height:
            self.world.counters["sync.stale_block"] += 1
            return
        candidates = self.buffer.setdefault(block.height, [])
        if len(candidates) < MAX_BUFFERED and block not in candidates:
            candidates.append(block)

    def feed_buffer(self, now_ms: int) -> None:
        """Hand buffered certified blocks to the core while one is for its height."""
        while self.core is not None and self.core.height in self.buffer:
            height = self.core.height
            for block in self.buffer.pop(height):
                self.world.counters["sync.fed"] += 1
                self.apply(self.core.on_certified_block(block, now_ms), now_ms)
                if self.core is None or self.core.height != height:
                    break
        if self.core is not None:
            for stale in [h for h in self.buffer if h < self.core.height]:
                del self.buffer[stale]

    def request_sync(self, now_ms: int) -> None:
        if self.core is None or now_ms - self.last_sync_ms < SYNC_GAP_MS:
            return
        self.last_sync_ms = now_ms
        start = len(self.app.chain) + 1
        request = SyncRequest(
            self.chain_id, start, start + MAX_SYNC_BLOCKS - 1, reply_to_of(self.index)
        )
        payload = encode(request)
        self.world.counters["sync.requests"] += 1
        for peer in self.peers:
            self.send(peer, payload, now_ms)

    # ---- gossip -------------------------------------------------------------------

    def regossip(self, now_ms: int) -> None:
        gossip_ms = self.world.gossip_ms
        if gossip_ms <= 0 or self.core is None or not self.honest:
            return
        if now_ms - max(self.last_decide_ms, self.last_gossip_ms) < gossip_ms:
            return
        self.last_gossip_ms = now_ms
        self.world.counters["gossip.rounds"] += 1
        for message in self.core.gossip_messages():
            payload = encode(message)
            for peer in self.peers:
                self.send(peer, payload, now_ms)

    def send(self, dst: int, payload: bytes, now_ms: int) -> None:
        if self.core is None:
            return  # crashed halfway through an event's outputs
        if self.silent(now_ms):
            self.world.counters["lost.silent"] += 1
            return
        self.world.send(self.index, dst, payload)

    # ---- outputs ------------------------------------------------------------------

    def apply(self, outputs: list[Output], now_ms: int) -> None:
        """Carry out the core's outputs in order (a crash may cut the list short)."""
        if self.crash_after is not None:
            kept, self.crash_after = self.crash_after, None
            for output in outputs[:kept]:
                self.apply_one(output, now_ms)
            self.world.counters["crash.mid_outputs"] += 1
            self.crash()
            return
        for output in outputs:
            self.apply_one(output, now_ms)

    def apply_one(self, output: Output, now_ms: int) -> None:
        observer = self.world.observer
        match output:
            case PersistSigned(state):
                self.signed = state
            case Broadcast(message):
                observer.on_signed(self.index, message, now_ms)
                payload = encode(message)
                for peer in self.peers:
                    self.send(peer, payload, now_ms)
            case Decide(block, round_):
                problem = self.app.commit(block)
                if problem is None and round_ != block.commit_round:
                    problem = f"Decide names round {round_}, the certificate {block.commit_round}"
                if problem is not None:
                    observer.violation(now_ms, f"n{self.index} decided a bad block: {problem}")
                observer.on_decide(self.index, block, now_ms)
                self.world.trace(
                    f"n{self.index} decided height {block.height} {block.hash.hex()[:10]} "
                    f"({len(block.txs)} txs, round {round_})"
                )
                self.last_decide_ms = now_ms
                self.world.counters["decisions"] += 1
            case Evidence(first, second):
                observer.on_evidence(self.index, first, second, now_ms)
                self.world.trace(
                    f"n{self.index} evidence: {observer.names.get(first.signer, '?')} signed two "
                    f"{type(first).__name__}s at height {first.height} round {first.round}"
                )
            case Rejected(reason, _sender):
                self.world.counters[f"rejected.{reason}"] += 1
