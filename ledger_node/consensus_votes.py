"""The consensus message log of one height: what each validator said, counted once.

Split from ``consensus.py`` so that the state machine there reads as the paper's rules
while this module owns the bookkeeping they rely on:

* ``RoundLog``: one round's proposal, prevotes and precommits.  A validator's *first*
  message per (round, step) is the one that counts; an identical copy is ignored; a
  different, validly signed one is equivocation, reported once and never counted
  (counting both would let one faulty validator weigh twice in a quorum).
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
from enum import Enum

from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal

ConsensusMessage = Proposal | Prevote | Precommit

PROPOSAL_STEP, PREVOTE_STEP, PRECOMMIT_STEP = 1, 2, 3
MAX_PROPOSALS_PER_ROUND = 4  # the counted one and, from an equivocating proposer, 3 more


def step_of(message: ConsensusMessage) -> int:
    """The (height, round, step) slot a message occupies; at most one per signer."""
    if isinstance(message, Proposal):
        return PROPOSAL_STEP
    return PREVOTE_STEP if isinstance(message, Prevote) else PRECOMMIT_STEP


class Added(Enum):
    NEW = "new"  # first message of its signer in its slot: counted
    SAME = "same"  # identical to the counted one, or a conflict already reported: ignored
    CONFLICT = "conflict"  # first different message in an occupied slot: evidence


@dataclass(slots=True)
class RoundLog:
    """One round of one height."""

    proposals: list[Proposal] = field(default_factory=list)  # the first one counts
    prevotes: dict[bytes, Prevote] = field(default_factory=dict)  # voter -> first prevote
    precommits: dict[bytes, Precommit] = field(default_factory=dict)
    prevote_tally: Counter[bytes] = field(default_factory=Counter)  # block hash -> voters
    precommit_tally: Counter[bytes] = field(default_factory=Counter)
    reported: set[tuple[bytes, int]] = field(default_factory=set)  # (signer, step)

    @property
    def proposal(self) -> Proposal | None:
        """The round's proposal: the first one the proposer signed that reached us."""
        return self.proposals[0] if self.proposals else None

    def proposal_for(self, block_hash: bytes) -> Proposal | None:
        """A proposal of this round for ``block_hash``, the first or an equivocating
        one: rules 36 and 49 hold for any block the proposer signed (safety comes from
        the votes), and keeping the others lets us decide what the others decided."""
        for proposal in self.proposals:
            if proposal.block.hash == block_hash:
                return proposal
        return None

    def has_identical(self, message: ConsensusMessage) -> bool:
        if isinstance(message, Proposal):
            return message in self.proposals
        return self.first(message) == message

    def first(self, message: ConsensusMessage) -> ConsensusMessage | None:
        """The counted message in the slot ``message`` would take, if any."""
        if isinstance(message, Proposal):
            return self.proposal
        if isinstance(message, Prevote):
            return self.prevotes.get(message.voter)
        return self.precommits.get(message.voter)

    def add(self, message: ConsensusMessage) -> tuple[Added, ConsensusMessage | None]:
        """Record ``message``; on CONFLICT also return the counted message it conflicts
        with (the evidence pair).  Two messages are the same when their signed contents
        are (``id``): a re-broadcast is not equivocation."""
        first = self.first(message)
        if first is not None:
            if isinstance(message, Proposal):
                if any(p.id == message.id for p in self.proposals):
                    return Added.SAME, None
                if len(self.proposals) < MAX_PROPOSALS_PER_ROUND:
                    self.proposals.append(message)  # kept aside, never prevoted on
            elif first.id == message.id:
                return Added.SAME, None
            slot = (message.signer, step_of(message))
            if slot in self.reported:
                return Added.SAME, None
            self.reported.add(slot)
            return Added.CONFLICT, first
        if isinstance(message, Proposal):
            self.proposals.append(message)
        elif isinstance(message, Prevote):
            self.prevotes[message.voter] = message
            self.prevote_tally[message.block_hash] += 1
        else:
            self.precommits[message.voter] = message
            self.precommit_tally[message.block_hash] += 1
        return Added.NEW, None


class HeightLog:
    """All we keep of the current height.

    Rounds up to ``current round + window`` are stored whole: rules 28 and 49 may need a
    polka or a commit of *any* earlier round, and dropping one could stall a re-proposal
    forever (peers re-broadcast only their latest votes).  The number of rounds stored
    grows only as rounds are really reached (by timeouts, which grow, or with f + 1
    validators ahead), so a faulty minority cannot inflate it.  Beyond the window, only
    each validator's highest round and its messages of that round are kept.
    """

    def __init__(self, window: int, quorum: int) -> None:
        self.window = window
        self.quorum = quorum
        self.rounds: dict[int, RoundLog] = {}
        self.commits: dict[int, bytes] = {}  # round -> the non-nil hash with a quorum
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

    def add(
        self, message: ConsensusMessage, current_round: int
    ) -> tuple[Added, ConsensusMessage | None]:
        """Store a checked message of this height (or park it if too far ahead)."""
        signer = message.signer
        if message.round > self.highest_round.get(signer, 0):
            self.highest_round[signer] = message.round
        if message.round > current_round + self.window:
            self._park(message)
            return Added.NEW, None
        log = self.at(message.round)
        added = log.add(message)
        if (
            added[0] is Added.NEW
            and isinstance(message, Precommit)
            and message.block_hash != NIL
            and log.precommit_tally[message.block_hash] >= self.quorum
        ):
            self.commits.setdefault(message.round, message.block_hash)
        return added

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

    def skip_target(self, f: int) -> int:
        """The highest round that at least f + 1 validators have reached (0 if none):
        at least one of them is honest, so some honest node really is there (rule 55)."""
        rounds = sorted(self.highest_round.values(), reverse=True)
        return rounds[f] if len(rounds) > f else 0

    def commit_quorums(self) -> list[tuple[int, bytes]]:
        """(round, block hash) of every round with a quorum of precommits for one
        non-nil hash, lowest round first.  At most one hash per round can reach a
        quorum, because each validator counts once per round."""
        return sorted(self.commits.items())


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

    def take(self, height: int) -> list[ConsensusMessage]:
        """Remove and return the messages of ``height`` in arrival order; drop those of
        lower heights, keep higher ones."""
        due = [m for m in self._messages if m.height == height]
        self._messages = [m for m in self._messages if m.height > height]
        self._per_sender = Counter(m.signer for m in self._messages)
        return due
