"""Restarts and crashes: what a validator persists (its signed state, with the lock and
the valid value), what a restarted node learns back from its peers (its own old votes),
and which writes are durable (docs/CONSENSUS.md, "Crash and power-loss model").

The scenarios drive real cores in memory over a scripted network that can hold
messages back, with the gossip the adapters do (every core re-sends
``gossip_messages()``), and restart a core from the last ``SignedState`` it emitted.

Longer than 400 lines because the three restart bugs (lost valid value, own votes
dropped, undurable signed state) and their storage each need a scenario; they are one
subject.
"""

import dataclasses
import random
import sqlite3
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest
from test_consensus_core import (
    KEYS,
    TIMEOUTS,
    App,
    broadcasts,
    lock_core_on_round_1,
    make_block,
    make_core,
    of_type,
    proposer_index,
    signed_precommit,
    signed_prevote,
    signed_proposal,
)
from test_ledger_replicas import CHAIN as REPLICA_CHAIN
from test_ledger_replicas import NODES, T0, make_net

from micromine.ledger_node.chain.blocks import ChainTip
from micromine.ledger_node.chain.state import Account
from micromine.ledger_node.consensus.tendermint import (
    Broadcast,
    ConsensusMessage,
    Decide,
    Output,
    PersistSigned,
    SignedState,
    Step,
)
from micromine.ledger_node.core.actions import Dropped
from micromine.ledger_node.core.ledger import LedgerCore
from micromine.ledger_node.core.mempool import PendingTx
from micromine.ledger_node.storage import LedgerStore, StorageError
from micromine.protocol import topics
from micromine.protocol.block import GENESIS_PARENT, Block
from micromine.protocol.codec import encode, sign
from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal
from micromine.protocol.crypto import sha256
from micromine.protocol.genesis import Genesis
from micromine.protocol.messages import Transaction

GOSSIP_MS = 1000  # as the simulator's nodes: re-send every kept message this often

# Height 1's proposers: round 1 A, round 2 D, round 3 B, round 4 C, round 5 A ...
A, B, C, D = (proposer_index(1, round) for round in (1, 3, 4, 2))

Hold = Callable[[int, int, ConsensusMessage], bool]


class Cluster:
    """Four cores; a Broadcast goes to every other core unless ``hold(src, dst, message)``
    keeps it back (until ``release``).  With ``gossip`` on, every GOSSIP_MS each core
    re-sends everything it keeps, as the adapters do.  ``signed[i]`` is what node i
    last persisted: a restart builds its new core from it."""

    def __init__(self) -> None:
        self.apps = [App(k) for k in KEYS]
        self.cores = [make_core(i, self.apps[i]) for i in range(len(KEYS))]
        self.signed: list[SignedState | None] = [None] * len(KEYS)
        self.sent: list[list[ConsensusMessage]] = [[] for _ in KEYS]
        self.queue: deque[tuple[int, int, ConsensusMessage]] = deque()
        self.held: list[tuple[int, int, ConsensusMessage]] = []
        self.hold: Hold = lambda _src, _dst, _message: False
        self.gossip = False
        self.now = 0
        self.next_gossip = 0
        for i, core in enumerate(self.cores):
            self.apply(i, core.start(self.now))

    def apply(self, i: int, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, PersistSigned):
                self.signed[i] = output.state
            elif isinstance(output, Broadcast):
                self.sent[i].append(output.message)
                self.send(i, output.message)
            elif isinstance(output, Decide):
                self.apps[i].blocks.append(output.block)

    def send(self, src: int, message: ConsensusMessage) -> None:
        self.queue.extend((src, dst, message) for dst in range(len(self.cores)) if dst != src)

    def step(self, step_ms: int = 10) -> None:
        while self.queue:
            src, dst, message = self.queue.popleft()
            if self.hold(src, dst, message):
                self.held.append((src, dst, message))
                continue
            self.apply(dst, self.cores[dst].on_message(message, self.now))
        self.now += step_ms
        for i, core in enumerate(self.cores):
            self.apply(i, core.on_tick(self.now))
        if self.gossip and self.now >= self.next_gossip:
            self.next_gossip = self.now + GOSSIP_MS
            for i, core in enumerate(self.cores):
                for message in core.gossip_messages():
                    self.send(i, message)

    def run_until(self, done: Callable[[], bool], limit_ms: int) -> bool:
        while not done():
            if self.now >= limit_ms:
                return False
            self.step()
        return True

    def release(self) -> None:
        self.queue.extend(self.held)
        self.held.clear()

    def restart(self, i: int) -> None:
        """A crash and a restart: everything in memory is lost but the chain and what
        the node persisted."""
        app = App(KEYS[i])
        app.blocks = list(self.apps[i].blocks)
        self.apps[i] = app
        self.cores[i] = make_core(i, app, height=len(app.blocks) + 1, last_signed=self.signed[i])
        self.apply(i, self.cores[i].start(self.now))


