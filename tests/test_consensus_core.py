"""The consensus state machine on its own: four in-memory cores, a trivial app and a
tiny router that hands every broadcast to every other core.  Pure and fast; the seeded
fault simulator (test_consensus_sim.py) covers adversarial schedules.

Longer than 400 lines because it tests each upon-rule of the paper on its own, in the
paper's order.
"""

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable

import pytest

from micromine.ledger_node.consensus.certificate import check_certificate
from micromine.ledger_node.consensus.tendermint import (
    Broadcast,
    ConsensusCore,
    ConsensusMessage,
    Decide,
    Evidence,
    Output,
    PersistSigned,
    Rejected,
    SignedState,
    Step,
    Timeouts,
)
from micromine.protocol.block import GENESIS_PARENT, Block, BlockHeader, CommitSignature, Reward
from micromine.protocol.codec import is_commit_signature_valid, sign, sign_commit
from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.messages import NO_SIGNATURE

CHAIN = "consensus-test"
KEYS = sorted(
    (KeyPair(sha256(f"validator-{i}".encode())) for i in range(4)), key=lambda k: k.public
)
VALIDATORS = tuple(k.public for k in KEYS)
OUTSIDER = KeyPair(sha256(b"not-a-validator"))
TIMEOUTS = Timeouts()


def proposer_index(height: int, round: int) -> int:
    return (height + round) % len(VALIDATORS)


class App:
    """A chain of empty blocks (a block with a body is invalid: it stands for a body the
    header does not commit to).  ``bad_proposers``: blocks they make are invalid."""

    def __init__(self, key: KeyPair) -> None:
        self.key = key
        self.work = True
        self.blocks: list[Block] = []
        self.bad_proposers: set[bytes] = set()
        self.validity_asked: list[bytes] = []

    @property
    def tip(self) -> bytes:
        return self.blocks[-1].hash if self.blocks else GENESIS_PARENT

    def has_work(self) -> bool:
        return self.work

    def propose(self, height: int, round: int, now_ms: int) -> Block | None:
        return make_block(self.key.public, height, self.tip, now_ms)

    def is_timely(self, block: Block, now_ms: int, message_delay_ms: int) -> bool:
        return now_ms - 5000 - message_delay_ms <= block.header.timestamp_ms <= now_ms + 5000

    def is_valid(self, block: Block) -> bool:
        self.validity_asked.append(block.hash)
        header = block.header
        return (
            header.height == len(self.blocks) + 1
            and header.prev_hash == self.tip
            and header.proposer not in self.bad_proposers
            and not block.rewards
        )


def make_block(proposer: bytes, height: int, prev_hash: bytes, timestamp_ms: int) -> Block:
    header = BlockHeader(
        CHAIN, height, prev_hash, bytes(32), bytes(32), bytes(32), timestamp_ms, proposer
    )
    return Block(header, (), (), (), 0, ())


def make_core(
    index: int,
    app: App | None = None,
    *,
    height: int = 1,
    last_signed: SignedState | None = None,
    core_class: type[ConsensusCore] = ConsensusCore,
) -> ConsensusCore:
    return core_class(
        chain_id=CHAIN,
        key=KEYS[index],
        validators=VALIDATORS,
        app=app or App(KEYS[index]),
        timeouts=TIMEOUTS,
        height=height,
        last_signed=last_signed,
    )


class Net:
    """Four cores; every Broadcast goes to every other core, FIFO, at the same instant.
    ``silent`` nodes neither send nor receive."""

    def __init__(self, silent: Iterable[int] = (), bad_proposers: Iterable[int] = ()) -> None:
        self.apps = [App(k) for k in KEYS]
        for app in self.apps:
            app.bad_proposers.update(VALIDATORS[i] for i in bad_proposers)
        self.cores = [make_core(i, self.apps[i]) for i in range(len(KEYS))]
        self.silent = set(silent)
        self.queue: deque[tuple[int, ConsensusMessage]] = deque()
        self.outputs: list[list[Output]] = [[] for _ in KEYS]
        self.now = 0
        for i, core in enumerate(self.cores):
            self.apply(i, core.start(self.now))

    def apply(self, i: int, outputs: list[Output]) -> None:
        self.outputs[i].extend(outputs)
        for output in outputs:
            if isinstance(output, Broadcast) and i not in self.silent:
                for j in range(len(self.cores)):
                    if j != i and j not in self.silent:
                        self.queue.append((j, output.message))
            elif isinstance(output, Decide):
                self.apps[i].blocks.append(output.block)

    def step(self, step_ms: int = 10) -> None:
        while self.queue:
            j, message = self.queue.popleft()
            self.apply(j, self.cores[j].on_message(message, self.now))
        self.now += step_ms
        for i, core in enumerate(self.cores):
            self.apply(i, core.on_tick(self.now))

    def run_until(self, done: Callable[[], bool], limit_ms: int = 120_000) -> None:
        while not done():
            assert self.now < limit_ms, "no progress"
            self.step()

    def decides(self, i: int) -> list[Decide]:
        return [o for o in self.outputs[i] if isinstance(o, Decide)]

    def sent(self, i: int) -> list[ConsensusMessage]:
        return [o.message for o in self.outputs[i] if isinstance(o, Broadcast)]


