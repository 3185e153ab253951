"""The values that cross the consensus core's boundary: its inputs' types, the app it
calls, the state it asks to persist, and its outputs.  Re-exported by ``consensus.py``,
which is where to import them from; kept apart so that the state machine there reads as
the paper's rules.

The adapter carries out one call's outputs in order; every own message is announced by
a PersistSigned immediately before its Broadcast.
"""

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from micromine.ledger_node.consensus.votes import ConsensusMessage
from micromine.protocol.block import Block
from micromine.protocol.consensus import NIL, Prevote


class Step(IntEnum):
    NEW_HEIGHT = 0  # decided the previous height; waiting commit_ms before round 1
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts grow linearly with the round, so that after GST (when the real message
    delay is bounded but unknown) some round is long enough for honest nodes to hear
    each other: this is what the paper's liveness proof needs."""

    propose_ms: int = 1000
    propose_delta_ms: int = 500
    prevote_ms: int = 500
    prevote_delta_ms: int = 250
    precommit_ms: int = 500
    precommit_delta_ms: int = 250
    commit_ms: int = 1000  # wait after a decision before starting the next height
    # How much later than a round's proposer an honest node may start that round (the
    # spread of honest decisions of the previous height, a round change reaching us),
    # and in round 1, where a node without work runs no timeoutPropose, how long an
    # honest proposal may travel.  See ``message_delay``.
    message_delay_ms: int = 5000

    def propose(self, round: int) -> int:
        return self.propose_ms + self.propose_delta_ms * (round - 1)

    def prevote(self, round: int) -> int:
        return self.prevote_ms + self.prevote_delta_ms * (round - 1)

    def precommit(self, round: int) -> int:
        return self.precommit_ms + self.precommit_delta_ms * (round - 1)

    def message_delay(self, round: int) -> int:
        """MSGDELAY of proposer-based timestamps (CometBFT's PBTS) for a fresh proposal
        of ``round``: how long before our clock (less the clock precision, the app's)
        its block may be dated and still get our prevote.

        An honest proposer dates its block when it makes it, no earlier than its own
        start of the round, and we judge it when it reaches us in the propose step, no
        later than timeoutPropose after our start of the round (or at that start, if it
        came early).  So an honest proposal that arrives in time is never older than
        timeoutPropose(round) plus how much later we started the round
        (``message_delay_ms``): this bound refuses nothing the propose timeout lets
        in, and grows with the round as it does (CometBFT grows MSGDELAY by 10 % a
        round for the same reason), so a proposer whose blocks are slow to reach the
        others still gets prevotes once rounds are long enough."""
        return self.message_delay_ms + self.propose(round)


class ConsensusApp(Protocol):
    def has_work(self) -> bool:
        """Is anything worth a block?  Round 1 waits for it (see the module docstring)."""
        ...

    def propose(self, height: int, round: int, now_ms: int) -> Block | None:
        """A block (empty certificate, this height, our key as proposer); None: not yet."""
        ...

    def is_valid(self, block: Block) -> bool:
        """The honest validity rules for ``block`` at the current height."""
        ...

    def is_timely(self, block: Block, now_ms: int, message_delay_ms: int) -> bool:
        """Is the block dated by a clock that agrees with ours: no later than ``now_ms``
        plus the clock precision we tolerate, and no earlier than ``now_ms`` less that
        precision and ``message_delay_ms`` (``Timeouts.message_delay`` of the proposal's
        round)?  Asked of fresh proposals only, when we judge them (see the core's
        prevote rule): a local vote rule, not validity, so it may depend on our clock."""
        ...


@dataclass(frozen=True, slots=True)
class SignedState:
    """The last message this validator signed, with the lock and the valid value it
    held then (or learned since); persisted before the message leaves, so a restarted
    node never signs a different message in the same slot, and carries on where it was.

    ``locked_round`` / ``locked_hash`` / ``locked_block`` (0 / NIL / None: none) are the
    paper's lockedRound and lockedValue.  A node that precommitted a block and then
    restarted without its lock could prevote a different block in a later round, and
    enough such restarts would break agreement without any Byzantine node.
    ``locked_block`` may be None with a lock: states written before it was kept.

    ``valid_round`` / ``valid_block`` (0 / None: none) are validRound and validValue.
    Without them a restart breaks liveness: nodes locked on v (which prevote nil for
    every other fresh block) need a proposer to re-propose v with its polka's round,
    and if only the restarted nodes had v as their valid value, nobody ever does.

    The blocks are references to the core's own objects, so a persisted state costs
    nothing to build; an adapter should write a block's bytes only when it changes
    (``LedgerStore.save_signed`` does), not with every vote.
    """

    height: int
    round: int
    step: int  # 1 proposal, 2 prevote, 3 precommit
    block_hash: bytes
    locked_round: int = 0
    locked_hash: bytes = NIL
    valid_round: int = 0
    valid_block: Block | None = None
    locked_block: Block | None = None
    # The 2f+1 prevotes of valid_round for valid_block: the polka that made it valid.
    # Others accept its re-proposal only once they see that polka, and after a crash
    # nobody else may hold it all (our own prevote may never have left), so it is kept
    # and relayed again.  Empty in states written before it was kept.
    polka: tuple[Prevote, ...] = ()

    def __post_init__(self) -> None:
        if (self.locked_round > 0) == (self.locked_hash == NIL):
            raise ValueError("a lock has both a round and a block hash, or neither")
        if self.locked_block is not None and self.locked_block.hash != self.locked_hash:
            raise ValueError("the locked block does not have the locked hash")
        if (self.valid_round > 0) != (self.valid_block is not None):
            raise ValueError("a valid value has both a round and a block, or neither")
        if self.polka and not all(
            vote.height == self.height
            and vote.round == self.valid_round
            and self.valid_block is not None
            and vote.block_hash == self.valid_block.hash
            for vote in self.polka
        ):
            raise ValueError("the polka is not of the valid value's round and block")


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: ConsensusMessage


@dataclass(frozen=True, slots=True)
class PersistSigned:
    """Store ``state`` durably before carrying out the Broadcast that follows it."""

    state: SignedState


@dataclass(frozen=True, slots=True)
class Decide:
    """``block`` is decided, with its certificate; commit it (once per height)."""

    block: Block
    round: int  # the deciding round: the certificate's (block.commit_round)


@dataclass(frozen=True, slots=True)
class Evidence:
    """``first.signer`` signed both messages for one (height, round, step)."""

    first: ConsensusMessage
    second: ConsensusMessage


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    sender: bytes | None


Output = Broadcast | PersistSigned | Decide | Evidence | Rejected
