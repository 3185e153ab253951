"""What a Byzantine proposer can make an honest node store, relay and vote for.

Decoys: an equivocating proposer signs many blocks for one round.  The node keeps a
bounded number of them and of the votes for their hashes (so a bounded number to
gossip), and decoys sent first never hide the block the others vote for.

Timeliness: a fresh proposal dated far before the node's clock (its parent + 1 ms, to
slip in transactions that expired in real time) gets a nil prevote, as one dated too
far ahead does (CometBFT's proposer-based timestamps).

The cores run in memory (helpers of test_consensus_core.py) and so do the ledger
replicas (test_ledger_replicas.py), with the real ``Replica.is_timely``."""

import dataclasses

import pytest
from test_consensus_core import (
    KEYS,
    VALIDATORS,
    App,
    Net,
    broadcasts,
    make_block,
    make_core,
    proposer_index,
    signed_precommit,
    signed_prevote,
    signed_proposal,
)
from test_ledger_replicas import CHAIN as NET_CHAIN
from test_ledger_replicas import NODES, T0, make_net

from micromine.ledger_node.chain.blocks import build_block
from micromine.ledger_node.consensus.tendermint import (
    ConsensusMessage,
    Decide,
    Evidence,
    Output,
    Rejected,
    Timeouts,
)
from micromine.ledger_node.consensus.votes import MAX_PROPOSALS_PER_ROUND
from micromine.ledger_node.core.ledger import LedgerCore
from micromine.ledger_node.core.replica import CLOCK_DRIFT_MS, RELAY_AFTER_MS
from micromine.protocol import topics
from micromine.protocol.block import GENESIS_PARENT, Block, Reward
from micromine.protocol.codec import decode, encode, sign
from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal
from micromine.protocol.crypto import KeyPair
from micromine.protocol.topics import Publish

BYZANTINE = proposer_index(1, 1)  # the proposer of height 1, round 1
HONEST = [i for i in range(len(VALIDATORS)) if i not in (1, BYZANTINE)]  # besides us (1)


def decoy(i: int) -> Proposal:
    """The Byzantine proposer's i-th block for round 1: valid, each with its own hash."""
    return signed_proposal(1, make_block(VALIDATORS[BYZANTINE], 1, GENESIS_PARENT, 100 + i))


def votes_sent(outputs: list[Output]) -> list[tuple[type, bytes]]:
    return [
        (type(m), m.block_hash) for m in broadcasts(outputs) if isinstance(m, Prevote | Precommit)
    ]


def kept_by(messages: list[ConsensusMessage], signer: int) -> list[ConsensusMessage]:
    return [m for m in messages if m.signer == VALIDATORS[signer]]


def receiver_and_proposer() -> tuple[LedgerCore, KeyPair]:
    """A fresh four-node net's ledger core that is not round 1's proposer, and the
    proposer's key."""
    net = make_net()
    consensus = net.cores[0].replica.consensus
    proposer = next(k for k in NODES if k.public == consensus.proposer(1, 1))
    core = next(c for c in net.cores if c.key != proposer)
    return core, proposer


def build_proposal_block(core: LedgerCore, proposer: KeyPair, timestamp_ms: int) -> Block:
    """A valid empty block on ``core``'s tip, dated ``timestamp_ms``."""
    return build_block(
        core.state.copy(), proposer=proposer, timestamp_ms=timestamp_ms, candidates=[],
        justification={}, seal=False,
    ).block  # fmt: skip


# ---- decoy proposals ------------------------------------------------------------------


def test_300_decoys_and_votes_for_them_leave_a_bounded_log_to_gossip() -> None:
    """The proposer signs 300 blocks for round 1 and prevotes and precommits each: we
    keep MAX_PROPOSALS_PER_ROUND of them and only its first vote of each step (a vote
    for a hash nobody else voted for can matter to no rule), and report it once per
    step."""
    core = make_core(1)
    core.start(0)
    outputs: list[Output] = []
    for i in range(300):
        proposal = decoy(i)
        outputs += core.on_message(proposal, 1000)
        outputs += core.on_message(signed_prevote(BYZANTINE, 1, proposal.block.hash), 1000)
        outputs += core.on_message(signed_precommit(BYZANTINE, 1, proposal.block.hash), 1000)
    kept = core.gossip_messages()
    assert [m for m in kept if isinstance(m, Proposal)] == [decoy(i) for i in range(4)]
    assert MAX_PROPOSALS_PER_ROUND == 4
    theirs = kept_by(kept, BYZANTINE)
    assert [type(m) for m in theirs] == [Proposal] * 4 + [Prevote, Precommit]
    assert len(kept) == len(theirs) + 1  # and our own prevote, for the first decoy
    evidence = [o for o in outputs if isinstance(o, Evidence)]
    assert [type(e.first) for e in evidence] == [Proposal, Prevote, Precommit]