def signed_prevote(index: int, round: int, block_hash: bytes, height: int = 1) -> Prevote:
    return sign(Prevote(CHAIN, height, round, block_hash, VALIDATORS[index]), KEYS[index])


def signed_precommit(index: int, round: int, block_hash: bytes, height: int = 1) -> Precommit:
    key = KEYS[index]
    commit = sign_commit(round, block_hash, CHAIN, key) if block_hash != NIL else NO_SIGNATURE
    return sign(Precommit(CHAIN, height, round, block_hash, key.public, commit), key)


def signed_proposal(
    round: int, block: Block | None = None, pol_round: int = 0, height: int = 1
) -> Proposal:
    index = proposer_index(height, round)
    key = KEYS[index]
    block = block or make_block(key.public, height, GENESIS_PARENT, 1000 + round)
    return sign(Proposal(CHAIN, height, round, pol_round, block, key.public), key)


def of_type(outputs: list[Output], kind: type) -> list[object]:
    return [o for o in outputs if isinstance(o, kind)]


def broadcasts(outputs: list[Output]) -> list[ConsensusMessage]:
    return [o.message for o in outputs if isinstance(o, Broadcast)]


def certificate_signers(block: Block) -> set[bytes]:
    return {
        c.signer
        for c in block.certificate
        if c.signer in VALIDATORS
        and is_commit_signature_valid(c.signer, CHAIN, block.commit_round, block.hash, c.signature)
    }


# ---- a healthy network ---------------------------------------------------------------


def test_four_nodes_decide_the_same_blocks_at_heights_1_to_5() -> None:
    net = Net()
    net.run_until(lambda: all(len(app.blocks) >= 5 for app in net.apps))
    chains = [[b.hash for b in app.blocks[:5]] for app in net.apps]
    assert all(chain == chains[0] for chain in chains)
    blocks = net.apps[0].blocks[:5]
    assert [b.height for b in blocks] == [1, 2, 3, 4, 5]
    assert [b.header.prev_hash for b in blocks[1:]] == [b.hash for b in blocks[:-1]]
    for i in range(4):  # once per height, and the proposers rotate
        heights = [d.block.height for d in net.decides(i)]
        assert heights == sorted(set(heights))
    assert {b.header.proposer for b in blocks} == set(VALIDATORS)
    for block in blocks:
        assert len(certificate_signers(block)) >= 3
        signers = [c.signer for c in block.certificate]
        assert signers == sorted(signers) and len(signers) == len(set(signers))


def test_decisions_wait_commit_ms_between_heights() -> None:
    net = Net()
    net.run_until(lambda: len(net.apps[0].blocks) >= 3)
    times = [t for t, o in enumerate(net.outputs[0]) if isinstance(o, Decide)]
    assert len(times) >= 3
    # After a decision the core waits, at height + 1, in no step and no round.
    core = net.cores[0]
    net.run_until(lambda: core.step == Step.NEW_HEIGHT)
    assert core.round == 0


def test_every_broadcast_is_preceded_by_its_persisted_state() -> None:
    net = Net()
    net.run_until(lambda: len(net.apps[0].blocks) >= 2)
    for outputs in net.outputs:
        for position, output in enumerate(outputs):
            if isinstance(output, Broadcast):
                before = outputs[position - 1]
                assert isinstance(before, PersistSigned)
                message = output.message
                state = before.state
                assert (state.height, state.round) == (message.height, message.round)
                if isinstance(message, Proposal):
                    assert (state.step, state.block_hash) == (1, message.block.hash)
                else:
                    assert state.block_hash == message.block_hash
                    assert state.step == (2 if isinstance(message, Prevote) else 3)


def test_runs_are_deterministic() -> None:
    def run() -> list[list[Output]]:
        net = Net(silent=[proposer_index(2, 1)])
        net.run_until(lambda: len(net.apps[0].blocks) >= 3)
        return net.outputs

    assert run() == run()


def test_silent_proposer_leads_to_round_2_and_a_decision() -> None:
    silent = proposer_index(1, 1)
    net = Net(silent=[silent])
    live = [i for i in range(4) if i != silent]
    net.run_until(lambda: all(net.apps[i].blocks for i in live))
    first = {net.decides(i)[0].block.hash for i in live}
    assert len(first) == 1
    assert all(net.decides(i)[0].round == 2 for i in live)
    assert all(net.decides(i)[0].block.commit_round == 2 for i in live)
    assert all(len(certificate_signers(net.decides(i)[0].block)) == 3 for i in live)
    # Round 1 ended with nil votes after timeoutPropose.
    assert all(
        m.block_hash == NIL
        for i in live
        for m in net.sent(i)
        if isinstance(m, Prevote | Precommit) and (m.height, m.round) == (1, 1)
    )


