"""The ledger node's deterministic state machine: events in, actions out.

    start(now_ms)                      -> [Action]   begin taking part in consensus
    on_message(topic, payload, now_ms) -> [Action]   a submission, verdict, device or
                                                       consensus message
    on_tick(now_ms)                    -> [Action]   time passed: dispatch, deadlines, rounds

No sockets, files, clocks or global randomness: time comes with each event and the
random choice of devices comes from the ``rng`` given at construction, so a seeded
simulation replays exactly.  Transaction lifecycle:

    submitted --admission--> pending --dispatch--> judged by k devices
        --q valid--> accepted --block--> committed
        --q invalid / timeout--> rejected (the sender's later nonces: held again)
    submitted --admission--> held (a nonce gap, a nonce another pending transaction
        has, or the node catching up: mempool.py) --the sender's state changes or the
        node catches up--> offered again --> pending / held / rejected
        --waited HOLD_MS for a missing nonce, caught up--> rejected NONCE_GAP
        --valid and invalid votes (before or after acceptance)--> settled: the node
          checks the transaction itself (tally.py); a forgery is rejected
        --q valid, picked for an audit (more likely the lower the vouching devices'
          reputation: devices.py)--> checked like a disagreement before acceptance
    q = 0 (a lone node and no devices; a benchmark baseline, genesis.py): the node
        checks the signature at admission --> accepted --block--> committed

A batch is given to k distinct available devices among those the chain entitles to
judge it (dispatch.py, registry.py).  When a device misses the batch deadline, or when
every asked device has answered without q agreeing, the still-undecided transactions
go, as a new batch, to one entitled device not yet asked.

Every ledger node admits every submission and tallies every verdict; only a
transaction's owner (peers.py) dispatches it and answers its submitter.  Blocks are
agreed by the validators through replica.py (consensus); commit.py commits them.

``LedgerCore`` holds the node's state and routes each event; the handlers are plain
functions of it, one module per concern:

    admission.py     submissions: admitted, held or rejected; receipts; timeouts
    verdicts.py      devices' verdicts: checked, held while early, counted
    decisions.py     votes decided: quorum, settling, audits, forgeries, judged again
    registration.py  hellos, heartbeats, statuses; operators' approvals
    commit.py        a decided block committed, and what waited on it

Its parts with their own state are modules of their own (mempool, tally, dispatch,
devices, frauds, receipts, peers, replica).
"""

import functools
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from micromine.ledger_node.chain.chain_state import ChainState, ChainTip
from micromine.ledger_node.chain.enrollment import ApprovalRecord, Enrollment
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import Account, Vesting
from micromine.ledger_node.chain.transition import Transition
from micromine.ledger_node.chain.verdicts import AssignmentSignatures
from micromine.ledger_node.consensus.tendermint import SignedState
from micromine.ledger_node.core import admission, commit, decisions
from micromine.ledger_node.core.actions import Action, Dropped, ForgetPending, StorePending
from micromine.ledger_node.core.admission import (
    admit,
    expire_held,
    expire_undecided,
    offer_held,
    on_submission,
)
from micromine.ledger_node.core.devices import LiveDevices
from micromine.ledger_node.core.dispatch import Dispatcher
from micromine.ledger_node.core.frauds import FraudBook
from micromine.ledger_node.core.mempool import Mempool, PendingTx
from micromine.ledger_node.core.peers import Ownership, PeerTracker
from micromine.ledger_node.core.receipts import ReceiptBook
from micromine.ledger_node.core.registration import (
    on_approval,
    on_device_status,
    on_heartbeat,
    on_hello,
)
from micromine.ledger_node.core.replica import Replica
from micromine.ledger_node.core.tally import TxVotes
from micromine.ledger_node.core.verdicts import on_verdict
from micromine.protocol import topics
from micromine.protocol.block import Block
from micromine.protocol.crypto import KeyPair
from micromine.protocol.device import DeviceHello
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.genesis import ChainParams, Genesis
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Verdict
from micromine.protocol.topics import Channel

# Builds the node's consensus adapter: (core, sync reply channel, last signed state).  The
# shipped node uses Replica; tests and the simulator pass a subclass that misbehaves.
ReplicaFactory: TypeAlias = Callable[["LedgerCore", bytes, SignedState | None], Replica]

