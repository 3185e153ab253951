"""The ledger node's part in consensus: the app the consensus core asks, and the wiring
of its outputs, plus catch-up (sync) and re-broadcasting.

    ConsensusCore (consensus.py) decides *which* block; this module
      - answers its questions: has_work / propose (blocks.build_block) / is_valid
        (verify.verify_block against our committed state); both run the one state
        transition (transition.py), as does the commit of a decided block;
      - turns its outputs into actions: Broadcast -> Publish on consensus/<us>,
        PersistSigned -> persisted before that Publish, Decide -> commit (commit.py),
        Evidence -> logged with both signed messages, Rejected -> a counted drop;
      - re-sends our own messages of the current height every REBROADCAST_MS, since the
        broker may drop them (liveness needs eventual delivery, safety does not), and
        relays everyone's once a height is slow to decide, and re-sends our messages of
        the last decided height, so late peers can decide it and complete its
        certificate;
      - keeps the COMMIT signatures of the current, next and last RECENT_DECIDED heights
        (certificate.CommitPool) and stores each decided block with its canonical
        certificate, improved as signatures arrive, so that every node ends with the
        same bytes whichever round it decided in;
      - asks peers for the blocks it missed (SyncRequest) when it hears a validator at a
        later height, or when its height has lasted STALL_SYNC_MS with work waiting (the
        others may have decided it and gone quiet), and feeds the certified blocks that
        come back, in order.

Longer than 400 lines because proposing, validating, committing, certificate completion,
gossip and catch-up all act on the same per-height buffers of one adapter.
"""

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from micromine.ledger_node.chain.blocks import BuiltBlock, build_block
from micromine.ledger_node.chain.transition import InvalidBlockError, Transition, state_transition
from micromine.ledger_node.chain.verify import verify_block
from micromine.ledger_node.consensus.certificate import CommitPool
from micromine.ledger_node.consensus.tendermint import (
    ROUND_WINDOW,
    Broadcast,
    ConsensusCore,
    ConsensusMessage,
    Decide,
    Evidence,
    Output,
    PersistSigned,
    Rejected,
    SignedState,
    Timeouts,
)
from micromine.ledger_node.core.actions import (
    Action,
    EvidenceFound,
    ImproveCertificate,
    ServeSync,
)
from micromine.ledger_node.core.commit import forgeries_in, prove_forged
from micromine.protocol import topics
from micromine.protocol.block import Block, CommitSignature
from micromine.protocol.codec import Message, decode, encode, is_signature_valid
from micromine.protocol.consensus import MAX_SYNC_BLOCKS, Precommit, Prevote, Proposal, SyncRequest
from micromine.protocol.crypto import sha256
from micromine.protocol.errors import DecodeError
from micromine.protocol.limits import MAX_TIMESTAMP_MS
from micromine.protocol.topics import Channel, Publish

if TYPE_CHECKING:
    from micromine.ledger_node.core.ledger import LedgerCore

REBROADCAST_MS = 2000
SYNC_RETRY_MS = 2000
MAX_SYNC_BUFFER = 2 * MAX_SYNC_BLOCKS
# PRECISION of proposer-based timestamps: how far apart honest clocks may be.  A fresh
# proposal dated further ahead of our clock, or further before it than this plus the
# round's message delay (Timeouts.message_delay), gets our nil prevote.
CLOCK_DRIFT_MS = 5000
RELAY_AFTER_MS = 3000  # a height undecided this long: relay others' messages too
STALL_SYNC_MS = 5000  # undecided this long with work waiting: ask peers for the block
RECENT_DECIDED = 16  # decided blocks whose certificates late precommits may still improve
MAX_SEEN_PAYLOADS = 4096  # digests of consensus payloads already handled (see on_consensus)