def test_timeouts_grow_with_the_round() -> None:
    t = Timeouts()
    for timeout in (t.propose, t.prevote, t.precommit):
        values = [timeout(r) for r in range(1, 6)]
        assert values == sorted(values) and len(set(values)) == 5
    assert t.propose(1) == t.propose_ms and t.propose(3) == t.propose_ms + 2 * t.propose_delta_ms


def test_rounds_take_longer_and_longer_without_a_quorum() -> None:
    net = Net(bad_proposers=range(4))  # every block is invalid: every round ends in nil
    core = net.cores[2]
    starts: dict[int, int] = {}
    while len(starts) < 5 and net.now < 60_000:
        starts.setdefault(core.round, net.now)
        net.step()
    gaps = [starts[r + 1] - starts[r] for r in range(1, 5)]
    assert gaps == sorted(gaps) and gaps[0] < gaps[-1]
    assert not net.apps[2].blocks


# ---- waiting for work, skipping rounds, later heights -----------------------------------


def test_round_1_waits_for_work() -> None:
    index = proposer_index(1, 1)
    app = App(KEYS[index])
    app.work = False
    core = make_core(index, app)
    assert core.start(0) == []
    assert core.on_tick(60_000) == []
    assert (core.round, core.step) == (1, Step.PROPOSE)
    app.work = True
    sent = broadcasts(core.on_tick(60_010))
    assert [type(m) for m in sent] == [Proposal, Prevote]


def test_proposer_retries_while_the_app_has_no_block() -> None:
    class SlowApp(App):
        misses = 2

        def propose(self, height: int, round: int, now_ms: int) -> Block | None:
            self.misses -= 1
            return None if self.misses >= 0 else super().propose(height, round, now_ms)

    index = proposer_index(1, 1)
    core = make_core(index, SlowApp(KEYS[index]))
    assert broadcasts(core.start(0)) == []
    assert broadcasts(core.on_tick(10)) == []
    assert isinstance(broadcasts(core.on_tick(20))[0], Proposal)


def test_f_plus_1_validators_in_a_higher_round_make_us_skip_to_it() -> None:
    core = make_core(1)
    core.start(0)
    core.on_message(signed_prevote(2, 5, NIL), 1)
    assert core.round == 1  # one could be faulty
    core.on_message(signed_precommit(3, 7, NIL), 2)
    assert core.round == 5  # two validators are in round 5 or later: one is honest


def test_next_height_messages_are_buffered_and_replayed() -> None:
    net = Net()
    net.run_until(lambda: len(net.apps[0].blocks) >= 1)
    block = net.apps[0].blocks[0]
    core = make_core(1)
    core.start(0)
    core.on_message(signed_prevote(2, 4, NIL, height=2), 1)
    core.on_message(signed_prevote(3, 4, NIL, height=2), 1)
    core.on_message(signed_prevote(3, 4, NIL, height=3), 1)  # too far ahead: ignored
    assert core.round == 1
    outputs = core.on_certified_block(block, 2)
    assert of_type(outputs, Decide) == [Decide(block, block.commit_round)]
    assert (core.height, core.step) == (2, Step.NEW_HEIGHT)
    core.on_tick(2 + TIMEOUTS.commit_ms)
    assert (core.height, core.round) == (2, 4)


# ---- checks on incoming messages --------------------------------------------------------


def test_bad_messages_are_rejected() -> None:
    core = make_core(1)
    core.start(0)
    good = signed_prevote(2, 1, NIL)
    forged = dataclasses.replace(good, block_hash=sha256(b"x"))  # signature no longer fits
    stranger = sign(Prevote(CHAIN, 1, 1, NIL, OUTSIDER.public), OUTSIDER)
    not_proposer = proposer_index(1, 1) + 1
    wrong_proposer = sign(
        Proposal(
            CHAIN, 1, 1, 0,
            make_block(VALIDATORS[not_proposer], 1, GENESIS_PARENT, 5),
            VALIDATORS[not_proposer],
        ),
        KEYS[not_proposer],
    )  # fmt: skip
    other_block = make_block(VALIDATORS[0], 1, GENESIS_PARENT, 5).hash
    bad_commit = sign(
        Precommit(
            CHAIN, 1, 1, other_block, VALIDATORS[3],
            sign_commit(1, sha256(b"another block"), CHAIN, KEYS[3]),
        ),
        KEYS[3],
    )  # fmt: skip
    proposer = proposer_index(1, 1)
    foreign_header = make_block(VALIDATORS[0], 1, GENESIS_PARENT, 5)
    block_by_other = sign(
        Proposal(CHAIN, 1, 1, 0, foreign_header, VALIDATORS[proposer]), KEYS[proposer]
    )
    wrong_height = signed_proposal(1, make_block(VALIDATORS[proposer], 2, GENESIS_PARENT, 5))
    other_chain = sign(Prevote("other-chain", 1, 1, NIL, VALIDATORS[2]), KEYS[2])
    other_chain_block = dataclasses.replace(
        wrong_height.block,
        header=dataclasses.replace(wrong_height.block.header, chain_id="other-chain", height=1),
    )
    cases: dict[str, ConsensusMessage] = {
        "bad_signature": forged,
        "unknown_validator": stranger,
        "wrong_proposer": wrong_proposer,
        "bad_commit_signature": bad_commit,
        "wrong_block_proposer": block_by_other,
        "wrong_block_height": wrong_height,
        "wrong_chain": other_chain,
        "wrong_block_chain": signed_proposal(1, other_chain_block),
    }
    for reason, message in cases.items():
        assert core.on_message(message, 1) == [Rejected(reason, message.signer)], reason
    # A COMMIT signature over the right block, but made for another round.
    other_round = sign(
        Precommit(
            CHAIN, 1, 1, other_block, VALIDATORS[0], sign_commit(2, other_block, CHAIN, KEYS[0])
        ),
        KEYS[0],
    )
    assert core.on_message(other_round, 1) == [Rejected("bad_commit_signature", VALIDATORS[0])]
    # None of them counted: the good vote still is the first of its slot.
    assert core.on_message(good, 2) == []
    assert core.on_message(good, 3) == []  # an identical copy is ignored silently