# ---- the lock and the valid value survive a restart -------------------------------------


def locked_in_round_1_then_restarted() -> tuple[Cluster, bytes]:
    """Round 1: A proposes v; A, B and C prevote v, but only A and B see that polka in
    time (C gets A's and B's prevotes late, D never gets the proposal): A and B lock on
    v, C and D have no validValue.  Round 2: D proposes a fresh block; A and B prevote
    nil, C and D prevote it; everyone precommits nil.  Then A and B crash and restart,
    and the network heals.  Returns the cluster and v's hash."""
    net = Cluster()

    def hold(src: int, dst: int, message: ConsensusMessage) -> bool:
        if isinstance(message, Proposal) and message.round == 1:
            return dst == D
        return isinstance(message, Prevote) and message.round == 1 and src in (A, B) and dst == C

    net.hold = hold
    assert net.run_until(
        lambda: all(s is not None and (s.round, s.step) == (2, 3) for s in net.signed), 20_000
    )
    v = net.cores[A].locked_hash
    assert [net.cores[i].locked_round for i in (A, B, C, D)] == [1, 1, 0, 0]
    assert net.cores[C].valid_block is None and net.cores[D].valid_block is None
    assert not any(app.blocks for app in net.apps)
    net.hold = lambda _src, _dst, _message: False
    net.release()
    net.gossip = True
    net.restart(A)
    net.restart(B)
    return net, v


def test_restarted_locked_nodes_re_propose_their_valid_value_and_decide_it() -> None:
    """Without the valid value in the signed state, nobody could re-propose v: C and D
    never had it and A and B lost it, while A and B stay locked on v and prevote nil
    for every fresh block -- no decision ever (the simulator saw 34 rounds in 300 s)."""
    net, v = locked_in_round_1_then_restarted()
    restarted = net.now
    assert net.run_until(lambda: all(app.blocks for app in net.apps), restarted + 30_000), (
        f"no decision within 30 s of the restart (round {net.cores[C].round})"
    )
    assert {app.blocks[0].hash for app in net.apps} == {v}
    # B, the first proposer after the restart (round 3), re-proposed v citing round 1.
    (reproposal,) = [m for m in net.sent[B] if isinstance(m, Proposal) and m.round == 3]
    assert isinstance(reproposal, Proposal)
    assert (reproposal.block.hash, reproposal.pol_round) == (v, 1)


def test_the_precommit_persists_the_lock_and_the_valid_value_with_their_block() -> None:
    core, block = lock_core_on_round_1()
    state = core._last_signed
    assert state is not None and (state.round, state.step) == (1, 3)
    assert (state.locked_round, state.locked_hash, state.locked_block) == (1, block.hash, block)
    assert (state.valid_round, state.valid_block) == (1, block)


