"""The consensus message log of one height: who said what, and how it counts.

Split from ``consensus.py`` so that the state machine there reads as the paper's rules
while this module owns the bookkeeping they rely on:

* ``RoundLog``: one round's proposals, prevotes and precommits.  Counting follows the
  paper: "2f+1 PREVOTE messages for id(v)" means 2f+1 *distinct validators* that signed
  a prevote for v, and "2f+1 PREVOTE messages" (any value) means 2f+1 distinct
  validators.  So a validator's first vote in a slot (round, step) counts for the "any"
  rules and for its value; an identical copy is ignored; a different, validly signed
  one is equivocation: Evidence is reported once, and the vote also counts *for its own
  value* (never twice for one value, never twice in an "any" count).  This is safe: two
  different values cannot both gather 2f+1 distinct signers unless f+1 validators
  equivocate.  It is needed for liveness: otherwise an equivocator can show a polka to
  some honest nodes and hide it from the others for ever (a lock nobody else can
  follow).
* What a faulty validator can make us keep is bounded, O(n) per round, by one notion:
  a value is *backed* in a round once f+1 distinct validators prevoted it, or f+1
  precommitted it -- so at least one honest validator did, which it does only for a
  block it received and found valid (or nil).  A conflicting vote counts only for NIL
  or for a value already backed in its step; since a value then becomes backed only
  through first votes, at most n / (f+1) <= 3 values per step ever are, and a validator
  keeps at most 5 votes per step.  Proposals: the first ``MAX_PROPOSALS_PER_ROUND`` to
  arrive, then one more per backed block hash (so at most 4 + 6).  No rule needs
  anything else: rules 22 and 28 act on the round's first proposal, always kept, and
  rules 28, 36, 44 and 49 need 2f+1 >= f+1 votes for one value, so a backed one, and
  (36, 49) its proposal.  A message dropped by these bounds is ignored, not rejected,
  and comes back by gossip once it matters: the honest nodes that voted for a block
  hold its proposal and the votes they counted, and relay them.  Without the bounds,
  a proposer signing 300 blocks for one round made us keep (and relay) its 300 votes
  for them, and 4 decoys sent first hid the block everybody else was deciding.
* ``HeightLog``: the rounds of the current height, the highest round each validator has
  been seen in (rule 55, round skipping), and, for rounds too far ahead to store, only
  each validator's latest messages.
* ``FutureBuffer``: validly signed messages of the next height, kept (bounded, per
  sender) until we get there, so a node that decides a little late loses nothing.

Everything here is deterministic: dicts are read in insertion order or sorted.
Messages reach this module only after their signatures were checked.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal

ConsensusMessage = Proposal | Prevote | Precommit
V = TypeVar("V", Prevote, Precommit)

PROPOSAL_STEP, PREVOTE_STEP, PRECOMMIT_STEP = 1, 2, 3
# Proposals of a round kept in arrival order (the first is prevoted on); beyond them,
# one per backed block hash (see the module docstring).
MAX_PROPOSALS_PER_ROUND = 4


def step_of(message: ConsensusMessage) -> int:
    """The (height, round, step) slot a message occupies; at most one per signer."""
    if isinstance(message, Proposal):
        return PROPOSAL_STEP
    return PREVOTE_STEP if isinstance(message, Prevote) else PRECOMMIT_STEP


class Recorded(NamedTuple):
    counted: bool  # the message now counts somewhere
    conflicts_with: ConsensusMessage | None  # set once per slot: the Evidence pair


SAME = Recorded(False, None)


@dataclass(slots=True)
class VoteSet(Generic[V]):
    """The prevotes (or precommits) of one round."""

    first: dict[bytes, V] = field(default_factory=dict)  # voter -> its first vote
    by_value: dict[bytes, dict[bytes, V]] = field(default_factory=dict)  # hash -> voter -> vote

    def voters(self) -> int:
        """Distinct validators with a vote of any value (rules 34, 47)."""
        return len(self.first)

    def count(self, block_hash: bytes) -> int:
        """Distinct validators with a vote for ``block_hash`` (rules 28, 36, 44, 49)."""
        return len(self.by_value.get(block_hash, ()))

    def for_value(self, block_hash: bytes) -> dict[bytes, V]:
        return self.by_value.get(block_hash, {})

    def quorum_values(self, quorum: int) -> list[bytes]:
        return [value for value, voters in self.by_value.items() if len(voters) >= quorum]

    def is_backed(self, block_hash: bytes, f: int) -> bool:
        """At least f + 1 distinct validators voted for it: one of them is honest."""
        return self.count(block_hash) > f

    def has_identical(self, vote: V) -> bool:
        return self.for_value(vote.block_hash).get(vote.voter) == vote

    def messages(self) -> list[V]:
        return [vote for voters in self.by_value.values() for vote in voters.values()]

    def add(self, vote: V, f: int) -> Recorded:
        voter, value = vote.voter, vote.block_hash
        first = self.first.get(voter)
        if first is None:
            self.first[voter] = vote
            self.by_value.setdefault(value, {})[voter] = vote
            return Recorded(True, None)
        if first.id == vote.id:
            return SAME  # a copy
        # Equivocation (even for the same value: a second, different signed message).
        # [IGNORE] unless for nil or a backed value: no other value can reach 2f+1.
        counted = voter not in self.for_value(value) and (value == NIL or self.is_backed(value, f))
        if counted:
            self.by_value.setdefault(value, {})[voter] = vote
        return Recorded(counted, first)


@dataclass(slots=True)
class RoundLog:
    """One round of one height."""

    # The first MAX_PROPOSALS_PER_ROUND to arrive (the first one is prevoted on), then at
    # most one per backed block hash ("extras", which the core may forget if invalid).
    proposals: list[Proposal] = field(default_factory=list)
    prevotes: VoteSet[Prevote] = field(default_factory=VoteSet)
    precommits: VoteSet[Precommit] = field(default_factory=VoteSet)
    reported: set[tuple[bytes, int]] = field(default_factory=set)  # (signer, step)

    @property
    def proposal(self) -> Proposal | None:
        """The round's proposal: the first one the proposer signed that reached us."""
        return self.proposals[0] if self.proposals else None

    def proposals_for(self, block_hash: bytes) -> list[Proposal]:
        """This round's proposals of a block with ``block_hash``, the first or
        equivocating ones: rules 36 and 49 hold for any block the proposer signed (safety
        comes from the votes), and keeping the others lets us decide what the others
        decided.  Several may share a hash with different bodies (the hash covers the
        header only): the caller takes the first valid one."""
        return [p for p in self.proposals if p.block.hash == block_hash]

    def is_backed(self, block_hash: bytes, f: int) -> bool:
        """f + 1 validators prevoted or precommitted it in this round: an honest one
        did, so the honest nodes may be about to lock on it or decide it."""
        return self.prevotes.is_backed(block_hash, f) or self.precommits.is_backed(block_hash, f)

    def is_extra(self, proposal: Proposal) -> bool:
        """Kept beyond the first MAX_PROPOSALS_PER_ROUND, for its backed hash."""
        return any(p is proposal for p in self.proposals[MAX_PROPOSALS_PER_ROUND:])

    def forget(self, proposal: Proposal) -> None:
        """Drop an extra proposal the core found invalid: it can never be prevoted,
        locked on or decided, and it holds the place of its hash's valid body."""
        if not self.is_extra(proposal):
            raise ValueError("only proposals kept beyond the cap are forgotten")
        self.proposals = [p for p in self.proposals if p is not proposal]

    def has_identical(self, message: ConsensusMessage) -> bool:
        if isinstance(message, Proposal):
            return message in self.proposals
        if isinstance(message, Prevote):
            return self.prevotes.has_identical(message)
        return self.precommits.has_identical(message)

    def messages(self) -> list[ConsensusMessage]:
        return [*self.proposals, *self.prevotes.messages(), *self.precommits.messages()]

    def add(self, message: ConsensusMessage, f: int) -> Recorded:
        """Record a checked message (see the module docstring for what is kept)."""
        if isinstance(message, Proposal):
            if any(p.id == message.id for p in self.proposals):
                return SAME
            recorded = Recorded(self._admits(message, f), self.proposal)
            if recorded.counted:
                self.proposals.append(message)
        elif isinstance(message, Prevote):
            recorded = self.prevotes.add(message, f)
        else:
            recorded = self.precommits.add(message, f)
        if recorded.conflicts_with is not None:
            slot = (message.signer, step_of(message))
            if slot in self.reported:
                return Recorded(recorded.counted, None)
            self.reported.add(slot)
        return recorded

    def _admits(self, proposal: Proposal, f: int) -> bool:
        """The first MAX_PROPOSALS_PER_ROUND, whatever they are: the proposer's first is
        the one we prevote on.  Beyond them -- an equivocating proposer -- only a block
        that f + 1 validators voted for, one body per hash: so decoys sent first cannot
        hide the block honest nodes vote for (we would never lock on it or decide it),
        and decoys sent later cost us nothing.  A proposal refused while its votes were
        still on the way comes back by gossip from the honest nodes that hold it."""
        if len(self.proposals) < MAX_PROPOSALS_PER_ROUND:
            return True
        block_hash = proposal.block.hash
        # [IGNORE] Beyond the cap, a block nobody honest voted for (yet).
        if not self.is_backed(block_hash, f):
            return False
        # [IGNORE] A second body for a backed hash while the first one is kept.
        extras = self.proposals[MAX_PROPOSALS_PER_ROUND:]
        return all(p.block.hash != block_hash for p in extras)