DEFAULT_AUDIT_RATE = 0.05  # see LedgerConfig.audit_rate
DEFAULT_COMMIT_AUDIT_RATE = 0.05  # see LedgerConfig.commit_audit_rate
PEER_TIMEOUT_MS = 5000  # a validator unheard for this long loses its share of the work
OWNERSHIP_SCAN_MS = 1000  # how often to pick up transactions a silent peer owned
# ... and those a peer left unjudged (peers.unjudged_for) this many batch timeouts per
# place behind the owner (_is_ours).
STALL_BATCHES = 2
HOLD_SCAN_MS = 500  # how often held transactions are checked for their timeout (HOLD_MS)
# After a start, the node counts as catching up this long: peers re-send their current
# height's messages every replica.REBROADCAST_MS, so by then it knows whether it is behind.
CATCH_UP_GRACE_MS = 3_000


@dataclass(slots=True)
class CoreStats:
    admitted: int = 0
    committed: int = 0
    rejected: int = 0
    blocks: int = 0
    verdicts: int = 0
    settled: int = 0  # disagreements the node settled by checking the transaction itself
    audited: int = 0  # quorum-accepted transactions checked by chance (decisions._audit)
    forged: int = 0  # transactions found to fail check_transaction_objective
    checked_in_blocks: int = 0  # block transactions checked (commit.forgeries_in)
    fraud_reports: int = 0  # proofs others reported that we queued (decisions.on_fraud_report)
    dropped: Counter[str] = field(default_factory=Counter)


