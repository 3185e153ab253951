"""The Byzantine validator: the shipped node with a consensus adapter that lies.

It is the real LedgerNode with a real validator key (everything it signs verifies); its
``Replica`` is ``ByzantineReplica``, passed in through the factory every LedgerCore takes
(core.ReplicaFactory), so nothing is patched.  Its honest core tells it the height and
round, and believes every block valid (so it votes for invalid ones); each message the
core wants to broadcast passes through ``misbehave``, which, by the modes drawn for the
run (faults.BYZANTINE_MODES), may:

    equivocate         send a conflicting signed twin to some peers, both to a witness
    invalid-proposals  replace its proposal by a block breaking one validity rule, and
                       vote for that block
    invalid-votes      vote for hashes of no block
    garbage            every so often: random bytes, mutated encodings, votes with bad
                       signatures or COMMIT signatures, far-future heights, stray kinds
    replay             every so often: re-send another node's old message
    bad-sync           answer SyncRequests with tampered or forged certified blocks, or
                       certificates whose signatures are of another round than named
    withhold           (not this adapter's: its host, hosts.SimLedger, drops them) never
                       hand out the work it owns nor answer its submitters
    amnesia            (the lock attack) vote for every proposal at once, in every round,
                       precommits to a random subset; propose a fresh block every round

An adversary that owns the network: it may send a message to chosen peers only
(``World.publish_to``), which a broker's fan-out would not allow an honest node.
"""

import dataclasses
import random
from typing import TYPE_CHECKING

from micromine.ledger_node.consensus.tendermint import Broadcast, Output, SignedState
from micromine.ledger_node.core.actions import Action
from micromine.ledger_node.core.replica import Replica
from micromine.ledger_node.sim.chain import forged_pool, tx_pool
from micromine.ledger_node.sim.faults import AMNESIA
from micromine.protocol import topics
from micromine.protocol.block import Block, BlockHeader, CommitSignature, compute_tx_root
from micromine.protocol.codec import Message, decode, encode, sign, sign_commit
from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal, SyncRequest
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.errors import DecodeError
from micromine.protocol.limits import MAX_ROUND
from micromine.protocol.messages import NO_SIGNATURE
from micromine.protocol.topics import Channel, Publish

if TYPE_CHECKING:
    from micromine.ledger_node.core.ledger import LedgerCore
    from micromine.ledger_node.sim.world import Simulation

Vote = Prevote | Precommit
RECENT = 48  # encodings remembered for replay and mutation

DEFECTS = (
    "prev_hash", "state_root", "tx_root", "body", "height", "timestamp", "proposer",
    "forged_tx",
)  # fmt: skip