def test_a_polka_seen_after_precommitting_nil_is_persisted_without_a_message() -> None:
    """Line 42 in the precommit step changes the valid value and signs nothing: it is
    persisted on its own, in the slot of the last message signed."""
    core = make_core(1)
    core.start(0)
    proposal = signed_proposal(1)
    core.on_message(proposal, 1)  # prevote for it
    core.on_message(signed_prevote(2, 1, proposal.block.hash), 2)
    core.on_message(signed_prevote(3, 1, NIL), 3)  # three voters, no polka: timeoutPrevote
    outputs = core.on_tick(3 + TIMEOUTS.prevote(1))
    assert [(type(m), m.block_hash) for m in broadcasts(outputs)] == [(Precommit, NIL)]  # type: ignore[union-attr]
    outputs = core.on_message(signed_prevote(0, 1, proposal.block.hash), 4)  # a late polka
    assert broadcasts(outputs) == []
    (persisted,) = of_type(outputs, PersistSigned)
    assert isinstance(persisted, PersistSigned)
    state = persisted.state
    assert (state.height, state.round, state.step, state.block_hash) == (1, 1, 3, NIL)
    assert (state.valid_round, state.valid_block, state.locked_round) == (1, proposal.block, 0)
    # Nothing new after that: the next message carries the same state along.
    later = core.on_message(signed_prevote(0, 1, proposal.block.hash), 5)
    assert of_type(later, PersistSigned) == []


def test_a_restarted_proposer_re_proposes_its_valid_value_and_keeps_its_lock() -> None:
    core, block = lock_core_on_round_1()
    index = proposer_index(1, 2)
    last = core._last_signed
    assert last is not None and index != 1
    restarted = make_core(index, last_signed=last)  # its own key: the state is all it takes
    restarted.start(10)
    assert (restarted.locked_round, restarted.locked_hash) == (1, block.hash)
    assert restarted.locked_block == block
    assert (restarted.valid_round, restarted.valid_block) == (1, block)
    restarted.on_message(signed_precommit(0, 2, NIL), 11)
    outputs = restarted.on_message(signed_precommit(3, 2, NIL), 11)  # f + 1 in round 2
    sent = [m for m in broadcasts(outputs) if isinstance(m, Proposal)]
    assert [(m.round, m.block, m.pol_round) for m in sent] == [(2, block, 1)]


def test_a_restart_in_the_round_it_proposed_in_proposes_nothing() -> None:
    """Its valid value may be of that very round: re-proposing it there would be a
    second proposal in the slot (and a pol_round that is not earlier than the round)."""
    index = proposer_index(1, 2)
    block = signed_proposal(2).block
    last = SignedState(1, 2, 3, block.hash, 2, block.hash, 2, block, block)
    core = make_core(index, last_signed=last)
    outputs = core.start(0)
    assert (core.round, core.step) == (2, Step.PROPOSE)
    assert broadcasts(outputs) == []
    assert broadcasts(core.on_tick(TIMEOUTS.propose(2))) == []  # and it precommitted
    assert core.step == Step.PREVOTE


def test_a_core_never_signs_against_its_own_old_vote_even_with_a_stale_signed_state() -> None:
    """Its signed state lost (a disk restored from a backup), a restarted core learns
    its own old prevote back from a peer: it counts it, and signs nothing against it."""
    voted = signed_proposal(1).block
    core = make_core(1)  # no last_signed
    core.start(0)
    assert core.on_message(signed_prevote(1, 1, voted.hash), 1) == []  # ours, relayed back
    assert core.knows(signed_prevote(1, 1, voted.hash))
    other = make_block(voted.header.proposer, 1, GENESIS_PARENT, 99)
    assert broadcasts(core.on_message(signed_proposal(1, other), 2)) == []
    assert core.step == Step.PREVOTE  # the step is passed all the same


# ---- the replica counts its own old messages relayed back -------------------------------


def restarted_ledger(last_signed: SignedState) -> LedgerCore:
    """Node 0 of a four-node replica net, restarted at height 1 after signing."""
    genesis = make_net().cores[0].genesis
    core = LedgerCore(
        genesis=genesis,
        key=NODES[0],
        rng=random.Random(7),
        accounts={a: Account(b, 0) for a, b in genesis.balances},
        tip=ChainTip(0, genesis.hash, T0),
        last_signed=last_signed,
        now_ms=T0,
    )
    core.start(T0)
    return core


def own_prevote(round: int, block_hash: bytes) -> Prevote:
    return sign(Prevote(REPLICA_CHAIN, 1, round, block_hash, NODES[0].public), NODES[0])