def test_past_heights_are_ignored() -> None:
    core = make_core(1, height=3)
    core.start(0)
    assert core.on_message(signed_prevote(2, 1, NIL, height=2), 1) == []


def test_a_double_vote_produces_evidence_once() -> None:
    core = make_core(1)
    core.start(0)
    first = signed_prevote(2, 1, sha256(b"a"))
    second = signed_prevote(2, 1, sha256(b"b"))
    third = signed_prevote(2, 1, NIL)
    assert core.on_message(first, 1) == []
    assert core.on_message(second, 2) == [Evidence(first, second)]
    assert core.on_message(third, 3) == []  # reported already
    precommit_a = signed_precommit(3, 1, sha256(b"a"))
    precommit_nil = signed_precommit(3, 1, NIL)
    core.on_message(precommit_a, 4)
    assert core.on_message(precommit_nil, 5) == [Evidence(precommit_a, precommit_nil)]


def test_an_equivocating_vote_counts_for_its_own_value_only() -> None:
    """Validator 3 tells us nil and the others the block: its second prevote is evidence
    and also counts for the block, so we see the polka the others saw (otherwise they
    could lock on it while we never can follow)."""
    core = make_core(1)
    core.start(0)
    proposal = signed_proposal(1)
    block_hash = proposal.block.hash
    nil_vote, block_vote = signed_prevote(3, 1, NIL), signed_prevote(3, 1, block_hash)
    core.on_message(nil_vote, 1)
    core.on_message(proposal, 2)  # we prevote the block
    assert broadcasts(core.on_message(signed_prevote(2, 1, block_hash), 3)) == []
    outputs = core.on_message(block_vote, 4)
    assert of_type(outputs, Evidence) == [Evidence(nil_vote, block_vote)]
    sent = broadcasts(outputs)
    assert [(type(m), m.block_hash) for m in sent] == [(Precommit, block_hash)]  # type: ignore[union-attr]
    assert core.locked_hash == block_hash
    # A conflicting vote for a value no proposal carries counts nowhere and is not kept.
    junk = signed_prevote(0, 1, sha256(b"junk"))
    core.on_message(signed_prevote(0, 1, NIL), 5)
    assert of_type(core.on_message(junk, 6), Evidence) != []
    assert junk not in core.gossip_messages()
    assert {nil_vote, block_vote} <= set(core.gossip_messages())


def test_one_header_with_two_bodies_decides_the_valid_one() -> None:
    """The hash covers the header only: validity is judged per block, not per hash."""
    proposer = VALIDATORS[proposer_index(1, 1)]
    good = make_block(proposer, 1, GENESIS_PARENT, 7)
    bad = dataclasses.replace(good, rewards=(Reward(VALIDATORS[0], 1),))
    assert good.hash == bad.hash
    for first, second in ((good, bad), (bad, good)):
        core = make_core(1)
        core.start(0)
        core.on_message(signed_proposal(1, first), 1)
        core.on_message(signed_proposal(1, second), 2)
        outputs: list[Output] = []
        for i in (0, 2, 3):
            outputs += core.on_message(signed_precommit(i, 1, good.hash), 3)
        decided = of_type(outputs, Decide)
        assert len(decided) == 1 and isinstance(decided[0], Decide)
        assert decided[0].block.rewards == ()


