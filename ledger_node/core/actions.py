"""What the ledger core asks its adapters to do, in order (``Publish`` is shared with
the agent and lives in protocol.topics).

The adapter carries out the actions of one event in the order given: persistence
before any publication that acknowledges it (a PENDING receipt follows StorePending,
a block is published after CommitBlock).
"""

from dataclasses import dataclass

from micromine.ledger_node.chain.state import StateChanges
from micromine.ledger_node.consensus.tendermint import PersistSigned
from micromine.ledger_node.consensus.votes import ConsensusMessage
from micromine.ledger_node.core.mempool import PendingTx
from micromine.protocol.block import Block
from micromine.protocol.consensus import SyncRequest
from micromine.protocol.topics import Publish


@dataclass(frozen=True, slots=True)
class StorePending:
    entries: tuple[PendingTx, ...]


@dataclass(frozen=True, slots=True)
class ForgetPending:
    """Transactions rejected after admission: no longer pending."""

    tx_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CommitBlock:
    """Write the block, its account and vesting changes, the devices it registers and
    bans, and drop its transactions from pending, atomically."""

    block: Block
    changes: StateChanges


@dataclass(frozen=True, slots=True)
class Dropped:
    """An input the core refused: the adapter logs it (rate-limited); stats count it."""

    source: str  # the channel it came on
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    """A validator signed two different messages for one slot: log both as evidence."""

    first: ConsensusMessage
    second: ConsensusMessage


@dataclass(frozen=True, slots=True)
class ImproveCertificate:
    """A committed block gathered more commit signatures: store the fuller certificate.
    Nodes converge on the same certificate (every validator that signed the block), so
    their stored chains end up byte-identical, not just agreeing on hashes."""

    block: Block


@dataclass(frozen=True, slots=True)
class ServeSync:
    """Send the committed blocks a peer asked for (the adapter reads them from storage)."""

    request: SyncRequest


Action = (
    Publish | StorePending | ForgetPending | CommitBlock | Dropped
    | PersistSigned | EvidenceFound | ServeSync | ImproveCertificate
)  # fmt: skip