def test_a_restarted_replica_counts_its_own_old_vote_relayed_back() -> None:
    """Its previous incarnation signed it, so this core never counted it; peers relay
    it back.  Dropped as "ours, counted already", a quorum that needs it (one more node
    down) could never form: the height stalls."""
    vote = own_prevote(1, sha256(b"a block we prevoted before the crash"))
    core = restarted_ledger(SignedState(1, 1, 2, vote.block_hash))
    consensus = core.replica.consensus
    assert not consensus.knows(vote)
    actions = core.on_message(topics.consensus(REPLICA_CHAIN, NODES[1].public), encode(vote), T0)
    assert not [a for a in actions if isinstance(a, Dropped)]
    assert consensus.knows(vote)
    assert vote in consensus.gossip_messages()


def test_own_messages_are_counted_once_and_forged_ones_dropped() -> None:
    vote = own_prevote(1, NIL)
    core = restarted_ledger(SignedState(1, 1, 2, NIL))
    log = core.replica.consensus._log
    for owner in (NODES[1], NODES[2], NODES[0]):  # relayed twice, then our own topic
        core.on_message(topics.consensus(REPLICA_CHAIN, owner.public), encode(vote), T0)
    assert log.rounds[1].prevotes.voters() == 1
    forged = dataclasses.replace(own_prevote(2, NIL), signature=vote.signature)
    actions = core.on_message(topics.consensus(REPLICA_CHAIN, NODES[1].public), encode(forged), T0)
    assert [a.reason for a in actions if isinstance(a, Dropped)] == ["bad_signature"]
    assert not core.replica.consensus.knows(forged)


# ---- storage: durable signed state, and its blocks --------------------------------------

GENESIS = Genesis("restart-test", 1_700_000_000_000, (KEYS[0].public,), ())
SYNCHRONOUS = {1: "NORMAL", 2: "FULL"}


class RecordingStore(LedgerStore):
    """Records, after each COMMIT, whether it was durable and the synchronous level it
    ran with (the hook a power-cut simulator overrides)."""

    def __init__(self, path: Path, genesis: Genesis) -> None:
        self.commits: list[tuple[bool, str]] = []
        super().__init__(path, genesis)

    def _committed(self, durable: bool) -> None:
        (level,) = self.db.execute("PRAGMA synchronous").fetchone()
        self.commits.append((durable, SYNCHRONOUS.get(level, str(level))))


def a_pending_tx() -> PendingTx:
    sender = KEYS[1]
    tx = Transaction("restart-test", sender.public, sha256(b"sink"), 5, 1, 0, 2**40, "")
    tx = sign(tx, sender)
    return PendingTx(tx, tx.id, bytes(16), 0)


def test_save_signed_is_fsynced_before_it_returns_and_other_writes_are_not(
    tmp_path: Path,
) -> None:
    """A signed state rolled back by a power cut after its message left could let the
    restarted node sign a conflicting one: save_signed commits with synchronous=FULL
    (the WAL fsynced at COMMIT); other writes stay NORMAL (peers resupply them)."""
    store = RecordingStore(tmp_path / "ledger.sqlite", GENESIS)
    assert store.commits == [(False, "NORMAL")]  # the genesis rows
    store.commits.clear()
    store.save_signed(SignedState(1, 1, 2, NIL))
    store.store_pending([a_pending_tx()])
    store.save_signed(SignedState(1, 1, 3, NIL))
    store.forget_pending([a_pending_tx().tx_id])
    assert store.commits == [
        (True, "FULL"),
        (False, "NORMAL"),
        (True, "FULL"),
        (False, "NORMAL"),
    ]
    assert store.db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL again
    store.close()


def test_a_failed_durable_write_leaves_the_connection_at_normal(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "ledger.sqlite", GENESIS)
    with pytest.raises(RuntimeError), store._transaction(durable=True):
        raise RuntimeError("boom")
    assert store.db.execute("PRAGMA synchronous").fetchone() == (1,)
    store.close()


def block(round: int) -> Block:
    return make_block(KEYS[0].public, 1, GENESIS_PARENT, 5000 + round)