def test_gossip_messages_hold_this_height_and_the_next() -> None:
    core = make_core(1)
    core.start(0)
    assert core.gossip_messages() == []
    proposal = signed_proposal(1)
    votes = [signed_prevote(i, 1, NIL) for i in (0, 2)]
    early = signed_prevote(3, 1, NIL, height=2)
    received: list[ConsensusMessage] = [proposal, *votes, early]
    for message in received:
        core.on_message(message, 1)
    kept = core.gossip_messages()
    ours = [m for m in kept if m.signer == core.me]
    assert [type(m) for m in ours] == [Prevote]  # our own prevote for the proposal
    assert {proposal, *votes, early} <= set(kept)
    assert kept[-1] == early  # next height last


def test_two_proposals_in_one_round_are_evidence() -> None:
    core = make_core(1)
    core.start(0)
    proposer = VALIDATORS[proposer_index(1, 1)]
    first = signed_proposal(1, make_block(proposer, 1, GENESIS_PARENT, 7))
    second = signed_proposal(1, make_block(proposer, 1, GENESIS_PARENT, 8))
    assert isinstance(broadcasts(core.on_message(first, 1))[0], Prevote)
    assert of_type(core.on_message(second, 2), Evidence) == [Evidence(first, second)]


def test_double_voting_validator_in_a_network_is_reported() -> None:
    net = Net()
    liar = proposer_index(1, 1) + 1
    forged = signed_prevote(liar, 1, sha256(b"elsewhere"))
    for j in range(4):  # before the liar's real prevote, which goes out with the proposal
        if j != liar:
            net.apply(j, net.cores[j].on_message(forged, net.now))
    net.run_until(lambda: all(app.blocks for app in net.apps))
    for j in range(4):
        evidence = of_type(net.outputs[j], Evidence)
        if j == liar:
            assert evidence == []
            continue
        assert len(evidence) == 1
        (report,) = evidence
        assert isinstance(report, Evidence) and report.first == forged
        assert report.second.signer == VALIDATORS[liar] and report.second in net.sent(liar)


def test_an_invalid_block_gets_nil_prevotes_and_is_never_decided() -> None:
    net = Net(bad_proposers=[proposer_index(1, 1)])
    bad = VALIDATORS[proposer_index(1, 1)]
    net.run_until(lambda: all(app.blocks for app in net.apps))
    assert all(app.blocks[0].header.proposer != bad for app in net.apps)
    bad_proposal = next(m for m in net.sent(proposer_index(1, 1)) if isinstance(m, Proposal))
    for i in range(4):
        round_1 = [m for m in net.sent(i) if isinstance(m, Prevote) and m.round == 1]
        assert [m.block_hash for m in round_1] == [NIL]
        assert Rejected("invalid_block", bad) in net.outputs[i]
        asked = net.apps[i].validity_asked
        assert asked.count(bad_proposal.block.hash) == 1  # cached per block


# ---- locks --------------------------------------------------------------------------


def lock_core_on_round_1(
    core_class: type[ConsensusCore] = ConsensusCore,
) -> tuple[ConsensusCore, Block]:
    """Validator 1 prevotes and, seeing a polka, locks on round 1's block."""
    core = make_core(1, core_class=core_class)
    core.start(0)
    proposal = signed_proposal(1)
    core.on_message(proposal, 1)
    block_hash = proposal.block.hash
    core.on_message(signed_prevote(2, 1, block_hash), 2)
    outputs = core.on_message(signed_prevote(3, 1, block_hash), 3)
    precommit = broadcasts(outputs)
    assert isinstance(precommit[0], Precommit) and precommit[0].block_hash == block_hash
    assert (core.locked_round, core.locked_hash) == (1, block_hash)
    persisted = of_type(outputs, PersistSigned)[0]
    assert isinstance(persisted, PersistSigned)
    assert (persisted.state.locked_round, persisted.state.locked_hash) == (1, block_hash)
    return core, proposal.block


def go_to_round(core: ConsensusCore, round: int, at: int) -> None:
    """f + 1 validators precommit nil in ``round``: the core skips to it (rule 55)."""
    core.on_message(signed_precommit(0, round, NIL), at)
    core.on_message(signed_precommit(3, round, NIL), at)
    assert core.round == round


def fresh_block(round: int) -> Block:
    return make_block(VALIDATORS[proposer_index(1, round)], 1, GENESIS_PARENT, 2000 + round)


def test_a_locked_validator_prevotes_nil_for_another_fresh_block() -> None:
    core, _locked = lock_core_on_round_1()
    go_to_round(core, 2, 10)
    sent = broadcasts(core.on_message(signed_proposal(2, fresh_block(2)), 11))
    assert [(type(m), m.round, m.block_hash) for m in sent] == [(Prevote, 2, NIL)]  # type: ignore[union-attr]


def test_a_newer_polka_releases_the_lock() -> None:
    core, _locked = lock_core_on_round_1()
    go_to_round(core, 2, 10)
    other = fresh_block(2)
    core.on_message(signed_proposal(2, other), 11)  # prevote nil: locked
    go_to_round(core, 3, 12)
    for i in (0, 2, 3):  # a polka for the other block in round 2, seen late
        core.on_message(signed_prevote(i, 2, other.hash), 13)
    sent = broadcasts(core.on_message(signed_proposal(3, other, pol_round=2), 14))
    assert [(type(m), m.block_hash) for m in sent] == [(Prevote, other.hash)]  # type: ignore[union-attr]