def test_decoys_interleaved_with_gossip_of_the_real_round_stay_bounded() -> None:
    """Honest votes for the real block make it (and only it) worth keeping beyond the
    cap, whatever the proposer keeps sending."""
    core = make_core(1)
    core.start(0)
    real = decoy(1000)
    for i in range(MAX_PROPOSALS_PER_ROUND):
        core.on_message(decoy(i), 1000)
    for i in HONEST:
        core.on_message(signed_prevote(i, 1, real.block.hash), 1000)
    for i in range(MAX_PROPOSALS_PER_ROUND, 200):
        core.on_message(decoy(i), 1000)
        core.on_message(real, 1000)  # relayed again and again
        core.on_message(signed_prevote(BYZANTINE, 1, decoy(i).block.hash), 1000)
    proposals = [m for m in core.gossip_messages() if isinstance(m, Proposal)]
    assert proposals == [*(decoy(i) for i in range(MAX_PROPOSALS_PER_ROUND)), real]
    assert len(kept_by(core.gossip_messages(), BYZANTINE)) <= len(proposals) + 2


@pytest.mark.parametrize("real_first", [False, True], ids=["polka-first", "proposal-first"])
def test_decoys_sent_first_do_not_hide_the_block_the_others_vote_for(real_first: bool) -> None:
    """We got four decoys first and prevoted the first one; the two other honest
    validators got the real block and, with the proposer, prevote and precommit it.
    We must still lock on it and decide it.  When the real proposal came before its
    votes (so nothing yet said it mattered), the copy the others relay brings it."""
    core = make_core(1)
    core.start(0)
    real = decoy(1000)
    block_hash = real.block.hash
    for i in range(MAX_PROPOSALS_PER_ROUND):
        core.on_message(decoy(i), 1000)
    if real_first:
        core.on_message(real, 1001)
    outputs: list[Output] = []
    for i in (*HONEST, BYZANTINE):
        outputs += core.on_message(signed_prevote(i, 1, block_hash), 1002)
    outputs += core.on_message(real, 1003)  # first arrival, or relayed again
    assert votes_sent(outputs) == [(Precommit, block_hash)]
    assert (core.locked_round, core.locked_hash) == (1, block_hash)
    assert core.valid_block == real.block
    for i in (*HONEST, BYZANTINE):
        outputs += core.on_message(signed_precommit(i, 1, block_hash), 1004)
    decided = [o.block.hash for o in outputs if isinstance(o, Decide)]
    assert decided == [block_hash]


def test_an_invalid_body_of_the_voted_header_does_not_keep_out_its_valid_body() -> None:
    """The hash covers the header only: the proposer pairs the real header with a bad
    body for us.  Once that one is found invalid it makes room for the good one."""
    core = make_core(1)
    core.start(0)
    real = decoy(1000)
    bad = signed_proposal(1, dataclasses.replace(real.block, rewards=(Reward(VALIDATORS[0], 1),)))
    assert bad.block.hash == real.block.hash
    for i in range(MAX_PROPOSALS_PER_ROUND):
        core.on_message(decoy(i), 1000)
    for i in (*HONEST, BYZANTINE):
        core.on_message(signed_prevote(i, 1, real.block.hash), 1001)
    for i in range(20):  # the same bad body, and others
        core.on_message(bad, 1002)
        worse = dataclasses.replace(bad.block, rewards=(Reward(VALIDATORS[0], 2 + i),))
        core.on_message(signed_proposal(1, worse), 1002)
    assert core.locked_round == 0
    assert votes_sent(core.on_message(real, 1003)) == [(Precommit, real.block.hash)]
    proposals = [m for m in core.gossip_messages() if isinstance(m, Proposal)]
    assert len(proposals) == MAX_PROPOSALS_PER_ROUND + 1


def test_a_byzantine_proposers_decoys_leave_a_bounded_relay_on_a_ledger_node() -> None:
    """The same attack through the ledger node's adapter: what it re-sends on its topic
    once the height is slow (Replica._gossip) stays bounded."""
    core, faulty = receiver_and_proposer()
    consensus = core.replica.consensus
    block = build_proposal_block(core, faulty, T0 + 1)
    topic = topics.consensus(NET_CHAIN, faulty.public)
    for i in range(300):
        header = dataclasses.replace(block.header, timestamp_ms=T0 + 1 + i)
        proposal = Proposal(
            NET_CHAIN, 1, 1, 0, dataclasses.replace(block, header=header), faulty.public
        )
        prevote = Prevote(NET_CHAIN, 1, 1, proposal.block.hash, faulty.public)
        for message in (proposal, prevote):
            core.on_message(topic, encode(sign(message, faulty)), T0 + 10)
    own_topic = topics.consensus(NET_CHAIN, core.key.public)
    actions = core.on_tick(T0 + RELAY_AFTER_MS + 10)
    relayed = [a.payload for a in actions if isinstance(a, Publish) and a.topic == own_topic]
    theirs = [
        m
        for m in map(decode, relayed)
        if isinstance(m, Proposal | Prevote | Precommit) and m.signer == faulty.public
    ]
    assert len(theirs) == MAX_PROPOSALS_PER_ROUND + 1  # its proposals kept, its first prevote
    assert len(consensus.gossip_messages()) <= MAX_PROPOSALS_PER_ROUND + len(NODES)


# ---- timely proposals -------------------------------------------------------------------


