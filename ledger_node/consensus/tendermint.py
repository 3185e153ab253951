"""BFT consensus among the ledger nodes: Algorithm 1 of "The latest gossip on BFT
consensus" (Buchman, Kwon, Milosevic 2018), the reference of CometBFT's consensus.

    start(now_ms)                      -> [Output]   begin the height given at construction
    on_message(message, now_ms)        -> [Output]   a Proposal, Prevote or Precommit
    on_tick(now_ms)                    -> [Output]   time passed: timeouts, next height, work
    on_certified_block(block, now_ms)  -> [Output]   catch-up with a certified block

Sans-I/O and deterministic like ``core.py``: no clock, randomness or I/O; the adapter
carries out the outputs of one call in order (PersistSigned before the Broadcast it
covers) before making the next call.  Message bookkeeping lives in
``consensus_votes.py``, types in ``consensus_types.py``; this module is the paper's
rules, one method per upon-rule.  It is longer than our other modules on purpose: the
rules read against each other (which step, which round, which lock), so they stay in
one class, in the paper's order.

Numbering: rounds count from 1 (the paper's round 0 is our round 1) and "no round"
(the paper's -1, for lockedRound, validRound and a proposal's validRound) is 0.
n validators, f = (n - 1) // 3, quorum = 2n // 3 + 1 (the paper's 2f + 1 when n = 3f + 1).

    paper lines  rule                                               method
    11-21        StartRound: propose validValue or a new block      _start_round, _try_propose
    22-27        prevote on a fresh proposal (pol_round none)       _rule_prevote_on_proposal
    28-33        prevote on a re-proposal backed by a polka at vr   _rule_prevote_on_proposal
    23, 29       the lock test deciding that prevote                prevote_value (the hook)
    34-35        2f+1 prevotes of any kind: schedule timeoutPrevote _rule_prevote_timeout
    36-43        polka for the proposal: lock, precommit, validVal. _rule_polka
    44-46        2f+1 nil prevotes: precommit nil                   _rule_nil_polka
    47-48        2f+1 precommits of any kind: timeoutPrecommit      _rule_precommit_timeout
    49-54        proposal + 2f+1 precommits in a round: decide      _rule_decide, _decide
    55-56        f+1 validators in a higher round: go there         _rule_skip_round
    57-60        OnTimeoutPropose: prevote nil                      _fire_timeouts
    61-64        OnTimeoutPrevote: precommit nil                    _fire_timeouts
    65-67        OnTimeoutPrecommit: next round                     _fire_timeouts

Checks on every incoming message, in order (cheap ones first, the signature last but
one, so forged messages can never produce evidence or take buffer space):

    [REJECT] the chain id is ours
    [IGNORE] a past height (decided), or more than one height ahead
    [IGNORE] an identical copy of a message already counted (re-broadcasts)
    [REJECT] the signer is a validator
    [REJECT] a proposal comes from proposer(h, r), for a block of this chain and height
             whose header names the proposer (or, re-proposed with pol_round > 0, a
             validator: the block was first proposed in an earlier round)
    [REJECT] the signature is valid
    [REJECT] a non-nil precommit's commit signature is valid over its round and hash
    then: the next height -> buffered (bounded); this height -> recorded.

Counting (consensus_votes.py): "2f+1 prevotes for v" means 2f+1 distinct validators
that signed a prevote for v; "2f+1 prevotes" (any value) means 2f+1 distinct validators.
A second, different message of a validator in one (height, round, step) is reported
once as Evidence, and still counts for its own value (never twice for one value, never
twice among "any"), as the paper's message counting implies: otherwise an equivocator
could show a polka to some honest nodes and hide it from others for ever.  What a faulty
proposer or voter can make us keep is O(n) per round: beyond the first few proposals
and each validator's first vote, only what f+1 validators voted for.  A proposal
whose block the app finds invalid is recorded (so we prevote nil) and reported as
Rejected.  Validity is asked of the app per block, not per hash: the hash covers the
header only, so a faulty proposer may pair one header with two bodies.

Additions to the paper, each for a stated reason:

* Waiting for work: in round 1 nobody proposes or runs timeoutPropose until
  ``app.has_work()`` (no empty blocks on an idle chain), or until a vote of this height
  from another validator shows that it has work: a node may be the only one whose
  devices' verdicts arrived, and then only a round change reaches a proposer that can
  include its transactions (the simulator found this stall).  Rounds > 1 run normally.
* The proposer schedules timeoutPropose too (as CometBFT does): if its app has no block
  yet it prevotes nil on time instead of waiting for others' precommits.
* Crash safety: never sign two different messages at one (height, round, step), also
  across restarts (``last_signed``).  The lock and the valid value are persisted with
  it and restored, so a restart costs neither agreement nor liveness (see SignedState);
  a valid value learned without signing anything is persisted on its own.
* Rule 55 jumps to the highest round that f + 1 validators have reached, which is the
  paper's rule applied to the latest round each validator was seen in.
* A re-proposed block (pol_round > 0) keeps its first proposer in its header.
* ``gossip_messages()`` gives an adapter what to relay: the paper assumes that what one
  honest node received reaches all (its gossip layer); re-sending only our own votes
  does not give that after crashes and lost messages.
"""