def test_a_re_proposal_waits_for_the_polka_it_cites() -> None:
    core = make_core(1)
    core.start(0)
    go_to_round(core, 3, 1)
    block = fresh_block(2)
    assert broadcasts(core.on_message(signed_proposal(3, block, pol_round=2), 2)) == []
    core.on_message(signed_prevote(0, 2, block.hash), 3)
    core.on_message(signed_prevote(2, 2, block.hash), 3)
    sent = broadcasts(core.on_message(signed_prevote(3, 2, block.hash), 3))
    assert [(type(m), m.block_hash) for m in sent] == [(Prevote, block.hash)]  # type: ignore[union-attr]


def test_the_proposer_re_proposes_its_valid_value() -> None:
    index = proposer_index(1, 2)
    core = make_core(index)
    core.start(0)
    proposal = signed_proposal(1)
    core.on_message(proposal, 1)
    for i in {0, 1, 2, 3} - {index, proposer_index(1, 1)}:
        core.on_message(signed_prevote(i, 1, proposal.block.hash), 2)
    core.on_message(signed_prevote(proposer_index(1, 1), 1, proposal.block.hash), 2)
    assert core.valid_block == proposal.block
    core.on_message(signed_precommit(0, 2, NIL), 3)
    sent = broadcasts(core.on_message(signed_precommit(1, 2, NIL), 3))
    assert core.round == 2
    again = sent[0]
    assert isinstance(again, Proposal)
    assert (again.block, again.pol_round) == (proposal.block, 1)


def test_every_prevote_on_a_proposal_goes_through_the_hook() -> None:
    calls: list[tuple[int, bool]] = []

    class Recording(ConsensusCore):
        def prevote_value(self, proposal: Proposal, valid_proposal: bool) -> bytes:
            calls.append((proposal.round, valid_proposal))
            return proposal.block.hash if valid_proposal else NIL  # no lock at all

    core, _locked = lock_core_on_round_1(Recording)
    go_to_round(core, 2, 10)
    other = fresh_block(2)
    sent = broadcasts(core.on_message(signed_proposal(2, other), 11))
    assert [(type(m), m.block_hash) for m in sent] == [(Prevote, other.hash)]  # type: ignore[union-attr]
    assert calls == [(1, True), (2, True)]


# ---- restarts -------------------------------------------------------------------------


def test_restart_never_signs_a_conflicting_vote() -> None:
    voted = fresh_block(1)
    other = make_block(VALIDATORS[proposer_index(1, 1)], 1, GENESIS_PARENT, 99)
    last = SignedState(1, 1, 2, voted.hash)
    core = make_core(1, last_signed=last)
    core.start(0)
    outputs = core.on_message(signed_proposal(1, other), 1)
    assert broadcasts(outputs) == []  # a prevote for `other` would conflict
    assert core.step == Step.PREVOTE  # the step is done all the same
    outputs = core.on_tick(TIMEOUTS.propose(1) + 10)
    assert broadcasts(outputs) == []


def test_restart_resends_the_identical_vote() -> None:
    voted = fresh_block(1)
    before = make_core(1)
    before.start(0)
    original = broadcasts(before.on_message(signed_proposal(1, voted), 1))
    core = make_core(1, last_signed=SignedState(1, 1, 2, voted.hash))
    core.start(0)
    outputs = core.on_message(signed_proposal(1, voted), 1)
    assert broadcasts(outputs) == original
    assert isinstance(outputs[0], PersistSigned)


def test_restart_starts_in_the_last_signed_round_and_never_reproposes() -> None:
    index = proposer_index(1, 3)
    last = SignedState(1, 3, 1, sha256(b"what we proposed before the crash"))
    core = make_core(index, last_signed=last)
    outputs = core.start(0)
    assert core.round == 3
    assert broadcasts(outputs) == []  # the proposal slot of round 3 is used
    later = broadcasts(core.on_tick(TIMEOUTS.propose(3)))
    assert [(type(m), m.round, m.block_hash) for m in later] == [(Prevote, 3, NIL)]  # type: ignore[union-attr]


def test_restart_keeps_the_lock() -> None:
    locked = fresh_block(1)
    last = SignedState(1, 1, 3, locked.hash, locked_round=1, locked_hash=locked.hash)
    core = make_core(1, last_signed=last)
    core.start(0)
    assert (core.locked_round, core.locked_hash) == (1, locked.hash)
    go_to_round(core, 2, 1)
    sent = broadcasts(core.on_message(signed_proposal(2, fresh_block(2)), 2))
    assert [(type(m), m.block_hash) for m in sent] == [(Prevote, NIL)]  # type: ignore[union-attr]