class ByzantineReplica(Replica):
    """The node's real Replica; what it sends, and how it answers sync, is rewritten."""

    def __init__(
        self,
        ledger: "LedgerCore",
        reply_to: bytes,
        _last_signed: SignedState | None,
        *,
        world: "Simulation",
        index: int,
        modes: frozenset[str],
        rng: random.Random,
    ) -> None:
        super().__init__(ledger, reply_to, None)  # it signs whatever suits it
        self.world, self.index, self.modes, self.rng = world, index, modes, rng
        self.key = ledger.key
        self.public = ledger.key.public
        self.peers = tuple(i for i in range(len(self.consensus.validators)) if i != index)
        self.recent: list[bytes] = []
        self.substituted: dict[tuple[int, int], tuple[bytes, bytes]] = {}  # (h, r) -> old, new
        self.amnesia_voted: set[tuple[int, int]] = set()
        self.outsider = KeyPair(sha256(b"micromine-sim/outsider"))
        self.topic = topics.consensus(self.chain_id, self.public)

    # ---- what its core believes ------------------------------------------------------

    def is_valid(self, block: Block) -> bool:
        super().is_valid(block)  # keeps the changes of a valid block for its commit
        return True

    def is_timely(self, block: Block, now_ms: int, message_delay_ms: int) -> bool:
        return True

    # ---- signing ------------------------------------------------------------------

    def vote(self, kind: type[Vote], height: int, round_: int, block_hash: bytes) -> Vote:
        if kind is Prevote:
            return sign(Prevote(self.chain_id, height, round_, block_hash, self.public), self.key)
        commit = (
            NO_SIGNATURE
            if block_hash == NIL
            else sign_commit(round_, block_hash, self.chain_id, self.key)
        )
        message = Precommit(self.chain_id, height, round_, block_hash, self.public, commit)
        return sign(message, self.key)

    def propose_block(self, proposal: Proposal, block: Block) -> Proposal:
        message = Proposal(
            self.chain_id, proposal.height, proposal.round, proposal.pol_round, block, self.public
        )
        return sign(message, self.key)

    # ---- sending ------------------------------------------------------------------

    def send_to(self, peers: tuple[int, ...] | list[int], message: Proposal | Vote) -> None:
        payload = encode(message)
        self.remember(payload)
        self.world.publish_to(self.index, tuple(peers), self.topic, payload)

    def remember(self, payload: bytes) -> None:
        self.recent.append(payload)
        if len(self.recent) > RECENT:
            del self.recent[0]

    def _apply(self, outputs: "list[Output]", now_ms: int, actions: list[Action]) -> None:  # type: ignore[override]
        for output in outputs:
            if isinstance(output, Broadcast):
                self.misbehave(output.message, now_ms)
            else:
                super()._apply([output], now_ms, actions)

    def misbehave(self, message: Proposal | Vote, now_ms: int) -> None:
        rng, counters = self.rng, self.world.counters
        if AMNESIA in self.modes:
            if isinstance(message, Proposal):
                fresh = self.propose(message.height, message.round, now_ms)
                if fresh is not None:  # never re-propose: a new block every round
                    message = self.propose_block(dataclasses.replace(message, pol_round=0), fresh)
                self.send_to(self.peers, message)
                self.amnesia_vote(message)
            return  # its votes come from amnesia_vote
        slot = (message.height, message.round)
        if (
            isinstance(message, Proposal)
            and "invalid-proposals" in self.modes
            and rng.random() < 0.6
        ):
            bad = self.invalid_proposal(message, now_ms)
            self.substituted[slot] = (message.block.hash, bad.block.hash)
            message = bad
            counters["byzantine.invalid_proposals"] += 1
        elif isinstance(message, Prevote | Precommit):
            old, new = self.substituted.get(slot, (None, None))
            if new is not None and message.block_hash in (old, NIL):
                message = self.vote(type(message), *slot, new)  # vote for our invalid block
            elif "invalid-votes" in self.modes and rng.random() < 0.4:
                message = self.vote(type(message), *slot, sha256(rng.randbytes(8)))
                counters["byzantine.invalid_votes"] += 1
        if "equivocate" in self.modes and rng.random() < 0.6:
            twin = self.conflicting(message, now_ms)
            witness = rng.choice(self.peers)
            others = [p for p in self.peers if p != witness]
            rng.shuffle(others)
            cut = rng.randint(0, len(others))
            self.send_to([witness, *others[:cut]], message)
            self.send_to([witness, *others[cut:]], twin)
            counters["byzantine.equivocations"] += 1
            return
        self.send_to(self.peers, message)

    def conflicting(self, message: Proposal | Vote, now_ms: int) -> Proposal | Vote:
        if isinstance(message, Proposal):
            header = message.block.header
            later = dataclasses.replace(
                header, timestamp_ms=header.timestamp_ms + 1 + self.rng.randrange(999)
            )
            return self.propose_block(message, dataclasses.replace(message.block, header=later))
        other = NIL if message.block_hash != NIL else sha256(self.rng.randbytes(8))
        return self.vote(type(message), message.height, message.round, other)

    def invalid_proposal(self, proposal: Proposal, now_ms: int) -> Proposal:
        """``proposal``'s block changed to break exactly one validity rule."""
        block, rng = proposal.block, self.rng
        header = block.header
        defect = rng.choice(DEFECTS)
        if defect == "timestamp" and self.ledger.tip.height == 0:
            defect = "prev_hash"  # height 1 has no parent to precede
        self.world.counters[f"byzantine.defect.{defect}"] += 1
        txs = block.txs
        changes: dict[str, object] = {}
        random_hash = sha256(rng.randbytes(8))
        if defect == "forged_tx":  # a transfer no device judged, badly signed at that
            txs = (*txs, rng.choice(forged_pool()))
            changes["tx_root"] = compute_tx_root(txs)
        elif defect in ("prev_hash", "state_root", "tx_root", "body"):
            changes[{"body": "body_hash"}.get(defect, defect)] = random_hash
        elif defect == "height":
            changes["height"] = header.height + 1
        elif defect == "timestamp":
            changes["timestamp_ms"] = self.ledger.tip.timestamp_ms - rng.randrange(2)
        elif defect == "proposer":
            changes["proposer"] = self.outsider.public
        bad = dataclasses.replace(block, header=dataclasses.replace(header, **changes), txs=txs)  # type: ignore[arg-type]
        return self.propose_block(proposal, bad)

    # ---- reacting to others -------------------------------------------------------

    def on_consensus(
        self, key: bytes | None, payload: bytes, now_ms: int, actions: list[Action]
    ) -> None:
        self.remember(payload)
        if AMNESIA in self.modes:
            message: Message | None
            try:
                message = decode(payload)
            except DecodeError:
                message = None
            if isinstance(message, Proposal) and message.height == self.consensus.height:
                self.amnesia_vote(message)
        super().on_consensus(key, payload, now_ms, actions)

    def amnesia_vote(self, proposal: Proposal) -> None:
        """Vote at once for every proposal, whatever was seen before (no lock).

        Its own proposal: prevote and precommit it to everyone.  Another's block: show
        it to a victim, if possible one that cannot be heard just now (an adversary that
        knows the network), so that the victim alone may commit it: prevote it to the
        victim and one more node and nil to the rest (the rest may then miss the polka
        and precommit nil), precommit it to the victim only and nil to the others (they
        time out into later rounds, where this node proposes a different block)."""
        slot = (proposal.height, proposal.round)
        if slot in self.amnesia_voted:
            return
        self.amnesia_voted.add(slot)
        block_hash = proposal.block.hash
        if proposal.proposer == self.public:
            self.send_to(self.peers, self.vote(Prevote, *slot, block_hash))
            self.send_to(self.peers, self.vote(Precommit, *slot, block_hash))
            return
        unheard = [peer for peer in self.peers if peer in self.world.unheard()]
        victim = self.rng.choice(unheard or self.peers)
        others = [peer for peer in self.peers if peer != victim]
        self.rng.shuffle(others)
        shown, hidden = [victim, *others[:1]], others[1:]
        self.send_to(shown, self.vote(Prevote, *slot, block_hash))
        self.send_to(hidden, self.vote(Prevote, *slot, NIL))
        self.send_to([victim], self.vote(Precommit, *slot, block_hash))
        self.send_to(others, self.vote(Precommit, *slot, NIL))

    def on_sync_request(
        self, key: bytes | None, payload: bytes, now_ms: int, actions: list[Action]
    ) -> None:
        if AMNESIA in self.modes:
            return  # withholds the blocks that would end the split
        if "bad-sync" not in self.modes or self.rng.random() < 0.3:
            super().on_sync_request(key, payload, now_ms, actions)
            return
        try:
            request = decode(payload, SyncRequest)
        except DecodeError:
            return
        topic = topics.sync_reply(self.chain_id, request.reply_to)
        last = min(request.to_height, self.ledger.tip.height + 1, request.from_height + 8)
        for height in range(request.from_height, last + 1):
            self.world.counters["byzantine.bad_sync"] += 1
            block = self.tampered(self._decided.get(height), height, now_ms)
            self.world.publish(self.index, Publish.on(Channel.SYNC_REPLY, topic, encode(block)))

    def tampered(self, block: Block | None, height: int, now_ms: int) -> Block:
        """A certified-looking block that must not be accepted (or a forged one)."""
        rng = self.rng
        if block is None or rng.random() < 0.3:  # forge: a fresh block, our signature + junk
            tip = self.ledger.tip
            header = BlockHeader(
                self.chain_id, height, tip.hash, compute_tx_root(()), sha256(b"body"),
                sha256(rng.randbytes(8)), tip.timestamp_ms + 1, self.public,
            )  # fmt: skip
            block = Block(header, (), (), (), 0, ())
            junk = tuple(
                CommitSignature(v, rng.randbytes(64))
                for v in self.consensus.validators
                if v != self.public
            )
            mine = CommitSignature(
                self.public, sign_commit(1, header.hash, self.chain_id, self.key)
            )
            return dataclasses.replace(block, commit_round=1, certificate=(mine, mine, *junk))
        choice = rng.randrange(5)
        if choice == 0:  # too few signatures
            return dataclasses.replace(block, certificate=block.certificate[:1])
        if choice == 1:  # the certified header with other transactions
            txs = block.txs[1:] if block.txs else (rng.choice(tx_pool()),)
            return dataclasses.replace(block, txs=txs)
        other_round = block.commit_round + rng.randint(1, 3)
        if choice == 2:  # the real signatures, relabelled as another round's
            return dataclasses.replace(block, commit_round=other_round)
        ours = CommitSignature(
            self.public, sign_commit(other_round, block.hash, self.chain_id, self.key)
        )
        if choice == 3:  # rounds mixed: the quorum's last signature is ours, of another round
            needed = 2 * len(self.consensus.validators) // 3 + 1
            honest = [e for e in block.certificate if e.signer != self.public][: needed - 1]
            mixed = tuple(sorted((*honest, ours), key=lambda e: e.signer))
            return dataclasses.replace(block, certificate=mixed)
        mine = CommitSignature(
            self.public, sign_commit(block.commit_round, block.hash, self.chain_id, self.key)
        )
        return dataclasses.replace(block, certificate=(mine,) * 3)

    # ---- noise --------------------------------------------------------------------

    def noise(self, now_ms: int) -> None:
        """One piece of garbage or one replayed message, to one random peer."""
        rng, counters = self.rng, self.world.counters
        peer = rng.choice(self.peers)
        if "replay" in self.modes and self.recent and rng.random() < 0.5:
            counters["byzantine.replays"] += 1
            self.world.publish_to(self.index, (peer,), self.topic, rng.choice(self.recent))
            return
        if "garbage" not in self.modes:
            return
        counters["byzantine.garbage"] += 1
        height, round_ = self.consensus.height, max(1, self.consensus.round)
        payload: bytes
        match rng.randrange(8):
            case 0:
                payload = rng.randbytes(rng.randrange(200))
            case 1 | 2:
                payload = mutate(rng, rng.choice(self.recent)) if self.recent else b"\x80"
            case 3:  # a valid vote with a broken signature
                vote = self.vote(rng.choice((Prevote, Precommit)), height, round_, sha256(b"x"))
                payload = encode(dataclasses.replace(vote, signature=rng.randbytes(64)))
            case 4:  # a validly signed precommit whose COMMIT signature is junk
                junk = Precommit(
                    self.chain_id, height, round_, sha256(rng.randbytes(4)), self.public,
                    rng.randbytes(64),
                )  # fmt: skip
                payload = encode(sign(junk, self.key))
            case 5:  # signed by a key outside the validator set
                outsider = Prevote(self.chain_id, height, round_, NIL, self.outsider.public)
                payload = encode(sign(outsider, self.outsider))
            case 6:  # far in the future
                far = self.vote(
                    Prevote, height + rng.randint(1, 1_000), rng.randint(1, MAX_ROUND), NIL
                )
                payload = encode(far)
            case _:  # a valid message of a kind consensus does not expect
                payload = encode(rng.choice(tx_pool()))
        self.world.publish_to(self.index, (peer,), self.topic, payload)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A small random corruption of a valid encoding."""
    if not data:
        return b"\x00"
    buffer = bytearray(data)
    match rng.randrange(4):
        case 0:
            buffer[rng.randrange(len(buffer))] ^= 1 << rng.randrange(8)
        case 1:
            del buffer[rng.randrange(len(buffer)) :]
        case 2:
            buffer.insert(rng.randrange(len(buffer) + 1), rng.randrange(256))
        case _:
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
    return bytes(buffer)