import dataclasses
import heapq

from micromine.ledger_node.consensus.certificate import check_certificate
from micromine.ledger_node.consensus.interface import (
    Broadcast,
    ConsensusApp,
    Decide,
    Evidence,
    Output,
    PersistSigned,
    Rejected,
    SignedState,
    Step,
    Timeouts,
)
from micromine.ledger_node.consensus.votes import (
    ConsensusMessage,
    FutureBuffer,
    HeightLog,
    RoundLog,
)
from micromine.protocol.block import Block, CommitSignature
from micromine.protocol.codec import (
    is_commit_signature_valid,
    is_signature_valid,
    sign,
    sign_commit,
)
from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal
from micromine.protocol.crypto import KeyPair
from micromine.protocol.limits import MAX_CERTIFICATE_SIGNATURES, PUBLIC_KEY_LEN
from micromine.protocol.messages import NO_SIGNATURE

__all__ = [
    "Broadcast",
    "ConsensusApp",
    "ConsensusCore",
    "ConsensusMessage",
    "Decide",
    "Evidence",
    "Output",
    "PersistSigned",
    "Rejected",
    "SignedState",
    "Step",
    "Timeouts",
]

ROUND_WINDOW = 2  # rounds beyond round + 2 are parked (latest per validator), not stored
MAX_FUTURE_MESSAGES = 1000  # next-height messages buffered in all