def test_an_older_last_signed_height_does_not_restrict() -> None:
    core = make_core(1, height=2, last_signed=SignedState(1, 4, 3, NIL))
    core.start(0)
    assert core.round == 1


# ---- catch-up with certified blocks -------------------------------------------------------


@pytest.fixture(scope="module")
def decided_block() -> Block:
    net = Net()
    net.run_until(lambda: bool(net.apps[0].blocks))
    return net.apps[0].blocks[0]


def test_a_certified_block_is_decided(decided_block: Block) -> None:
    core = make_core(1)
    core.start(0)
    outputs = core.on_certified_block(decided_block, 5)
    assert outputs == [Decide(decided_block, 1)]  # decided in round 1, as it names
    assert core.height == 2
    assert core.on_certified_block(decided_block, 6) == [Rejected("wrong_height", None)]


def test_a_certificate_is_normalised(decided_block: Block) -> None:
    round = decided_block.commit_round
    junk = CommitSignature(OUTSIDER.public, sign_commit(round, decided_block.hash, CHAIN, OUTSIDER))
    shuffled = (junk, *reversed(decided_block.certificate), decided_block.certificate[0])
    core = make_core(1)
    outputs = core.on_certified_block(dataclasses.replace(decided_block, certificate=shuffled), 5)
    assert outputs == [Decide(decided_block, round)]


def test_short_or_forged_certificates_are_rejected(decided_block: Block) -> None:
    short = dataclasses.replace(decided_block, certificate=decided_block.certificate[:2])
    forged_items = tuple(
        CommitSignature(c.signer, sign_commit(1, sha256(b"other"), CHAIN, KEYS[0]))
        for c in decided_block.certificate
    )
    forged = dataclasses.replace(decided_block, certificate=forged_items)
    stacked = dataclasses.replace(
        decided_block, certificate=(decided_block.certificate[0],) * 3
    )  # one signer three times
    relabelled = dataclasses.replace(decided_block, commit_round=decided_block.commit_round + 1)
    for block in (short, forged, stacked, relabelled):
        core = make_core(1)
        assert core.on_certified_block(block, 5) == [Rejected("short_certificate", None)]
        assert core.height == 1


def test_a_certified_but_invalid_block_is_rejected(decided_block: Block) -> None:
    app = App(KEYS[1])
    app.bad_proposers.add(decided_block.header.proposer)
    core = make_core(1, app)
    assert core.on_certified_block(decided_block, 5) == [Rejected("invalid_block", None)]


def test_a_lagging_node_catches_up_and_rejoins() -> None:
    net = Net(silent=[3])
    net.run_until(lambda: len(net.apps[0].blocks) >= 3)
    for block in net.apps[0].blocks:
        net.apply(3, net.cores[3].on_certified_block(block, net.now))
    assert [b.hash for b in net.apps[3].blocks] == [b.hash for b in net.apps[0].blocks]
    net.silent.clear()
    target = len(net.apps[0].blocks) + 3
    net.run_until(lambda: all(len(app.blocks) >= target for app in net.apps))
    assert len({tuple(b.hash for b in app.blocks[:target]) for app in net.apps}) == 1


# ---- certificates name their round --------------------------------------------------------