def prevote_on(core: LedgerCore, block: Block, proposer: KeyPair, now_ms: int) -> bytes:
    """Show ``core`` a fresh round-1 proposal of ``block``; the hash it prevotes."""
    proposal = sign(Proposal(NET_CHAIN, 1, 1, 0, block, proposer.public), proposer)
    topic = topics.consensus(NET_CHAIN, proposer.public)
    own_topic = topics.consensus(NET_CHAIN, core.key.public)
    actions = core.on_message(topic, encode(proposal), now_ms)
    sent = [decode(a.payload) for a in actions if isinstance(a, Publish) and a.topic == own_topic]
    (prevote,) = [m for m in sent if isinstance(m, Prevote)]
    return prevote.block_hash


def test_a_block_dated_just_after_its_parent_long_ago_gets_a_nil_prevote() -> None:
    """The chain was idle for a minute; a faulty proposer dates its block 1 ms after the
    parent (genesis), which would let it include transactions that expired meanwhile.
    Valid (time moves forward), but not timely: nil."""
    core, faulty = receiver_and_proposer()
    now = T0 + 60_000
    stale = build_proposal_block(core, faulty, core.tip.timestamp_ms + 1)
    assert core.replica.is_valid(stale)
    assert prevote_on(core, stale, faulty, now) == NIL
    assert core.stats.dropped["consensus.untimely_block"] == 1


def test_a_block_dated_by_the_proposers_clock_gets_a_block_prevote() -> None:
    core, proposer = receiver_and_proposer()
    now = T0 + 60_000
    block = build_proposal_block(core, proposer, now - CLOCK_DRIFT_MS)  # a slow clock
    assert prevote_on(core, block, proposer, now) == block.hash
    assert core.stats.dropped["consensus.untimely_block"] == 0


@pytest.mark.parametrize(("age_ms", "timely"), [(0, True), (11_000, True), (11_001, False)])
def test_the_lower_bound_is_precision_plus_message_delay(age_ms: int, timely: bool) -> None:
    """Round 1: CLOCK_DRIFT_MS (5 s) + Timeouts.message_delay(1) (5 s + timeoutPropose,
    1 s) before our clock, and still CLOCK_DRIFT_MS after it."""
    assert CLOCK_DRIFT_MS + Timeouts().message_delay(1) == 11_000
    core, proposer = receiver_and_proposer()
    now = T0 + 60_000
    block = build_proposal_block(core, proposer, now - age_ms)
    assert (prevote_on(core, block, proposer, now) == block.hash) is timely


def test_a_block_dated_too_far_ahead_is_still_untimely() -> None:
    core, proposer = receiver_and_proposer()
    now = T0 + 60_000
    block = build_proposal_block(core, proposer, now + CLOCK_DRIFT_MS + 1)
    assert prevote_on(core, block, proposer, now) == NIL


class RecordingApp(App):
    """Records the message delay the core allows each fresh proposal."""

    def __init__(self, key: KeyPair) -> None:
        super().__init__(key)
        self.delays: list[int] = []

    def is_timely(self, block: Block, now_ms: int, message_delay_ms: int) -> bool:
        self.delays.append(message_delay_ms)
        return super().is_timely(block, now_ms, message_delay_ms)


def test_the_message_delay_allowed_grows_with_the_round_like_timeout_propose() -> None:
    """So the lower bound refuses nothing the propose timeout lets in (a proposal that
    reached us late in a long round) once rounds are long enough."""
    timeouts = Timeouts()
    assert [timeouts.message_delay(r) for r in (1, 2, 5)] == [6000, 6500, 8000]
    assert all(timeouts.message_delay(r) >= timeouts.propose(r) for r in range(1, 50))
    app = RecordingApp(KEYS[1])
    core = make_core(1, app)
    core.start(0)
    core.on_message(signed_proposal(1), 1)
    for i in (0, 3):  # round 3 (rule 55)
        core.on_message(signed_precommit(i, 3, NIL), 2)
    core.on_message(signed_proposal(3), 3)
    assert app.delays == [timeouts.message_delay(1), timeouts.message_delay(3)]


def test_a_re_proposal_is_not_held_to_the_clock() -> None:
    """A block with a polka in an earlier round may be re-proposed much later: the
    polka, not the clock, vouches for it (as before)."""
    core = make_core(1)
    core.start(0)
    old = make_block(VALIDATORS[proposer_index(1, 2)], 1, GENESIS_PARENT, 5)
    for i in (0, 2, 3):
        core.on_message(signed_prevote(i, 2, old.hash), 10)
    for i in (0, 3):
        core.on_message(signed_precommit(i, 3, NIL), 10)
    assert core.round == 3
    outputs = core.on_message(signed_proposal(3, old, pol_round=2), 600_000)
    assert votes_sent(outputs) == [(Prevote, old.hash)]


def test_four_nodes_still_decide_with_the_lower_bound() -> None:
    net = Net()
    net.run_until(lambda: all(len(app.blocks) >= 3 for app in net.apps))
    rejected = [o.reason for outputs in net.outputs for o in outputs if isinstance(o, Rejected)]
    assert "untimely_block" not in rejected