def test_the_signed_state_comes_back_with_its_lock_and_valid_value(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    v, w = block(1), block(2)
    state = SignedState(1, 3, 2, w.hash, 1, v.hash, 2, w, v)
    store = LedgerStore(path, GENESIS)
    assert store.last_signed() is None
    store.save_signed(state)
    store.close()
    store = LedgerStore(path, GENESIS)
    assert store.last_signed() == state
    store.close()


def test_a_signed_block_is_written_when_it_changes_not_with_every_vote(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "ledger.sqlite", GENESIS)
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)

    def writes() -> list[str]:
        found = [
            s.split()[0]
            for s in statements
            if "signed_blocks" in s and s.startswith(("INSERT", "DELETE"))
        ]
        statements.clear()
        return found

    def rows() -> int:
        return int(store.db.execute("SELECT COUNT(*) FROM signed_blocks").fetchone()[0])

    v, w = block(1), block(2)
    locked = SignedState(1, 1, 3, v.hash, 1, v.hash, 1, v, v)
    store.save_signed(locked)  # locked and valid: one block, stored once
    assert writes() == ["INSERT", "DELETE"]
    assert rows() == 1
    for round in (2, 3):  # votes of later rounds, the same lock and valid value
        store.save_signed(dataclasses.replace(locked, round=round, step=2, block_hash=NIL))
        assert writes() == [] and rows() == 1
    newer = SignedState(1, 3, 3, NIL, 1, v.hash, 3, w, v)  # a polka for w, still locked on v
    store.save_signed(newer)
    assert writes() == ["INSERT", "DELETE"]
    assert rows() == 2
    relocked = SignedState(1, 4, 3, w.hash, 4, w.hash, 4, w, w)
    store.save_signed(relocked)  # v is no longer needed
    assert writes() == ["DELETE"] and rows() == 1
    store.save_signed(SignedState(2, 1, 2, NIL))  # the next height: nothing to keep
    assert rows() == 0
    store.close()


def test_the_valid_values_polka_comes_back_after_a_restart(tmp_path: Path) -> None:
    """The 2f+1 prevotes that made a block the valid value are stored with it: after a
    crash nobody else may hold all of them (our own may never have left), and without
    them no other node accepts the block's re-proposal (simulator seed 544)."""
    path = tmp_path / "ledger.sqlite"
    v = block(1)
    polka = tuple(sign(Prevote(v.header.chain_id, 1, 2, v.hash, k.public), k) for k in KEYS[:3])
    store = LedgerStore(path, GENESIS)
    state = SignedState(1, 2, 3, v.hash, 2, v.hash, 2, v, v, polka)
    store.save_signed(state)
    store.close()
    store = LedgerStore(path, GENESIS)
    assert store.last_signed() == state
    store.close()
    with pytest.raises(ValueError, match="polka"):
        SignedState(1, 3, 3, v.hash, 3, v.hash, 3, v, v, polka)  # not the valid round's


def test_a_schema_3_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    LedgerStore(path, GENESIS).close()
    v = block(1)
    db = sqlite3.connect(path, isolation_level=None)  # as schema 3 left it
    for column in ("valid_round", "valid_block", "locked_block", "polka"):
        db.execute(f"ALTER TABLE signed DROP COLUMN {column}")
    db.execute("DROP TABLE signed_blocks")
    db.execute("INSERT INTO signed VALUES (1, 1, 2, 3, ?, 2, ?)", (v.hash, v.hash))
    db.execute("UPDATE meta SET value = 3 WHERE key = 'schema'")
    db.close()
    store = LedgerStore(path, GENESIS)
    assert store.last_signed() == SignedState(1, 2, 3, v.hash, 2, v.hash)
    state = SignedState(1, 3, 2, v.hash, 2, v.hash, 2, v, v)
    store.save_signed(state)
    store.close()
    store = LedgerStore(path, GENESIS)
    assert store.last_signed() == state
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (4,)
    store.close()


def test_an_older_schema_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    LedgerStore(path, GENESIS).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE meta SET value = 2 WHERE key = 'schema'")
    db.close()
    with pytest.raises(StorageError, match="schema 2, not 4"):
        LedgerStore(path, GENESIS)