def test_commit_signatures_from_different_rounds_cannot_certify_an_undecided_block() -> None:
    """Three real cores (A, B, C) and a scripted Byzantine Z, n = 4, f = 1, with message
    delays any asynchronous period allows (each phase waits out its timeouts).  X is
    decided in round 4; Y never gathers 2f+1 precommits in one round, but A precommits
    it in round 1 and B in round 3.  With round-free COMMIT signatures, those two and
    Z's made a "certificate" for Y (docs/CONSENSUS.md, "Certificates").  Now each
    signature covers its round: whichever round a certificate for Y names, only two of
    the three count, so it is rejected, while X's certificate (round 4) is accepted."""
    a, c, z, b = 0, 1, 2, 3  # proposers of height 1: round 1 Z, 2 B, 3 A, 4 C
    cores = {i: make_core(i) for i in (a, b, c)}
    now = 0
    for core in cores.values():
        core.start(now)

    def give(i: int, *messages: ConsensusMessage) -> list[ConsensusMessage]:
        sent: list[ConsensusMessage] = []
        for message in messages:
            sent += broadcasts(cores[i].on_message(message, now))
        return sent

    def tick(i: int) -> list[ConsensusMessage]:
        return broadcasts(cores[i].on_tick(now))

    def one(messages: list[ConsensusMessage], kind: type[ConsensusMessage]) -> ConsensusMessage:
        (found,) = [m for m in messages if isinstance(m, kind)]
        return found

    def exchange_precommits(precommits: dict[int, ConsensusMessage]) -> None:
        for i in precommits:
            give(i, *(m for j, m in precommits.items() if j != i))

    # Round 1: Z proposes Y; only A sees the polka in time and precommits Y.
    y = make_block(VALIDATORS[z], 1, GENESIS_PARENT, 11)
    proposal_y = signed_proposal(1, y)
    prevote_1 = {i: one(give(i, proposal_y), Prevote) for i in (a, b, c)}
    precommit_a1 = one(give(a, prevote_1[b], signed_prevote(z, 1, y.hash)), Precommit)
    for i, other in ((b, c), (c, b)):
        give(i, prevote_1[other], signed_prevote(z, 1, NIL))
    now = 1000
    exchange_precommits({a: precommit_a1, b: one(tick(b), Precommit), c: one(tick(c), Precommit)})
    now = 2000
    started = {i: tick(i) for i in (a, b, c)}
    # Round 2: B proposes X; only C sees the polka in time and precommits X.
    proposal_x = one(started[b], Proposal)
    prevote_b2 = one(started[b], Prevote)
    assert isinstance(proposal_x, Proposal)
    x = proposal_x.block
    prevote_a2 = one(give(a, proposal_x), Prevote)
    prevote_c2 = one(give(c, proposal_x), Prevote)
    precommit_c2 = one(give(c, prevote_b2, signed_prevote(z, 2, x.hash)), Precommit)
    give(a, prevote_b2, prevote_c2)
    give(b, prevote_a2, prevote_c2)
    now = 4000
    exchange_precommits({a: one(tick(a), Precommit), b: one(tick(b), Precommit), c: precommit_c2})
    now = 6000
    started = {i: tick(i) for i in (a, b, c)}
    # Round 3: A re-proposes Y (pol_round 1); only B sees the polka and precommits Y.
    proposal_y3, prevote_a3 = one(started[a], Proposal), one(started[a], Prevote)
    prevote_b3 = one(give(b, prevote_1[a], proposal_y3), Prevote)
    prevote_c3 = one(give(c, prevote_1[a], proposal_y3), Prevote)
    precommit_b3 = one(give(b, prevote_a3, signed_prevote(z, 3, y.hash)), Precommit)
    give(a, prevote_b3, prevote_c3)
    give(c, prevote_a3, prevote_b3)
    now = 8000
    exchange_precommits({a: one(tick(a), Precommit), b: precommit_b3, c: one(tick(c), Precommit)})
    now = 10_000
    started = {i: tick(i) for i in (a, b, c)}
    # Round 4: C re-proposes X (pol_round 2); A's lock (round 1) yields; X is decided.
    proposal_x4, prevote_c4 = one(started[c], Proposal), one(started[c], Prevote)
    prevote_a4 = one(give(a, signed_prevote(z, 2, x.hash), proposal_x4), Prevote)
    assert isinstance(prevote_a4, Prevote) and prevote_a4.block_hash == x.hash
    precommit_c4 = one(give(c, prevote_a4, signed_prevote(z, 4, x.hash)), Precommit)
    precommit_a4 = one(give(a, prevote_c4, signed_prevote(z, 4, x.hash)), Precommit)
    assert isinstance(precommit_a4, Precommit) and precommit_a4.block_hash == x.hash
    give(a, precommit_c4)
    decided = of_type(cores[a].on_message(signed_precommit(z, 4, x.hash), now), Decide)
    assert [d.block.hash for d in decided if isinstance(d, Decide)] == [x.hash]

    # The honest COMMIT signatures for Y: A's of round 1, B's of round 3.
    assert isinstance(precommit_a1, Precommit) and isinstance(precommit_b3, Precommit)
    assert precommit_a1.block_hash == precommit_b3.block_hash == y.hash
    assert (precommit_a1.round, precommit_b3.round) == (1, 3)
    honest = {VALIDATORS[a]: precommit_a1, VALIDATORS[b]: precommit_b3}
    # Y's "certificate", naming either round; Z signs whatever round is named.
    for named in (1, 3):
        certificate = tuple(
            sorted(
                (
                    *(CommitSignature(v, p.commit_signature) for v, p in honest.items()),
                    CommitSignature(VALIDATORS[z], sign_commit(named, y.hash, CHAIN, KEYS[z])),
                ),
                key=lambda entry: entry.signer,
            )
        )
        mixed = dataclasses.replace(y, commit_round=named, certificate=certificate)
        check = check_certificate(mixed, VALIDATORS)
        assert not check.ok and check.signers == 2, check.describe()
        assert len(certificate_signers(mixed)) == 2
        late = make_core(c)  # a node catching up at height 1
        assert late.on_certified_block(mixed, now) == [Rejected("short_certificate", None)]
        assert late.height == 1
    # X's certificate: 2f + 1 COMMIT signatures of round 4, the deciding round.
    (decision,) = decided
    assert isinstance(decision, Decide)
    assert decision.round == decision.block.commit_round == 4
    assert check_certificate(decision.block, VALIDATORS).ok
    late = make_core(c)
    assert late.on_certified_block(decision.block, now) == [Decide(decision.block, 4)]