class HeightLog:
    """All we keep of the current height.

    Rounds up to ``current round + window`` are stored whole: rules 28 and 49 may need a
    polka or a commit of *any* earlier round, and dropping one could stall a re-proposal
    for ever.  The number of rounds stored
    grows only as rounds are really reached (by timeouts, which grow, or with f + 1
    validators ahead), so a faulty minority cannot inflate it.  Beyond the window, only
    each validator's highest round and its messages of that round are kept.
    """

    def __init__(self, window: int, quorum: int, f: int) -> None:
        self.window = window
        self.quorum = quorum
        self.f = f
        self.rounds: dict[int, RoundLog] = {}
        self.commits: dict[tuple[int, bytes], None] = {}  # (round, hash) with a quorum
        self.highest_round: dict[bytes, int] = {}  # validator -> highest round seen
        self._far: dict[bytes, tuple[int, dict[int, ConsensusMessage]]] = {}

    def get(self, round: int) -> RoundLog | None:
        return self.rounds.get(round)

    def at(self, round: int) -> RoundLog:
        log = self.rounds.get(round)
        if log is None:
            log = self.rounds[round] = RoundLog()
        return log

    def has_identical(self, message: ConsensusMessage) -> bool:
        """A cheap pre-check that lets re-broadcasts skip signature verification."""
        log = self.rounds.get(message.round)
        return log is not None and log.has_identical(message)

    def add(self, message: ConsensusMessage, current_round: int) -> Recorded:
        """Store a checked message of this height (or park it if too far ahead)."""
        signer = message.signer
        if message.round > self.highest_round.get(signer, 0):
            self.highest_round[signer] = message.round
        if message.round > current_round + self.window:
            self._park(message)
            return SAME
        log = self.at(message.round)
        recorded = log.add(message, self.f)
        if not recorded.counted:
            return recorded
        if (
            isinstance(message, Precommit)
            and message.block_hash != NIL
            and log.precommits.count(message.block_hash) >= self.quorum
        ):
            self.commits[(message.round, message.block_hash)] = None
        return recorded

    def _park(self, message: ConsensusMessage) -> None:
        signer, step = message.signer, step_of(message)
        parked = self._far.get(signer)
        if parked is None or message.round > parked[0]:
            self._far[signer] = (message.round, {step: message})
        elif message.round == parked[0]:
            parked[1].setdefault(step, message)  # first per slot, as in RoundLog

    def unpark(self, current_round: int) -> list[ConsensusMessage]:
        """The parked messages that now fall inside the window, oldest signer first."""
        due: list[ConsensusMessage] = []
        for signer, (round, messages) in list(self._far.items()):
            if round <= current_round + self.window:
                due.extend(messages[step] for step in sorted(messages))
                del self._far[signer]
        return due

    def messages(self) -> list[ConsensusMessage]:
        """Every message kept, by round then step (parked ones last)."""
        found: list[ConsensusMessage] = []
        for round in sorted(self.rounds):
            found.extend(self.rounds[round].messages())
        for _round, parked in self._far.values():
            found.extend(parked[step] for step in sorted(parked))
        return found

    def skip_target(self, f: int) -> int:
        """The highest round that at least f + 1 validators have reached (0 if none):
        at least one of them is honest, so some honest node really is there (rule 55)."""
        rounds = sorted(self.highest_round.values(), reverse=True)
        return rounds[f] if len(rounds) > f else 0

    def commit_quorums(self) -> list[tuple[int, bytes]]:
        """(round, block hash) pairs with a quorum of precommits, lowest round first.
        With at most f faulty validators there is at most one per round."""
        return sorted(self.commits)


class FutureBuffer:
    """Checked messages for the next height, replayed when we reach it.

    Bounded in total and per sender, so a faulty validator can fill only its share.
    """

    def __init__(self, max_total: int, max_per_sender: int) -> None:
        self.max_total = max_total
        self.max_per_sender = max_per_sender
        self._messages: list[ConsensusMessage] = []
        self._per_sender: Counter[bytes] = Counter()

    def __len__(self) -> int:
        return len(self._messages)

    def __contains__(self, message: ConsensusMessage) -> bool:
        return message in self._messages

    def add(self, message: ConsensusMessage) -> bool:
        if len(self._messages) >= self.max_total:
            return False
        if self._per_sender[message.signer] >= self.max_per_sender:
            return False
        self._messages.append(message)
        self._per_sender[message.signer] += 1
        return True

    def messages(self) -> list[ConsensusMessage]:
        return list(self._messages)

    def take(self, height: int) -> list[ConsensusMessage]:
        """Remove and return the messages of ``height`` in arrival order; drop those of
        lower heights, keep higher ones."""
        due = [m for m in self._messages if m.height == height]
        self._messages = [m for m in self._messages if m.height > height]
        self._per_sender = Counter(m.signer for m in self._messages)
        return due