class LedgerCore:
    """A single ledger node's decisions.  Owns its in-memory state; the adapter owns I/O."""

    def __init__(
        self,
        *,
        genesis: Genesis,
        key: KeyPair,
        rng: random.Random,
        accounts: dict[bytes, Account],
        tip: ChainTip,
        pending: Iterable[PendingTx] = (),
        registered: Mapping[bytes, int] | None = None,
        banned: Mapping[bytes, int] | None = None,
        vesting: Vesting | None = None,
        last_signed: SignedState | None = None,
        now_ms: int = 0,
        approvals: Iterable[ApprovalRecord] = (),
        audit_rate: float = DEFAULT_AUDIT_RATE,
        commit_audit_rate: float = DEFAULT_COMMIT_AUDIT_RATE,
        replica: ReplicaFactory = Replica,
    ) -> None:
        """The chain state as of ``tip`` (chain_state.ChainState.of): ``accounts`` (taken,
        not copied); ``registered``, the device registry (device -> the height that
        registered it), None meaning the genesis devices, for a chain at height 0;
        ``banned`` (device -> ban height), ``vesting`` (device -> unvested rewards) and
        ``approvals`` (the approval records).
        ``audit_rate``: this node's own share of quorum-accepted transactions it checks
        itself, for devices with a perfect record (devices.audit_probability);
        ``commit_audit_rate``: its share of committed ones it checks after the commit
        (commit.py).
        ``replica``: builds the consensus adapter (a Byzantine one in tests)."""
        if not 0.0 <= audit_rate <= 1.0 or not 0.0 <= commit_audit_rate <= 1.0:
            raise ValueError("audit_rate and commit_audit_rate must be in 0..1")
        self.audit_rate = audit_rate
        self.commit_audit_rate = commit_audit_rate
        self.genesis = genesis
        self.key = key
        self.rng = rng
        # The chain state, advanced only by committed blocks (on_block_committed).
        self.state = ChainState.of(
            genesis, tip=tip, accounts=accounts, registered=registered, banned=banned,
            vesting=vesting, approvals=approvals,
        )  # fmt: skip
        self.mempool = Mempool(self.chain_id, self.params)
        self.devices = LiveDevices(self.params.device_timeout_ms)
        self.frauds = FraudBook(self.chain_id, genesis.ledger_nodes, self.params)
        self.hellos: dict[bytes, DeviceHello] = {}  # pending registrations, by device
        self.approvals: dict[bytes, DeviceApproval] = {}  # pending approvals, by device
        # Hellos refused as not approved (yet), so that an approval recorded later
        # registers the device without it having to connect again.
        self.awaiting_approval: dict[bytes, DeviceHello] = {}
        self.votes: OrderedDict[bytes, TxVotes] = OrderedDict()  # undecided, admission order
        self.accepted: dict[bytes, TxVotes] = {}  # decided valid, waiting for a block
        self.dispatcher = Dispatcher(
            chain_id=self.chain_id,
            key=key,
            params=self.params,
            devices=self.devices,
            registry=self.registry,
            rng=rng,
        )
        self.early_verdicts: list[Verdict] = []  # see verdicts.take_early_verdicts
        self.signatures = AssignmentSignatures()  # verified assignment signatures
        self.recent_committed: OrderedDict[bytes, int] = OrderedDict()
        self.stats = CoreStats()
        self.peers = PeerTracker(genesis.ledger_nodes, key.public, PEER_TIMEOUT_MS, now_ms)
        self.receipts = ReceiptBook(self.chain_id, key, self.peers)
        self.replica = replica(self, rng.randbytes(16), last_signed)
        self._next_ownership_scan = now_ms
        self.now_ms = now_ms  # time of the event being handled
        self._started_ms = now_ms  # see is_caught_up
        self._caught_up = False  # as of the last tick
        self._caught_up_since = now_ms
        self._next_hold_scan = now_ms
        # Storage of the event being handled: admitted transactions to store, and ids
        # no longer pending to forget (a later change in the event undoes an earlier one).
        self._to_store: dict[bytes, PendingTx] = {}
        self._to_forget: dict[bytes, None] = {}
        self._drops: list[Dropped] = []  # see note_drop
        handle = functools.partial
        self._handlers: dict[Channel, Callable[[bytes | None, bytes, int, list[Action]], None]] = {
            Channel.SUBMIT: handle(on_submission, self),
            Channel.VERDICTS: handle(on_verdict, self),
            Channel.HELLO: handle(on_hello, self),
            Channel.HEARTBEAT: handle(on_heartbeat, self),
            Channel.DEVICE_STATUS: handle(on_device_status, self),
            Channel.CONSENSUS: self.replica.on_consensus,
            Channel.SYNC_REQUEST: self.replica.on_sync_request,
            Channel.SYNC_REPLY: self.replica.on_sync_reply,
            Channel.APPROVALS: handle(on_approval, self),
            Channel.FRAUDS: handle(decisions.on_fraud_report, self),
        }
        for entry in pending:  # resumed from storage: judge them again
            admit(self, entry, now_ms)

    # The parts of the chain state the handlers read (read-only: only a committed block
    # changes the state, through transition.process_commit).

    @property
    def chain_id(self) -> str:
        return self.state.chain_id

    @property
    def params(self) -> ChainParams:
        return self.state.params

    @property
    def enrollment(self) -> Enrollment:
        return self.state.enrollment

    @property
    def tip(self) -> ChainTip:
        return self.state.tip

    @property
    def accounts(self) -> Mapping[bytes, Account]:
        return self.state.accounts

    @property
    def registry(self) -> DeviceRegistry:
        return self.state.registry

    @property
    def vesting(self) -> Vesting:
        return self.state.vesting

    def is_caught_up(self, now_ms: int) -> bool:
        """Does this node hold the chain's latest committed state, as far as it can tell?
        Not within CATCH_UP_GRACE_MS of its start (it has not heard where the others
        are), nor while it hears fewer than a quorum of validators (isolated, it cannot
        know), nor while f + 1 validators are past its tip (replica.certified_height_heard).
        A lone validator is the chain: always caught up."""
        validators = self.genesis.ledger_nodes
        if len(validators) == 1:
            return True
        if now_ms - self._started_ms < CATCH_UP_GRACE_MS:
            return False
        quorum = 2 * len(validators) // 3 + 1
        if self.peers.count_live(now_ms) < quorum:
            return False
        return self.replica.certified_height_heard() <= self.tip.height

    def start(self, now_ms: int) -> list[Action]:
        self.now_ms = now_ms
        self._started_ms = now_ms
        actions: list[Action] = []
        self.replica.start(now_ms, actions)
        self._flush_receipts(actions, now_ms)
        return actions

    # ---- events -------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> list[Action]:
        self.now_ms = now_ms
        actions: list[Action] = []
        parsed = topics.parse(self.chain_id, topic)
        handler = self._handlers.get(parsed.channel) if parsed else None
        if parsed is None or handler is None:
            self.drop(actions, "topic", "unexpected_topic", topic[:120])
            return actions
        handler(parsed.key, payload, now_ms, actions)
        self._flush_receipts(actions, now_ms)
        return actions

    def on_tick(self, now_ms: int) -> list[Action]:
        self.now_ms = now_ms
        actions: list[Action] = []
        caught_up = self.is_caught_up(now_ms)
        if caught_up and not self._caught_up:  # what waited for the chain is judged now
            self._caught_up_since = now_ms
            self._caught_up = True
            for sender in self.mempool.held_senders():
                offer_held(self, sender)
        self._caught_up = caught_up
        self.dispatcher.expire_deadlines(self.votes, now_ms)
        if caught_up:
            self._expire_transactions(now_ms)
        if now_ms >= self._next_ownership_scan:
            ownership = self.peers.ownership(now_ms)
            is_ours = functools.partial(self._is_ours, ownership)
            for tx_id in self.dispatcher.take_over(self.votes, is_ours):
                if not self.peers.mine(tx_id, now_ms):
                    self.receipts.adopt(tx_id)
            self._next_ownership_scan = now_ms + OWNERSHIP_SCAN_MS
        self.dispatcher.dispatch(self.votes, now_ms, actions)
        self.replica.on_tick(now_ms, actions)
        self._flush_receipts(actions, now_ms)
        return actions

    def _expire_transactions(self, now_ms: int) -> None:
        """Time out, while caught up: undecided transactions (NO_QUORUM), and, every
        HOLD_SCAN_MS, those held HOLD_MS for a missing nonce (NONCE_GAP), counted from
        when the node last caught up (admission.py)."""
        expire_undecided(self, now_ms, self._caught_up_since)
        if now_ms < self._next_hold_scan:
            return
        self._next_hold_scan = now_ms + HOLD_SCAN_MS
        expire_held(self, now_ms, self._caught_up_since)

    # ---- what consensus asks (replica.py) -------------------------------------------

    def on_block_committed(
        self, block: Block, transition: Transition, now_ms: int, actions: list[Action]
    ) -> None:
        """A block was decided, and ``transition`` is its checked state transition:
        commit it (commit.on_block_committed)."""
        commit.on_block_committed(self, block, transition, now_ms, actions)

    def reject_pending(self, tx_id: bytes, reason: Reason) -> None:
        """Reject an admitted transaction (admission.reject_pending)."""
        admission.reject_pending(self, tx_id, reason)

    def judge_again(self, tx_id: bytes) -> None:
        """Send an accepted transaction back to the devices (decisions.judge_again)."""
        decisions.judge_again(self, tx_id)

    def has_registration_work(self) -> bool:
        """Approvals to record, or hellos the policy lets a block register."""
        return bool(self.approvals) or bool(self.hellos)

    # ---- the event's outputs --------------------------------------------------------

    def store_pending(self, entry: PendingTx) -> None:
        """Store ``entry`` with the event's actions (StorePending)."""
        self._to_forget.pop(entry.tx_id, None)
        self._to_store[entry.tx_id] = entry

    def forget_pending(self, tx_id: bytes) -> None:
        """Forget ``tx_id``'s storage with the event's actions (ForgetPending)."""
        self._to_store.pop(tx_id, None)
        self._to_forget[tx_id] = None

    def _flush_receipts(self, actions: list[Action], now_ms: int) -> None:
        """The event's drops, then its storage (a PENDING receipt's transaction is stored
        before the receipt goes, and a rejected one forgotten), then its receipts."""
        actions.extend(self._drops)
        self._drops.clear()
        if self._to_forget:
            actions.append(ForgetPending(tuple(self._to_forget)))
            self._to_forget = {}
        if self._to_store:
            actions.append(StorePending(tuple(self._to_store.values())))
            self._to_store = {}
        actions.extend(self.receipts.flush(now_ms))

    def _is_ours(self, ownership: Ownership, tx_id: bytes, votes: TxVotes) -> bool:
        """Ours to dispatch: we own it; or no device's verdict on it has reached us and
        its owner has left it unjudged (peers.unjudged_for: judging nothing, or judging
        what came after it) for STALL_BATCHES batch timeouts times our place behind the
        owner (peers.standby): an owner that speaks but does not get its work judged
        (Byzantine, or its devices' verdicts lost to us) is stepped over.  ``ownership``
        is the peers' state of this scan, read once for all transactions."""
        home = ownership.home(tx_id)
        if ownership.mine[home]:
            return True
        if votes.valid or votes.invalid:
            return False
        since = max(votes.admitted_ms, self._started_ms)
        unjudged = ownership.unjudged_for(home, since, self.now_ms)
        stall_ms = STALL_BATCHES * self.params.batch_timeout_ms
        return unjudged >= stall_ms and unjudged >= stall_ms * ownership.standby[home]

    def drop(self, actions: list[Action], source: str, reason: str, detail: str) -> None:
        """A message refused, counted, and said in ``actions``."""
        self.stats.dropped[f"{source}.{reason}"] += 1
        actions.append(Dropped(source, reason, detail))

    def note_drop(self, source: str, reason: str, detail: str) -> None:
        """A drop noticed where no action list is at hand (consensus callbacks); it goes
        out with the event's other actions."""
        self.stats.dropped[f"{source}.{reason}"] += 1
        self._drops.append(Dropped(source, reason, detail))