class ConsensusCore:
    """One validator's consensus state.  Owns its state; the adapter owns the I/O."""

    def __init__(
        self,
        *,
        chain_id: str,
        key: KeyPair,
        validators: tuple[bytes, ...],
        app: ConsensusApp,
        timeouts: Timeouts,
        height: int,
        last_signed: SignedState | None = None,
    ) -> None:
        members = tuple(sorted(set(validators)))
        if len(members) != len(validators) or not members:
            raise ValueError("validators must be distinct and not empty")
        if len(members) > MAX_CERTIFICATE_SIGNATURES:
            raise ValueError(f"at most {MAX_CERTIFICATE_SIGNATURES} validators")
        if any(len(member) != PUBLIC_KEY_LEN for member in members):
            raise ValueError("a validator is a 32-byte public key")
        if height < 1:
            raise ValueError("heights start at 1")
        self.chain_id = chain_id
        self.key = key
        self.me = key.public
        self.validators = members  # sorted: every node computes the same proposers
        self._members = frozenset(members)
        self._is_validator = self.me in self._members  # an observer never signs
        self.n = len(members)
        self.f = (self.n - 1) // 3
        self.quorum = 2 * self.n // 3 + 1
        self.app = app
        self.timeouts = timeouts
        self.height = height
        self._last_signed = last_signed
        self._future = FutureBuffer(MAX_FUTURE_MESSAGES, max(1, MAX_FUTURE_MESSAGES // self.n))
        self._next_start_ms: int | None = None
        self._reset_height()

    def _reset_height(self) -> None:
        """Lines 52-53: forget everything of the previous height."""
        self.round = 0
        self.step = Step.NEW_HEIGHT
        self._started = False
        self.locked_round, self.locked_hash = 0, NIL
        self.locked_block: Block | None = None
        self.valid_round = 0
        self.valid_block: Block | None = None
        self.valid_polka: tuple[Prevote, ...] = ()
        self._log = HeightLog(ROUND_WINDOW, self.quorum, self.f)
        last = self._last_signed
        if last is not None and last.height == self.height:
            # A restart within this height: carry on with the lock and valid value we
            # had (the paper's lockedValue, lockedRound, validValue, validRound), and
            # hold the valid value's polka again, so that gossip relays it.
            self.locked_round, self.locked_hash = last.locked_round, last.locked_hash
            self.locked_block = last.locked_block
            self.valid_round, self.valid_block = last.valid_round, last.valid_block
            self.valid_polka = last.polka
            for vote in last.polka:
                self._log.add(vote, vote.round)
        self._validity: dict[bytes, list[tuple[Block, bool]]] = {}  # hash -> app.is_valid
        self._timeouts: list[tuple[int, int, Step, int, int]] = []  # (due, seq, kind, h, r)
        self._seq = 0
        self._propose_open = False  # round 1 waits for work before this is set
        self._proposed_round = 0  # the round in which we last made our proposal
        self._prevote_timeout_round = 0  # "for the first time" of lines 34, 36, 47
        self._polka_round = 0
        self._precommit_timeout_round = 0

    def proposer(self, height: int, round: int) -> bytes:
        return self.validators[(height + round) % self.n]

    # ---- events -------------------------------------------------------------------

    def start(self, now_ms: int) -> list[Output]:
        """Begin the height given at construction (line 10)."""
        out: list[Output] = []
        if not self._started:
            self._start_height(now_ms, out)
        return out

    def on_message(self, message: ConsensusMessage, now_ms: int) -> list[Output]:
        out: list[Output] = []
        self._receive(message, out)
        if (
            self._started
            and self.step == Step.PROPOSE
            and not self._propose_open
            and isinstance(message, Prevote | Precommit)
            and message.height == self.height
            and message.signer != self.me
            and self.knows(message)
        ):
            self._open_propose(now_ms, out)  # another validator has work (module docstring)
        self._progress(now_ms, out)
        return out

    def on_tick(self, now_ms: int) -> list[Output]:
        out: list[Output] = []
        if not self._started:
            if self._next_start_ms is None or now_ms < self._next_start_ms:
                return out
            self._start_height(now_ms, out)
        self._fire_timeouts(now_ms, out)
        if self._started and self.step == Step.PROPOSE:
            if not self._propose_open:
                if self.app.has_work():
                    self._open_propose(now_ms, out)
            else:
                self._try_propose(now_ms, out)  # the app had no block last time
        self._progress(now_ms, out)
        return out

    def on_certified_block(self, block: Block, now_ms: int) -> list[Output]:
        """Catch up: adopt a block of the current height that > 2/3 of the validators
        precommitted in one round (COMMIT signatures over that round and the block hash:
        no two blocks of one height can both gather them), as decided in that round."""
        out: list[Output] = []
        header = block.header
        # [REJECT] The block is for this chain and the height we are deciding.
        if header.chain_id != self.chain_id:
            out.append(Rejected("wrong_chain", None))
            return out
        if header.height != self.height:
            out.append(Rejected("wrong_height", None))
            return out
        check = check_certificate(block, self.validators)
        # [REJECT] More than 2/3 of the validators signed it in the round the certificate
        # names (invalid ones, including signatures of other rounds, do not count).
        if not check.ok:
            out.append(Rejected("short_certificate", None))
            return out
        # [REJECT] It is valid: a certificate never makes us accept a bad block.
        if not self._is_valid(block):
            out.append(Rejected("invalid_block", None))
            return out
        # Decided in the certificate's round, the certificate normalised: valid
        # signatures only, one per validator, sorted by signer (as our own are).
        certified = dataclasses.replace(block, certificate=check.valid)
        self._decide(certified, block.commit_round, now_ms, out)
        return out

    def prevote_value(self, proposal: Proposal, valid_proposal: bool) -> bytes:
        """Lines 23 and 29, the lock test: what to prevote for ``proposal`` (its block
        hash, or NIL).  Every lock decision for a prevote is made here and only here, so
        that a test can override it to show that skipping the lock breaks agreement.

        Fresh proposal (pol_round 0): only if we are not locked, or locked on it.
        Re-proposal with a polka at vr: also if our lock is no newer than vr, because
        that polka shows that no block other than this one can have been decided in a
        round since our lock."""
        block_hash = proposal.block.hash
        if not valid_proposal:
            return NIL
        if self.locked_round == 0 or self.locked_hash == block_hash:
            return block_hash
        if proposal.pol_round > 0 and self.locked_round <= proposal.pol_round:
            return block_hash
        return NIL

    def gossip_messages(self) -> list[ConsensusMessage]:
        """Every validly signed message this core keeps: those of the current height
        (all rounds, ours included) and the buffered ones of the next.

        For an adapter that relays.  Tendermint's liveness needs every message one
        honest node received to reach all honest nodes after GST; re-sending only our
        own latest votes is not enough: a proposal may cite a polka whose prevotes only
        some nodes hold, and a validator that crashed no longer holds its own old
        votes.  Receivers drop identical copies before any signature check."""
        return self._log.messages() + self._future.messages()

    def knows(self, message: ConsensusMessage) -> bool:
        """Whether an identical copy of this message was already checked and kept.

        Lets an adapter skip the signature check of re-broadcasts and relayed copies,
        which outnumber new messages n to 1 once nodes relay."""
        if message.height == self.height:
            return self._log.has_identical(message)
        return message.height == self.height + 1 and message in self._future

    # ---- incoming messages ----------------------------------------------------------

    def _receive(self, message: ConsensusMessage, out: list[Output]) -> None:
        signer = message.signer
        # [REJECT] The message is for this chain.
        if message.chain_id != self.chain_id:
            out.append(Rejected("wrong_chain", signer))
            return
        # [IGNORE] A past height (we decided it) or beyond the next one (unbounded).
        if not self.height <= message.height <= self.height + 1:
            return
        # [IGNORE] An identical copy of a message already kept: re-broadcasts are normal.
        if self.knows(message):
            return
        reason = self._check(message)
        if reason is not None:
            out.append(Rejected(reason, signer))
            return
        if message.height > self.height:
            self._future.add(message)  # [IGNORE] when the sender's share is full
            return
        self._store(message, out)

    def _check(self, message: ConsensusMessage) -> str | None:
        """Why a message must be dropped (None: it is good), for its own height."""
        signer = message.signer
        # [REJECT] The signer is one of the validators of genesis.
        if signer not in self._members:
            return "unknown_validator"
        if isinstance(message, Proposal):
            header = message.block.header
            # [REJECT] A proposal comes from the round's proposer (lines 22, 28, 36, 49).
            if signer != self.proposer(message.height, message.round):
                return "wrong_proposer"
            # [REJECT] It cites a polka of an earlier round, if any (the dataclass also
            # enforces this; restated because line 28 relies on it).
            if message.pol_round >= message.round:
                return "bad_pol_round"
            # [REJECT] The block is for this chain and this height.
            if header.chain_id != self.chain_id:
                return "wrong_block_chain"
            if header.height != message.height:
                return "wrong_block_height"
            # [REJECT] A fresh block is the proposer's own; a re-proposed one (pol_round
            # > 0) keeps the header of whichever validator first proposed it.
            if header.proposer not in self._members or (
                message.pol_round == 0 and header.proposer != signer
            ):
                return "wrong_block_proposer"
        # [REJECT] The signer signed it.
        if not is_signature_valid(message):
            return "bad_signature"
        # [REJECT] A non-nil precommit carries a valid COMMIT signature over its round
        # and block hash: the certificate of that round is built from these.
        if (
            isinstance(message, Precommit)
            and message.block_hash != NIL
            and not is_commit_signature_valid(
                signer, self.chain_id, message.round, message.block_hash, message.commit_signature
            )
        ):
            return "bad_commit_signature"
        return None

    def _store(self, message: ConsensusMessage, out: list[Output]) -> None:
        """Count a checked message of the current height (ours included)."""
        conflicts_with = self._log.add(message, self.round).conflicts_with
        if conflicts_with is not None:
            out.append(Evidence(conflicts_with, message))

    # ---- the upon-rules ---------------------------------------------------------------

    def _progress(self, now_ms: int, out: list[Output]) -> None:
        """Apply the upon-rules until none fires.  Each firing changes the step, the
        round, the height or a "first time" flag, so this terminates."""
        while self._started:
            if self._rule_decide(now_ms, out):
                continue
            if self._rule_skip_round(now_ms, out):
                continue
            if self._rule_prevote_on_proposal(now_ms, out):
                continue
            self._rule_prevote_timeout(now_ms)
            if self._rule_polka(out):
                continue
            if self._rule_nil_polka(out):
                continue
            self._rule_precommit_timeout(now_ms)
            return

    def _rule_decide(self, now_ms: int, out: list[Output]) -> bool:
        """Lines 49-54: in any round, the proposal plus 2f+1 precommits for its block.
        The certificate is those precommits' COMMIT signatures, all of that round."""
        for round, block_hash in self._log.commit_quorums():
            log = self._log.rounds[round]
            proposal = self._valid_proposal_for(log, block_hash, out)
            if proposal is None:
                continue
            voters = log.precommits.for_value(block_hash)
            certificate = tuple(
                CommitSignature(voter, voters[voter].commit_signature) for voter in sorted(voters)
            )
            block = dataclasses.replace(proposal.block, commit_round=round, certificate=certificate)
            self._decide(block, round, now_ms, out)
            return True
        return False

    def _rule_skip_round(self, now_ms: int, out: list[Output]) -> bool:
        """Lines 55-56: f+1 validators are in a higher round, so an honest one is."""
        target = self._log.skip_target(self.f)
        if target <= self.round:
            return False
        self._start_round(target, now_ms, out)
        return True

    def _rule_prevote_on_proposal(self, now_ms: int, out: list[Output]) -> bool:
        """Lines 22-27 (pol_round none) and 28-33 (pol_round vr with a polka at vr).

        A fresh proposal must also be *timely* (``app.is_timely``), as in CometBFT's
        proposer-based timestamps: its block dated neither beyond our clock nor longer
        before it than the round's message delay allows (``Timeouts.message_delay``).
        Not part of validity (which is deterministic, and which certified blocks and
        decisions rely on): a local vote rule, so a faulty proposer cannot date a block
        so far ahead that no honest block can follow it or every transaction expires,
        nor just after its parent, long ago, to slip in transactions that expired
        since.  Judged once, here, in the proposal's own round; a re-proposal (pol_round
        > 0) is not: its polka vouches for it, however old it is."""
        if self.step != Step.PROPOSE:
            return False
        log = self._log.get(self.round)
        proposal = log.proposal if log is not None else None
        if proposal is None:
            return False
        if proposal.pol_round > 0:
            pol_log = self._log.get(proposal.pol_round)
            if pol_log is None or pol_log.prevotes.count(proposal.block.hash) < self.quorum:
                return False  # wait for the polka it cites, or for timeoutPropose
        valid = self._proposal_valid(proposal, out)
        if (
            valid
            and proposal.pol_round == 0
            and not self.app.is_timely(
                proposal.block, now_ms, self.timeouts.message_delay(proposal.round)
            )
        ):
            out.append(Rejected("untimely_block", proposal.signer))
            valid = False
        self._prevote(self.prevote_value(proposal, valid), out)
        return True

    def _rule_prevote_timeout(self, now_ms: int) -> None:
        """Lines 34-35."""
        log = self._log.get(self.round)
        if self.step != Step.PREVOTE or self._prevote_timeout_round == self.round:
            return
        if log is not None and log.prevotes.voters() >= self.quorum:
            self._prevote_timeout_round = self.round
            self._schedule(Step.PREVOTE, now_ms + self.timeouts.prevote(self.round))

    def _rule_polka(self, out: list[Output]) -> bool:
        """Lines 36-43: 2f+1 prevotes for a valid proposal of this round.  In the prevote
        step: lock on it and precommit it.  In any later step: remember it as the valid
        value, which our next proposals re-propose."""
        if self.step < Step.PREVOTE or self._polka_round == self.round:
            return False
        log = self._log.get(self.round)
        if log is None:
            return False
        proposal = None
        for block_hash in log.prevotes.quorum_values(self.quorum):
            proposal = self._valid_proposal_for(log, block_hash, out)
            if proposal is not None:
                break
        if proposal is None:
            return False
        block_hash = proposal.block.hash
        self._polka_round = self.round
        # Lines 42-43 before 38-41: one atomic rule, and this way the precommit's
        # persisted state carries the new valid value along with the lock.
        self.valid_round, self.valid_block = self.round, proposal.block
        voters = log.prevotes.for_value(block_hash)
        self.valid_polka = tuple(voters[voter] for voter in sorted(voters))
        if self.step == Step.PREVOTE:
            self.locked_round, self.locked_hash = self.round, block_hash
            self.locked_block = proposal.block
            self._precommit(block_hash, out)
        self._persist_unsigned_progress(out)
        return True

    def _rule_nil_polka(self, out: list[Output]) -> bool:
        """Lines 44-46."""
        log = self._log.get(self.round)
        if self.step != Step.PREVOTE or log is None or log.prevotes.count(NIL) < self.quorum:
            return False
        self._precommit(NIL, out)
        return True

    def _rule_precommit_timeout(self, now_ms: int) -> None:
        """Lines 47-48 (in any step)."""
        log = self._log.get(self.round)
        if self._precommit_timeout_round == self.round or log is None:
            return
        if log.precommits.voters() >= self.quorum:
            self._precommit_timeout_round = self.round
            self._schedule(Step.PRECOMMIT, now_ms + self.timeouts.precommit(self.round))

    # ---- rounds, heights, timeouts --------------------------------------------------

    def _start_height(self, now_ms: int, out: list[Output]) -> None:
        """Round 1, or after a restart in this height the round we last signed in (we
        may not sign anything earlier)."""
        self._started, self._next_start_ms = True, None
        last = self._last_signed
        first_round = last.round if last is not None and last.height == self.height else 1
        self._start_round(max(1, first_round), now_ms, out)
        self._progress(now_ms, out)

    def _start_round(self, round: int, now_ms: int, out: list[Output]) -> None:
        """Lines 11-21.  Round 1 proposes only once the app has work."""
        self.round, self.step = round, Step.PROPOSE
        self._timeouts.clear()  # every pending timeout was for an older round: no-ops
        self._propose_open = False
        for message in self._log.unpark(round):
            self._store(message, out)
        if round > 1 or self.app.has_work():
            self._open_propose(now_ms, out)

    def _open_propose(self, now_ms: int, out: list[Output]) -> None:
        self._propose_open = True
        self._schedule(Step.PROPOSE, now_ms + self.timeouts.propose(self.round))
        self._try_propose(now_ms, out)

    def _try_propose(self, now_ms: int, out: list[Output]) -> None:
        """Lines 14-19: re-propose validValue with its round, or ask the app."""
        if (
            self.step != Step.PROPOSE
            or not self._propose_open
            or self._proposed_round == self.round
            or self.proposer(self.height, self.round) != self.me
            or not self._may_sign(Step.PROPOSE, NIL)  # restarted in a round we proposed in
        ):
            return
        if self.valid_block is not None:
            block, pol_round = self.valid_block, self.valid_round
        else:
            made = self.app.propose(self.height, self.round, now_ms)
            if made is None:
                return  # retried on the next tick
            header = made.header
            if header.height != self.height or header.proposer != self.me or made.certificate:
                raise ValueError("app.propose must return our own uncertified block")
            block, pol_round = made, 0
        self._proposed_round = self.round
        proposal = Proposal(self.chain_id, self.height, self.round, pol_round, block, self.me)
        self._send(proposal, Step.PROPOSE, block.hash, out)

    def _prevote(self, block_hash: bytes, out: list[Output]) -> None:
        vote = Prevote(self.chain_id, self.height, self.round, block_hash, self.me)
        self._send(vote, Step.PREVOTE, block_hash, out)
        self.step = Step.PREVOTE

    def _precommit(self, block_hash: bytes, out: list[Output]) -> None:
        commit = NO_SIGNATURE
        if block_hash != NIL and self._is_validator:
            commit = sign_commit(self.round, block_hash, self.chain_id, self.key)
        vote = Precommit(self.chain_id, self.height, self.round, block_hash, self.me, commit)
        self._send(vote, Step.PRECOMMIT, block_hash, out)
        self.step = Step.PRECOMMIT

    def _send(
        self, message: ConsensusMessage, step: Step, block_hash: bytes, out: list[Output]
    ) -> None:
        """Sign, persist, broadcast and count our own message -- unless that could sign
        two different things in one slot (a restart may have lost what we signed)."""
        if not self._is_validator or not self._may_sign(step, block_hash):
            return
        signed = sign(message, self.key)
        state = SignedState(
            self.height,
            self.round,
            int(step),
            block_hash,
            self.locked_round,
            self.locked_hash,
            self.valid_round,
            self.valid_block,
            self.locked_block,
            self.valid_polka,
        )
        self._last_signed = state
        out.append(PersistSigned(state))
        out.append(Broadcast(signed))
        self._store(signed, out)

    def _persist_unsigned_progress(self, out: list[Output]) -> None:
        """Persist a lock or valid value that no signed message carried: a polka seen
        after our precommit (line 42 in the precommit step), or a precommit we could not
        sign.  The slot stays the last one signed.  Without this a crash would forget a
        valid value that no other node may hold, as if that polka had never formed."""
        last = self._last_signed
        if not self._is_validator or last is None or last.height != self.height:
            return
        if (
            last.valid_round == self.valid_round
            and last.valid_block is self.valid_block
            and last.locked_round == self.locked_round
            and last.locked_block is self.locked_block
        ):
            return  # the signed message just sent carried them
        self._last_signed = dataclasses.replace(
            last,
            locked_round=self.locked_round,
            locked_hash=self.locked_hash,
            valid_round=self.valid_round,
            valid_block=self.valid_block,
            locked_block=self.locked_block,
            polka=self.valid_polka,
        )
        out.append(PersistSigned(self._last_signed))

    def _may_sign(self, step: Step, block_hash: bytes) -> bool:
        """Only slots after the last signed one, or the same vote again (identical bytes:
        Ed25519 is deterministic).  Never the same proposal slot again: its pol_round
        may have been different.  And never against a message of ours already counted
        in the slot: one signed before a restart and relayed back, should the persisted
        state be older than it (a disk restored from a backup)."""
        if not self._agrees_with_own_message(step, block_hash):
            return False
        last = self._last_signed
        if last is None:
            return True
        slot, last_slot = (self.height, self.round, int(step)), (last.height, last.round, last.step)
        if slot > last_slot:
            return True
        return slot == last_slot and step != Step.PROPOSE and block_hash == last.block_hash

    def _agrees_with_own_message(self, step: Step, block_hash: bytes) -> bool:
        log = self._log.get(self.round)
        if log is None:
            return True
        if step == Step.PROPOSE:
            return all(proposal.signer != self.me for proposal in log.proposals)
        votes = log.prevotes if step == Step.PREVOTE else log.precommits
        ours = votes.first.get(self.me)
        return ours is None or ours.block_hash == block_hash

    def _decide(self, block: Block, round: int, now_ms: int, out: list[Output]) -> None:
        """Lines 51-54: decide, then the next height starts ``commit_ms`` later."""
        out.append(Decide(block, round))
        self.height += 1
        self._reset_height()
        self._next_start_ms = now_ms + self.timeouts.commit_ms
        for message in self._future.take(self.height):
            self._store(message, out)

    def _schedule(self, kind: Step, due_ms: int) -> None:
        self._seq += 1
        heapq.heappush(self._timeouts, (due_ms, self._seq, kind, self.height, self.round))

    def _fire_timeouts(self, now_ms: int, out: list[Output]) -> None:
        """Lines 57-67, in due order; each applies only to its own height and round."""
        while self._started and self._timeouts and self._timeouts[0][0] <= now_ms:
            _due, _seq, kind, height, round = heapq.heappop(self._timeouts)
            if height != self.height or round != self.round:
                continue
            if kind == Step.PROPOSE and self.step == Step.PROPOSE:
                self._prevote(NIL, out)
            elif kind == Step.PREVOTE and self.step == Step.PREVOTE:
                self._precommit(NIL, out)
            elif kind == Step.PRECOMMIT:
                self._start_round(round + 1, now_ms, out)
            self._progress(now_ms, out)

    # ---- validity ---------------------------------------------------------------------

    def _is_valid(self, block: Block) -> bool:
        """``app.is_valid``, asked once per block per height (it may be costly), after
        the previous Decide was carried out.  Cached by hash *and* block: the hash covers
        the header only, and a faulty proposer may send one header with two bodies."""
        return self._validity_of(block)[0]

    def _validity_of(self, block: Block) -> tuple[bool, bool]:
        """(valid, asked the app just now)."""
        known = self._validity.setdefault(block.hash, [])
        for seen, valid in known:
            if seen is block or seen == block:
                return valid, False
        valid = self.app.is_valid(block)
        known.append((block, valid))
        return valid, True

    def _proposal_valid(self, proposal: Proposal, out: list[Output]) -> bool:
        valid, fresh = self._validity_of(proposal.block)
        if not valid and fresh:
            out.append(Rejected("invalid_block", proposal.proposer))
        return valid

    def _valid_proposal_for(
        self, log: RoundLog, block_hash: bytes, out: list[Output]
    ) -> Proposal | None:
        """The first valid proposal of ``block_hash`` in the round of ``log``.

        An invalid one kept beyond the round's cap (for its backed hash) is forgotten,
        with its cached validity: it made room for the valid body the honest voters
        hold, which gossip brings.  So a proposer sending many bad bodies for the voted
        header costs us a validity check each, never memory."""
        for proposal in log.proposals_for(block_hash):
            if self._proposal_valid(proposal, out):
                return proposal
            if log.is_extra(proposal):
                log.forget(proposal)
                cached = self._validity.pop(block_hash, [])
                if kept := [entry for entry in cached if entry[0] is not proposal.block]:
                    self._validity[block_hash] = kept
        return None