class Replica:
    # The consensus rules this adapter runs; a test swaps in a subclass with one rule
    # removed, to show that the simulator notices.
    core_class: type[ConsensusCore] = ConsensusCore

    def __init__(
        self, ledger: "LedgerCore", reply_to: bytes, last_signed: SignedState | None
    ) -> None:
        self.ledger = ledger
        self.chain_id = ledger.chain_id
        self.reply_to = reply_to  # our sync reply channel
        self.consensus = self.core_class(
            chain_id=ledger.chain_id,
            key=ledger.key,
            validators=tuple(sorted(ledger.genesis.ledger_nodes)),
            app=self,
            timeouts=Timeouts(commit_ms=ledger.params.block_interval_ms),
            height=ledger.tip.height + 1,
            last_signed=last_signed,
        )
        self._built: dict[bytes, BuiltBlock] = {}  # our proposals, by block hash
        self._checked: dict[bytes, Transition] = {}  # valid blocks' transitions
        self._sent: list[bytes] = []  # our messages of the current height, encoded
        self._decided: dict[int, Block] = {}  # the last RECENT_DECIDED blocks, by height
        self._pools: dict[int, CommitPool] = {}  # COMMIT signatures, by height
        self._last_sent: list[bytes] = []  # our messages of the last decided height
        self._next_rebroadcast = 0
        self._height_started_ms = 0  # set by start() and each decision
        self._next_sync_request = 0
        # SHA-256 of each consensus payload already handled -> (signer, height): an
        # identical copy (re-broadcast, relay) is skipped before decoding, which for a
        # proposal of thousands of transactions costs far more than the hash.
        self._seen: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        # The bytes each message the core kept came in, by object: what _gossip relays
        # (re-encoding a proposal of thousands of transactions every REBROADCAST_MS
        # cost more than anything else a waiting node did).
        self._payloads: dict[int, tuple[ConsensusMessage, bytes]] = {}
        self._synced: dict[int, Block] = {}  # certified blocks from peers, by height
        # The highest height each other validator has signed a consensus message for
        # (see certified_height_heard).
        self._peer_heights: dict[bytes, int] = {}
        self.evidence = 0

    # ---- the app the consensus core asks ------------------------------------------

    def has_work(self) -> bool:
        """Accepted transactions, devices or approvals waiting to be registered or
        recorded (so an idle chain still registers them, and they can get work), or
        fraud proofs waiting to ban their devices."""
        ledger = self.ledger
        return bool(ledger.accepted) or ledger.has_registration_work() or bool(ledger.frauds)

    def propose(self, height: int, round: int, now_ms: int) -> Block | None:
        ledger = self.ledger
        if height != ledger.tip.height + 1:
            return None
        if ledger.tip.timestamp_ms >= MAX_TIMESTAMP_MS:
            # A block must be dated after its parent, and this parent is dated at the end
            # of time (only a faulty proposer dates one so): nothing can follow it.
            return None
        try:
            built = build_block(
                ledger.state,
                proposer=ledger.key,
                timestamp_ms=now_ms,
                candidates=[votes.tx for votes in ledger.accepted.values()],
                justification={i: list(v.valid.values()) for i, v in ledger.accepted.items()},
                hellos=list(ledger.hellos.values()),
                frauds=list(ledger.frauds.pending.values()),
                approvals=list(ledger.approvals.values()),
                seal=False,
            )
        except InvalidBlockError as exc:  # our choice broke a rule: propose nothing
            ledger.note_drop("consensus", "own_block_invalid", str(exc))
            return None
        for tx, reason in built.rejected:
            ledger.reject_pending(tx.id, reason)
        for tx in built.stale:
            ledger.judge_again(tx.id)
        block = built.block
        if round == 1 and not (block.txs or block.registrations or block.approvals or block.frauds):
            return None  # nothing to propose yet; later rounds may propose an empty block
        self._built[built.block.hash] = built
        self._checked[built.block.hash] = built.transition
        return built.block

    def is_timely(self, block: Block, now_ms: int, message_delay_ms: int) -> bool:
        """Dated by a clock that agrees with ours (docs/CONSENSUS.md, "Timely
        proposals"): not beyond it, or no block could follow (a block must be dated after
        its parent) and every transaction would expire; not long before it, or a faulty
        proposer could date its block just after a parent of long ago and include
        transactions that have expired since."""
        earliest = now_ms - CLOCK_DRIFT_MS - message_delay_ms
        return earliest <= block.header.timestamp_ms <= now_ms + CLOCK_DRIFT_MS

    def verify(self, block: Block) -> Transition:
        """``verify_block`` against our committed state: the transition, or
        InvalidBlockError."""
        ledger = self.ledger
        return verify_block(
            ledger.state, block, validators=self.consensus.validators, signatures=ledger.signatures
        )

    def is_valid(self, block: Block) -> bool:
        """``verify_block``; and for a proposal (a block not yet certified), no forgery
        among the transactions our tally never accepted (commit.forgeries_in): a
        proposer cannot get a transfer past us on verdicts it kept from us, and they
        become fraud proofs.  A certified block is decided: only the rules count."""
        try:
            transition = self.verify(block)
        except InvalidBlockError as exc:
            self.ledger.note_drop("consensus", "invalid_block", str(exc))
            return False
        if not block.certificate and (forged := forgeries_in(self.ledger, block, sampled=False)):
            for tx in forged:
                prove_forged(self.ledger, tx, block)
            self.ledger.note_drop("consensus", "forged_tx", tx.id.hex()[:16])
            return False
        self._checked[block.hash] = transition
        return True

    @property
    def tip_signers(self) -> int:
        """Commit signatures we hold for the last block we decided."""
        last = self._decided.get(self.consensus.height - 1)
        return len(last.certificate) if last else 0

    @property
    def tip_round(self) -> int:
        """The round of our certificate of the last block we decided (0: none here)."""
        last = self._decided.get(self.consensus.height - 1)
        return last.commit_round if last else 0

    def certified_height_heard(self) -> int:
        """A height the chain has certainly decided, from what the validators signed: the
        (f+1)-th highest height among the other validators' messages, less one (a
        validator at height H has decided H - 1, and f + 1 of them include an honest
        one, so one Byzantine validator cannot make us think we are behind).  0 when
        fewer than f + 1 have been heard."""
        validators = self.consensus.validators
        f = (len(validators) - 1) // 3
        heights = sorted(self._peer_heights.values(), reverse=True)
        return heights[f] - 1 if len(heights) > f else 0

    def _note_height(self, signer: bytes, height: int) -> None:
        if (
            signer != self.ledger.key.public
            and signer in self.consensus.validators
            and height > self._peer_heights.get(signer, 0)
        ):
            self._peer_heights[signer] = height

    # ---- events ----------------------------------------------------------------------

    def start(self, now_ms: int, actions: list[Action]) -> None:
        self._height_started_ms = now_ms
        self._apply(self.consensus.start(now_ms), now_ms, actions)

    def on_tick(self, now_ms: int, actions: list[Action]) -> None:
        self._apply(self.consensus.on_tick(now_ms), now_ms, actions)
        ledger = self.ledger
        waiting = self.has_work() or bool(ledger.votes) or bool(ledger.mempool.held)
        if now_ms - self._height_started_ms >= STALL_SYNC_MS and waiting:
            # Stuck with work to do: perhaps the others decided this height and went
            # idle, and the proposal is gone with its proposer; nobody speaks of a later
            # height, so only asking finds out (peers without the block stay silent).
            # Undecided and held transactions count: the others may have committed them,
            # or the nonce they wait for, in that block (no verdict will come any more).
            self._request_sync(self.consensus.height, now_ms, actions)
        if now_ms >= self._next_rebroadcast:
            topic = topics.consensus(self.chain_id, self.ledger.key.public)
            for payload in self._gossip(now_ms):
                actions.append(Publish.on(Channel.CONSENSUS, topic, payload))
            self._next_rebroadcast = now_ms + REBROADCAST_MS

    def _gossip(self, now_ms: int) -> list[bytes]:
        """What to re-send on our topic: our own messages of this height and the last.

        The last height's too: a peer that missed the decision can still make it
        (proposal + precommits), and late peers complete their certificates.  Once a
        height has lasted RELAY_AFTER_MS, also every message of it that the core holds,
        whoever signed it: liveness needs each message one honest node has to reach all
        of them, and a crashed validator can no longer re-send its own old votes
        (docs/CONSENSUS.md, "Gossip").  Receivers drop identical copies unchecked."""
        if now_ms - self._height_started_ms < RELAY_AFTER_MS:
            return [*self._last_sent, *self._sent]
        return [*self._last_sent, *(self._payload_of(m) for m in self.consensus.gossip_messages())]

    def _payload_of(self, message: ConsensusMessage) -> bytes:
        known = self._payloads.get(id(message))
        return known[1] if known is not None and known[0] is message else encode(message)

    def on_consensus(
        self, key: bytes | None, payload: bytes, now_ms: int, actions: list[Action]
    ) -> None:
        digest = sha256(payload)
        if (seen := self._seen.get(digest)) is not None:
            self._on_identical_copy(key, *seen, now_ms, actions)
            return
        try:
            message: Message = decode(payload)
        except DecodeError as exc:
            self.ledger.note_drop("consensus", f"decode_{exc.code.name.lower()}", exc.detail)
            return
        # [REJECT] A consensus message, on a validator's topic: its signer's own, or a
        # relaying validator's (see _gossip).
        if not isinstance(message, Proposal | Prevote | Precommit):
            self.ledger.note_drop("consensus", "unexpected_kind", type(message).__name__)
            return
        if key not in self.consensus.validators:
            self.ledger.note_drop("consensus", "topic_not_validator", (key or b"").hex()[:16])
            return
        if isinstance(message, Precommit):  # ours too: we may have signed before a restart
            self._note_commit_signature(message, actions)
        # [IGNORE] An identical copy of a message already checked (no signature check),
        # ours included: our echo, or relayed back.
        known = self.consensus.knows(message)
        own = message.signer == self.ledger.key.public
        if own and known:
            return
        # One of ours that this core never saw was signed before a restart: it counts
        # like anyone's (checked, then handed to the core, which counts each message
        # once), or a quorum that needs our old vote could never form again.
        # [IGNORE] A relayed copy of a height the core no longer or not yet holds.
        relayed = message.signer != key
        if relayed and not 0 <= message.height - self.consensus.height <= 1:
            return
        # [IGNORE] Liveness and catch-up follow only messages the validator really signed.
        if not known and not is_signature_valid(message):
            self.ledger.note_drop("consensus", "bad_signature", key.hex()[:16])
            return
        if not (relayed or own):
            self.ledger.peers.heard(key, now_ms)
        self._note_height(message.signer, message.height)
        if message.height > self.consensus.height:
            self._request_sync(message.height - 1, now_ms, actions)
        old = message.height < self.consensus.height
        if not known:
            self._apply(self.consensus.on_message(message, now_ms), now_ms, actions)
        # Remembered only once handled for good: kept by the core, or of a decided
        # height (its COMMIT signature noted above); a copy of anything else may still
        # matter later (a future height the core did not buffer) and is decoded again.
        if old or self.consensus.knows(message):
            self._remember(digest, message.signer, message.height)
            if not (old or known) and len(self._payloads) < MAX_SEEN_PAYLOADS:
                self._payloads[id(message)] = (message, payload)

    def _remember(self, digest: bytes, signer: bytes, height: int) -> None:
        self._seen[digest] = (signer, height)
        if len(self._seen) > MAX_SEEN_PAYLOADS:
            self._seen.popitem(last=False)

    def _on_identical_copy(
        self, key: bytes | None, signer: bytes, height: int, now_ms: int, actions: list[Action]
    ) -> None:
        """What a copy of a handled message still tells: that its signer is alive (when
        it comes on the signer's own topic) and that a validator is ahead of us."""
        if key not in self.consensus.validators:
            self.ledger.note_drop("consensus", "topic_not_validator", (key or b"").hex()[:16])
            return
        if signer == self.ledger.key.public:
            return
        if key == signer:
            self.ledger.peers.heard(key, now_ms)
        self._note_height(signer, height)
        if height > self.consensus.height:
            self._request_sync(height - 1, now_ms, actions)

    def on_sync_request(
        self, _key: bytes | None, payload: bytes, _now_ms: int, actions: list[Action]
    ) -> None:
        try:
            request = decode(payload, SyncRequest)
        except DecodeError as exc:
            self.ledger.note_drop("sync", f"decode_{exc.code.name.lower()}", exc.detail)
            return
        # [IGNORE] Another chain, our own request, or blocks we do not have.
        if request.chain_id != self.chain_id or request.reply_to == self.reply_to:
            return
        if request.from_height > self.ledger.tip.height:
            return
        actions.append(ServeSync(request))

    def on_sync_reply(
        self, key: bytes | None, payload: bytes, now_ms: int, actions: list[Action]
    ) -> None:
        # [IGNORE] Someone else's sync channel (we subscribe to ours only).
        if key != self.reply_to:
            return
        try:
            block = decode(payload, Block)
        except DecodeError as exc:
            self.ledger.note_drop("sync", f"decode_{exc.code.name.lower()}", exc.detail)
            return
        height = block.height
        if height < self.consensus.height or height >= self.consensus.height + MAX_SYNC_BUFFER:
            return  # [IGNORE] already decided, or too far ahead to hold
        self._synced.setdefault(height, block)
        while (next_block := self._synced.pop(self.consensus.height, None)) is not None:
            before = self.consensus.height
            self._apply(self.consensus.on_certified_block(next_block, now_ms), now_ms, actions)
            if self.consensus.height == before:
                break  # rejected (bad certificate or invalid): wait for another copy

    # ---- outputs ---------------------------------------------------------------------

    def _apply(self, outputs: Sequence[Output], now_ms: int, actions: list[Action]) -> None:
        for output in outputs:
            match output:
                case PersistSigned():
                    actions.append(output)  # stored before the Broadcast that follows
                case Broadcast(message):
                    if isinstance(message, Precommit):  # the pool ignores nil ones
                        entry = CommitSignature(message.voter, message.commit_signature)
                        pool = self._pool(message.height)
                        pool.add(message.round, message.block_hash, (entry,))
                    payload = encode(message)
                    self._sent.append(payload)
                    if len(self._payloads) < MAX_SEEN_PAYLOADS:  # for _gossip's relays
                        self._payloads[id(message)] = (message, payload)
                    self._remember(sha256(payload), message.signer, message.height)  # its echo
                    topic = topics.consensus(self.chain_id, self.ledger.key.public)
                    actions.append(Publish.on(Channel.CONSENSUS, topic, payload))
                case Decide(block, _round):
                    self._commit(block, now_ms, actions)
                case Evidence(first, second):
                    self.evidence += 1
                    actions.append(EvidenceFound(first, second))
                case Rejected(reason, sender):
                    who = sender.hex()[:16] if sender else "?"
                    self.ledger.note_drop("consensus", reason, who)

    def _commit(self, block: Block, now_ms: int, actions: list[Action]) -> None:
        ledger = self.ledger
        transition = self._checked.get(block.hash)
        if transition is None:  # learned with a certificate: the core checked is_valid
            transition = state_transition(ledger.state, block)
        self._built.clear()
        self._checked.clear()
        self._last_sent, self._sent = self._sent, []
        self._payloads = {k: v for k, v in self._payloads.items() if v[0].height > block.height}
        self._height_started_ms = now_ms
        # Stored with the canonical certificate of what we know: possibly of a lower
        # round than the one we decided in, or with more signatures (ours among them).
        self._pool(block.height).add(block.commit_round, block.hash, block.certificate)
        block = self._decided[block.height] = self._canonical(block)
        self._decided.pop(block.height - RECENT_DECIDED, None)
        for height in [h for h in self._pools if h <= block.height - RECENT_DECIDED]:
            del self._pools[height]
        for height in [h for h in self._synced if h <= block.height]:
            del self._synced[height]
        ledger.on_block_committed(block, transition, now_ms, actions)

    def _pool(self, height: int) -> CommitPool:
        pool = self._pools.get(height)
        if pool is None:
            pool = self._pools[height] = CommitPool(self.chain_id, self.consensus.validators)
        return pool

    def _canonical(self, block: Block) -> Block:
        """``block`` with the canonical certificate of its height's pool (certificate.py);
        rounds above the chosen one can no longer matter and are forgotten."""
        pool = self._pools[block.height]
        found = pool.certificate(block.hash)
        if found is None:  # cannot happen: the decided certificate is in the pool
            return block
        round, certificate = found
        pool.forget_above(round)
        return dataclasses.replace(block, commit_round=round, certificate=certificate)

    def _note_commit_signature(self, precommit: Precommit, actions: list[Action]) -> None:
        """Keep the COMMIT signature of a precommit (a peer's, or ours echoed) of a recent,
        the current or the next height; improve the stored certificate when it changes
        the canonical one."""
        height, current = precommit.height, self.consensus.height
        decided = self._decided.get(height)
        # [IGNORE] A height too old or too far ahead, or a vote for another block than
        # the one decided (nil precommits the pool ignores).
        if decided is None and not current <= height <= current + 1:
            return
        if decided is not None and precommit.block_hash != decided.hash:
            return
        # [IGNORE] A round that can no longer matter (above the certificate's), or that
        # is beyond what the core stores: rounds really reached bound the pool.
        if decided is not None:
            limit = decided.commit_round
        elif height == current:
            limit = max(self.consensus.round, 1) + ROUND_WINDOW
        else:
            limit = 1 + ROUND_WINDOW
        if precommit.round > limit:
            return
        pool = self._pool(height)
        if not pool.offer(
            precommit.voter, precommit.round, precommit.block_hash, precommit.commit_signature
        ):
            return
        if decided is not None:
            improved = self._canonical(decided)
            if (improved.commit_round, improved.certificate) != (
                decided.commit_round,
                decided.certificate,
            ):
                self._decided[height] = improved
                actions.append(ImproveCertificate(improved))

    def _request_sync(self, target_height: int, now_ms: int, actions: list[Action]) -> None:
        start = self.consensus.height
        if target_height < start or now_ms < self._next_sync_request:
            return
        end = min(target_height, start + MAX_SYNC_BLOCKS - 1)
        request = SyncRequest(self.chain_id, start, end, self.reply_to)
        actions.append(
            Publish.on(Channel.SYNC_REQUEST, topics.sync_request(self.chain_id), encode(request))
        )
        self._next_sync_request = now_ms + SYNC_RETRY_MS
