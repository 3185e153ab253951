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

Devices: a signed hello makes a device known (devices.py) and, until a block registers
it, a pending registration that the next proposer includes; only registered devices
get work.  Under "approved" enrollment a hello counts only from a device an operator
approved on chain, and a revoked device's hellos and verdicts are dropped under either
policy; operators' signed approvals are held until a block records them (enrollment.py).
A device caught judging a forgery valid is the subject of a fraud proof (frauds.py)
that the next proposer includes; once a block bans it, its verdicts, hellos and
heartbeats are dropped and it gets no work.

A verdict counts only under an assignment a validator signed, from a device that
assignment entitles, against a registry at most ``assignment_window`` blocks old,
and only if it judges exactly the assignment's transactions (verdicts.py); an accepted
transaction whose verdicts fall out of that window is judged again.

Every ledger node admits every submission and tallies every verdict; only a
transaction's owner (peers.py) dispatches it and answers its submitter.  Blocks are
agreed by the validators through replica.py (consensus); this module commits them.

Receipt rules (docs/PROTOCOL.md section 8): a receipt is final only when it is true.
COMMITTED names the block.  REJECTED is sent only for a reason that no later state can
undo (a stateless rule, a used nonce, a device quorum or timeout), or for one that
depends on the chain state read at a committed height the receipt names (with the
sender's next nonce there), and never for a state-dependent reason while the node is
not caught up (``is_caught_up``): it holds the transaction instead (HELD, not final).
Timeouts (NO_QUORUM, a held nonce gap) fire only while caught up too: a node replaying
its chain after a restart must not time out what the others committed meanwhile.

Longer than 400 lines because LedgerCore is one state machine whose handlers (admission,
verdicts, settling, approvals, commits) change one state; its parts with their own state
are modules of their own (mempool, tally, dispatch, devices, frauds, receipts, peers,
replica).  Splitting its handlers further is still to do.
"""

import dataclasses
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from micromine.ledger_node.chain.chain_state import ChainState, ChainTip
from micromine.ledger_node.chain.enrollment import ApprovalRecord, Enrollment
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import EMPTY_ACCOUNT, Account, Vesting
from micromine.ledger_node.chain.transition import Transition, process_commit
from micromine.ledger_node.chain.verdicts import (
    AssignmentSignatures,
    check_verdict_binding,
    check_verdict_signatures,
)
from micromine.ledger_node.consensus.tendermint import SignedState
from micromine.ledger_node.core.account_feed import get_account_summaries
from micromine.ledger_node.core.actions import (
    Action,
    CommitBlock,
    Dropped,
    ForgetPending,
    StorePending,
)
from micromine.ledger_node.core.devices import LiveDevices, audit_probability
from micromine.ledger_node.core.dispatch import Dispatcher
from micromine.ledger_node.core.frauds import FraudBook
from micromine.ledger_node.core.mempool import Admission, HeldTx, Mempool, PendingTx
from micromine.ledger_node.core.peers import PeerTracker
from micromine.ledger_node.core.receipts import ReceiptBook
from micromine.ledger_node.core.render import block_to_json
from micromine.ledger_node.core.replica import Replica
from micromine.ledger_node.core.tally import (
    Outcome,
    TxVotes,
    agreement,
    compute_outcome,
    is_disputed,
    record_vote,
)
from micromine.protocol import topics
from micromine.protocol.assignment import is_registry_height_in_window
from micromine.protocol.block import Block
from micromine.protocol.codec import decode, encode, is_signature_valid
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.errors import DecodeError
from micromine.protocol.genesis import ChainParams, Genesis
from micromine.protocol.kinds import STATE_REASONS, Reason, ReceiptStatus
from micromine.protocol.messages import Submission, Transaction, Verdict
from micromine.protocol.topics import Channel, Publish
from micromine.protocol.validation import check_transaction_objective, decode_transaction

DeviceMessage = TypeVar("DeviceMessage", DeviceHello, Heartbeat, DeviceStatus)
# Builds the node's consensus adapter: (core, sync reply channel, last signed state).  The
# shipped node uses Replica; tests and the simulator pass a subclass that misbehaves.
ReplicaFactory: TypeAlias = Callable[["LedgerCore", bytes, SignedState | None], Replica]

DEFAULT_AUDIT_RATE = 0.05  # see LedgerConfig.audit_rate
RECENT_COMMITTED = 100_000  # committed tx ids remembered, for idempotent resubmission
PEER_TIMEOUT_MS = 5000  # a validator unheard for this long loses its share of the work
OWNERSHIP_SCAN_MS = 1000  # how often to pick up transactions a silent peer owned
MAX_PENDING_REGISTRATIONS = 4096  # hellos of unregistered devices held for a block
MAX_PENDING_APPROVALS = 1024  # operators' approvals held for a block
MAX_AWAITING_APPROVAL = 1024  # hellos of devices not approved yet (oldest forgotten first)
MAX_EARLY_VERDICTS = 4096  # verdicts ranked against a registry we have not reached yet
EARLY_HEIGHTS = 4  # how far ahead of our tip such a registry may be
# A transaction held for a missing earlier nonce waits this long (counted while the node
# is caught up) before it is rejected NONCE_GAP: long enough for a sender to resubmit
# what a broker restart lost (clients resend within seconds, told the nonce by HELD).
HOLD_MS = 15_000
HOLD_SCAN_MS = 500  # how often held transactions are checked for that timeout
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
    audited: int = 0  # quorum-accepted transactions checked by chance (_audit)
    forged: int = 0  # transactions found to fail check_transaction_objective
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
        replica: ReplicaFactory = Replica,
    ) -> None:
        """The chain state as of ``tip`` (chain_state.ChainState.of): ``accounts`` (taken,
        not copied); ``registered``, the device registry (device -> the height that
        registered it), None meaning the genesis devices, for a chain at height 0;
        ``banned`` (device -> ban height), ``vesting`` (device -> unvested rewards) and
        ``approvals`` (the approval records).
        ``audit_rate``: this node's own share of quorum-accepted transactions it checks
        itself, for devices with a perfect record (devices.audit_probability).
        ``replica``: builds the consensus adapter (a Byzantine one in tests)."""
        if not 0.0 <= audit_rate <= 1.0:
            raise ValueError("audit_rate must be in 0..1")
        self.audit_rate = audit_rate
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
        self._early: list[Verdict] = []  # see _hold_early
        self.signatures = AssignmentSignatures()  # verified assignment signatures
        self.recent_committed: OrderedDict[bytes, int] = OrderedDict()
        self.stats = CoreStats()
        self.peers = PeerTracker(genesis.ledger_nodes, key.public, PEER_TIMEOUT_MS, now_ms)
        self.receipts = ReceiptBook(self.chain_id, key, self.peers)
        self.replica = replica(self, rng.randbytes(16), last_signed)
        self._next_ownership_scan = now_ms
        self._now = now_ms  # time of the event being handled
        self._started_ms = now_ms  # see is_caught_up
        self._caught_up = False  # as of the last tick
        self._caught_up_since = now_ms
        self._next_hold_scan = now_ms
        # Storage of the event being handled: admitted transactions to store, and ids
        # no longer pending to forget (a later change in the event undoes an earlier one).
        self._to_store: dict[bytes, PendingTx] = {}
        self._to_forget: dict[bytes, None] = {}
        self._drops: list[Dropped] = []  # see note_drop
        self._handlers: dict[Channel, Callable[[bytes | None, bytes, int, list[Action]], None]] = {
            Channel.SUBMIT: self._on_submission,
            Channel.VERDICTS: self._on_verdict,
            Channel.HELLO: self._on_hello,
            Channel.HEARTBEAT: self._on_heartbeat,
            Channel.DEVICE_STATUS: self._on_device_status,
            Channel.CONSENSUS: self.replica.on_consensus,
            Channel.SYNC_REQUEST: self.replica.on_sync_request,
            Channel.SYNC_REPLY: self.replica.on_sync_reply,
            Channel.APPROVALS: self._on_approval,
        }
        for entry in pending:  # resumed from storage: judge them again
            self._admit(entry, now_ms)

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
        self._now = now_ms
        self._started_ms = now_ms
        actions: list[Action] = []
        self.replica.start(now_ms, actions)
        self._flush_receipts(actions, now_ms)
        return actions

    # ---- events -------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> list[Action]:
        self._now = now_ms
        actions: list[Action] = []
        parsed = topics.parse(self.chain_id, topic)
        handler = self._handlers.get(parsed.channel) if parsed else None
        if parsed is None or handler is None:
            self._drop(actions, "topic", "unexpected_topic", topic[:120])
            return actions
        handler(parsed.key, payload, now_ms, actions)
        self._flush_receipts(actions, now_ms)
        return actions

    def on_tick(self, now_ms: int) -> list[Action]:
        self._now = now_ms
        actions: list[Action] = []
        caught_up = self.is_caught_up(now_ms)
        if caught_up and not self._caught_up:  # what waited for the chain is judged now
            self._caught_up_since = now_ms
            self._caught_up = True
            for sender in self.mempool.held_senders():
                self._offer_held(sender)
        self._caught_up = caught_up
        self.dispatcher.expire_deadlines(self.votes, now_ms)
        if caught_up:
            self._expire_transactions(now_ms)
        if now_ms >= self._next_ownership_scan:
            self.dispatcher.take_over(self.votes, lambda tx_id: self.peers.mine(tx_id, now_ms))
            self._next_ownership_scan = now_ms + OWNERSHIP_SCAN_MS
        self.dispatcher.dispatch(self.votes, now_ms, actions)
        self.replica.on_tick(now_ms, actions)
        self._flush_receipts(actions, now_ms)
        return actions

    # ---- submissions --------------------------------------------------------------

    def _on_submission(
        self, _key: bytes | None, payload: bytes, now_ms: int, actions: list[Action]
    ) -> None:
        try:
            submission = decode(payload, Submission)
        except DecodeError as exc:
            self._drop(actions, "submit", f"decode_{exc.code.name.lower()}", exc.detail)
            return
        if submission.chain_id != self.chain_id:
            self._drop(actions, "submit", "wrong_chain", submission.chain_id)
            return
        for item in submission.items:
            self._admit_item(item, submission.reply_to, now_ms)
        # Persisted (StorePending) before the PENDING receipts, both flushed after this.

    def _admit_item(self, item: bytes, reply_to: bytes, now_ms: int) -> None:
        # Every node decides the same; only the item's owner answers (peers.py).
        decoded = decode_transaction(item)
        if isinstance(decoded, Reason):
            self.receipts.note_if_mine(
                reply_to, sha256(item), ReceiptStatus.REJECTED, decoded, now_ms
            )
            self.stats.rejected += 1
            return
        tx, tx_id = decoded, decoded.id
        if tx_id in self.mempool:  # [IGNORE] already pending: acknowledge again
            self.receipts.note_if_mine(reply_to, tx_id, ReceiptStatus.PENDING, 0, now_ms)
            return
        held = self.mempool.held.get(tx_id)
        if held is not None:  # [IGNORE] already held: say on what, to this submitter
            held.entry = dataclasses.replace(held.entry, reply_to=reply_to)
            self._answer_held(held.entry, held.reason)
            return
        height = self.recent_committed.get(tx_id)
        if height is not None:  # [IGNORE] already committed: say where
            self.receipts.note_if_mine(reply_to, tx_id, ReceiptStatus.COMMITTED, height, now_ms)
            return
        self._offer(PendingTx(tx, tx_id, reply_to, now_ms), None)
        self._offer_held(tx.sender)  # the later nonces it may have unblocked

    def _offer(self, entry: PendingTx, held: HeldTx | None) -> None:
        """Admit, hold or reject ``entry`` (neither pending nor held now); ``held``: how
        it was held until now (its first hold's time is kept, and the sender is told
        only of a new reason to wait that it can act on)."""
        now = self._now
        admission = self.mempool.check_admission(
            entry.tx, now, self.accounts, caught_up=self.is_caught_up(now)
        )
        # [REJECT] Without devices (q = 0), the node checks the signature itself.
        if admission.ok and self.params.q == 0:
            admission = Admission(check_transaction_objective(entry.tx, self.chain_id))
        if admission.ok:
            if held is not None:  # judged from now on: its timeout counts from here
                entry = dataclasses.replace(entry, admitted_ms=now)
            self._admit(entry, now)
            self._store(entry)
            self.receipts.note_if_mine(entry.reply_to, entry.tx_id, ReceiptStatus.PENDING, 0, now)
            self.stats.admitted += 1
        elif admission.hold:
            self.mempool.hold(entry, admission.reason, held.since_ms if held else now)
            if held is None or (
                admission.reason is not held.reason and admission.reason is not Reason.CATCHING_UP
            ):
                self._answer_held(entry, admission.reason)
        else:
            self._answer_rejected(entry, admission.reason)

    def _offer_held(self, sender: bytes) -> None:
        """Offer the sender's held transactions again, in nonce order (so a run of them
        is admitted in one pass once the missing nonce arrives)."""
        for held in self.mempool.held_from(sender):
            self.mempool.release(held.entry.tx_id)
            self._offer(held.entry, held)

    def _detail(self, sender: bytes) -> tuple[int, int]:
        """A state-dependent receipt's detail: our committed height, and the nonce we
        need next from ``sender`` there (committed nonce plus its pending run)."""
        return self.tip.height, self.mempool.next_nonce(sender, self.accounts)

    def _answer_held(self, entry: PendingTx, reason: Reason) -> None:
        detail = self._detail(entry.tx.sender)
        self.receipts.note_if_mine(
            entry.reply_to, entry.tx_id, ReceiptStatus.HELD, reason, self._now, detail=detail
        )

    def _answer_rejected(self, entry: PendingTx, reason: Reason) -> None:
        detail = self._detail(entry.tx.sender) if reason in STATE_REASONS else None
        self.receipts.note_if_mine(
            entry.reply_to, entry.tx_id, ReceiptStatus.REJECTED, reason, self._now, detail=detail
        )
        self.stats.rejected += 1

    def _store(self, entry: PendingTx) -> None:
        self._to_forget.pop(entry.tx_id, None)
        self._to_store[entry.tx_id] = entry

    def _forget(self, tx_id: bytes) -> None:
        self._to_store.pop(tx_id, None)
        self._to_forget[tx_id] = None

    def _admit(self, entry: PendingTx, now_ms: int) -> None:
        self.mempool.add(entry)
        if self.params.q == 0:  # checked at admission (before it was stored): accepted
            votes = TxVotes(entry.tx, entry.reply_to, entry.admitted_ms, settled=True)
            self.accepted[entry.tx_id] = votes
            return
        self.votes[entry.tx_id] = TxVotes(entry.tx, entry.reply_to, entry.admitted_ms)
        if self.peers.mine(entry.tx_id, now_ms):
            self.dispatcher.fresh.append(entry.tx_id)

    # ---- devices ------------------------------------------------------------------

    def _on_hello(self, key: bytes | None, payload: bytes, now_ms: int, out: list[Action]) -> None:
        if not payload:  # a cleared retained message
            return
        hello = self._decode_device_message(key, payload, DeviceHello, "hello", out)
        if hello is None:
            return
        # [REJECT] A banned device's hello (it gets no work, and stays registered).
        if self.registry.is_banned(hello.device):
            self._drop(out, "hello", "banned", hello.device.hex()[:16])
            return
        self.devices.on_hello(hello, now_ms)
        # [IGNORE] Registered already (by the chain; the latest hello of a device waiting
        # for registration replaces its earlier one).
        if hello.device in self.registry:
            return
        # [IGNORE] Not enrolled: revoked, or (under "approved") not approved; counted.
        reason = self._enrollment_refusal(hello.device)
        held = self.approvals.get(hello.device)
        if reason == "not_approved" and held is not None and held.approve:
            reason = None  # a pending approval: one block may record both
        if reason is not None:
            if reason == "not_approved":
                self._await_approval(hello)
            self._drop(out, "hello", reason, hello.device.hex()[:16])
            return
        # [IGNORE] Too many registrations pending: the device says hello again on its
        # next connect, and its retained hello reaches any node that starts.
        if hello.device not in self.hellos and len(self.hellos) >= MAX_PENDING_REGISTRATIONS:
            self._drop(out, "hello", "registrations_full", hello.device.hex()[:16])
            return
        self.hellos[hello.device] = hello

    def _on_heartbeat(
        self, key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
    ) -> None:
        heartbeat = self._decode_device_message(key, payload, Heartbeat, "heartbeat", out)
        if heartbeat is None:
            return
        # [IGNORE] A banned device's heartbeat: it must never look live (no work).
        if self.registry.is_banned(heartbeat.device):
            return
        # [REJECT] Not older than the device's latest heartbeat (devices.py).
        if why := self.devices.on_heartbeat(heartbeat, now_ms):
            self._drop(out, "heartbeat", why, heartbeat.device.hex()[:16])

    def _on_device_status(
        self, key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
    ) -> None:
        if not payload:  # a cleared retained message
            return
        status = self._decode_device_message(key, payload, DeviceStatus, "status", out)
        if status is not None and (why := self.devices.on_status(status, now_ms)):
            self._drop(out, "status", why, status.device.hex()[:16])

    def _decode_device_message(
        self,
        key: bytes | None,
        payload: bytes,
        kind: type[DeviceMessage],
        source: str,
        out: list[Action],
    ) -> DeviceMessage | None:
        try:
            message = decode(payload, kind)
        except DecodeError as exc:
            self._drop(out, source, f"decode_{exc.code.name.lower()}", exc.detail)
            return None
        # [REJECT] The message is for this chain, from the device its topic names, signed.
        if message.chain_id != self.chain_id:
            self._drop(out, source, "wrong_chain", message.chain_id)
            return None
        if message.device != key:
            self._drop(out, source, "topic_mismatch", message.device.hex()[:16])
            return None
        if not is_signature_valid(message):
            self._drop(out, source, "bad_signature", message.device.hex()[:16])
            return None
        return message

    # ---- verdicts -----------------------------------------------------------------

    def _on_verdict(
        self, key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
    ) -> None:
        try:
            verdict = decode(payload, Verdict)
        except DecodeError as exc:
            self._drop(out, "verdict", f"decode_{exc.code.name.lower()}", exc.detail)
            return
        # [REJECT] The verdict is for this chain, on the device's own topic.
        if verdict.chain_id != self.chain_id or verdict.device != key:
            self._drop(out, "verdict", "topic_mismatch", verdict.device.hex()[:16])
            return
        # [REJECT] Its device is not banned.
        if self.registry.is_banned(verdict.device):
            self._drop(out, "verdict", "banned", verdict.device.hex()[:16])
            return
        # [IGNORE] The device is revoked (as of our tip): counted.
        if self.registry.is_revoked_at(verdict.device, self.tip.height):
            self._drop(out, "verdict", "revoked", verdict.device.hex()[:16])
            return
        self._take_verdict(verdict, out)

    def _take_verdict(self, verdict: Verdict, out: list[Action]) -> None:
        record = self.dispatcher.batches.get(verdict.batch_id)
        if record is None or record.batch.assignment != verdict.assignment:
            # Another node's batch (or one from before a restart, or a forgery).
            self._count_foreign_verdict(verdict, out)
            return
        # [REJECT] The device was given this batch (so it is entitled to judge it).
        if verdict.device not in record.given:
            self._drop(out, "verdict", "not_entitled", verdict.device.hex()[:16])
            return
        # [IGNORE] The device already answered this batch.
        if verdict.device in record.answered:
            return
        # [REJECT] It can still justify a transaction in our next block, and judges
        # exactly the batch's transactions (our own assignment: signed by us).
        if not self._is_bound(verdict, out):
            return
        # [REJECT] The device signed it.
        if not is_signature_valid(verdict):
            self._drop(out, "verdict", "bad_signature", verdict.device.hex()[:16])
            return
        self.stats.verdicts += 1
        was_waiting = self.dispatcher.take_answer(record, verdict.device)
        self._count(verdict, own=True, was_waiting=was_waiting)
        self.dispatcher.forget_if_done(verdict.batch_id, self.votes)

    def _count_foreign_verdict(self, verdict: Verdict, out: list[Action]) -> None:
        """Tally a verdict on a batch another ledger node issued, so that every node
        learns which transactions are accepted.  We never saw the batch, but the
        verdict carries its signed assignment: who issued it, the registry that ranks
        the entitled devices, and the root of its transactions (verdicts.py)."""
        # [IGNORE] Nothing in it is still undecided, or accepted and disputed, here.
        if not any(self._concerns_us(j.tx_id, j.reason) for j in verdict.judgements):
            return
        # [IGNORE] Its registry is above our tip: held (once its signatures verified, so
        # that forgeries cannot fill the buffer) until we commit up to it.
        if verdict.registry_height > self.tip.height:
            if self._is_signed(verdict, out):
                self._hold_early(verdict, out)
            return
        # [REJECT] Bound to an assignment that entitles the device, within the window.
        if not self._is_bound(verdict, out):
            return
        # [REJECT] The assignment is a validator's, and it and the verdict are signed.
        if not self._is_signed(verdict, out):
            return
        self.stats.verdicts += 1
        self._count(verdict, own=False, was_waiting=False)

    def _concerns_us(self, tx_id: bytes, reason: int) -> bool:
        """Undecided here; or an "invalid" on an accepted transaction (a dispute); or a
        "valid" on one found forged or rejected by devices (perhaps a fraud)."""
        if tx_id in self.votes:
            return True
        if reason != Reason.OK:
            return tx_id in self.accepted
        return self.frauds.is_known(tx_id)

    def _count(self, verdict: Verdict, *, own: bool, was_waiting: bool) -> None:
        """Count a checked verdict's judgements.  On our own batch, a transaction that
        every asked device answered without a decision goes to one more device."""
        for judgement in verdict.judgements:
            tx_id = judgement.tx_id
            votes = self.votes.get(tx_id)
            if votes is not None:
                if was_waiting:
                    votes.outstanding -= 1
                self._forget_stale_verdicts(votes)  # so that the device's new vote counts
                record_vote(votes, verdict, judgement.reason)
                if not self._decide(tx_id, votes) and own and votes.outstanding <= 0:
                    self.dispatcher.retry.append(tx_id)  # all answered, no quorum
            elif judgement.reason != Reason.OK and (accepted := self.accepted.get(tx_id)):
                self._dispute_accepted(tx_id, accepted, verdict, judgement.reason)
            elif judgement.reason == Reason.OK and (tx := self.frauds.forged_for(tx_id)):
                self._offer_fraud(verdict, tx)  # a "valid" on a forgery, after the fact

    def _is_bound(self, verdict: Verdict, out: list[Action]) -> bool:
        """The verdict's binding rules of a block (transition.state_transition), for our next
        block; a counted drop when broken.  Its registry must not be above our tip."""
        problem = check_verdict_binding(verdict, self.tip.height + 1, self.registry, self.params)
        if problem is not None:
            who = verdict.device.hex()[:16]
            self._drop(out, "verdict", problem, f"{who} at {verdict.registry_height}")
            return False
        return True

    def _is_signed(self, verdict: Verdict, out: list[Action]) -> bool:
        validators = self.genesis.ledger_nodes
        problem = check_verdict_signatures(verdict, validators, self.signatures)
        if problem is not None:
            self._drop(out, "verdict", problem, verdict.device.hex()[:16])
            return False
        return True

    def _in_window(self, verdict: Verdict) -> bool:
        return is_registry_height_in_window(
            verdict.registry_height, self.tip.height + 1, self.params.assignment_window
        )

    def _hold_early(self, verdict: Verdict, out: list[Action]) -> None:
        """Another node committed a block we have not yet, and dispatched against it:
        keep the verdict (bounded) and take it again once we reach that height."""
        if verdict.registry_height > self.tip.height + EARLY_HEIGHTS:
            self._drop(out, "verdict", "future_registry", verdict.device.hex()[:16])
            return
        if len(self._early) >= MAX_EARLY_VERDICTS:
            self._drop(out, "verdict", "early_full", verdict.device.hex()[:16])
            return
        self._early.append(verdict)

    def _take_early_verdicts(self, out: list[Action]) -> None:
        ready = [v for v in self._early if v.registry_height <= self.tip.height]
        if ready:
            self._early = [v for v in self._early if v.registry_height > self.tip.height]
            for verdict in ready:
                self._take_verdict(verdict, out)

    def _decide(self, tx_id: bytes, votes: TxVotes) -> bool:
        """Decide the transaction if its votes allow; True when it left ``votes``."""
        # [REJECT] Devices disagree: we check it ourselves, and a forgery is rejected.
        if is_disputed(votes) and not self._settle(tx_id, votes):
            return True
        outcome = compute_outcome(votes, self.params.q)
        if outcome is None:
            return False
        # [REJECT] Accepted by a quorum, and picked for an audit: a forgery is rejected.
        if outcome.accepted and not votes.settled and not self._audit(tx_id, votes):
            return True
        del self.votes[tx_id]
        self.devices.record_outcome(*agreement(votes, outcome))
        if outcome.accepted:
            self.accepted[tx_id] = votes
        else:
            self.frauds.note_rejected(votes.tx)  # a late "valid" on it gets it checked
            self.reject_pending(tx_id, outcome.reason)
        return True

    def _settle(self, tx_id: bytes, votes: TxVotes) -> bool:
        """The devices disagree on ``tx_id``: check it ourselves (once per transaction).
        True when it passes (its "invalid" votes stop counting), False when it does not
        (it is rejected, and its "valid" votes were wrong)."""
        self.stats.settled += 1
        return self._check_ourselves(tx_id, votes)

    def _audit(self, tx_id: bytes, votes: TxVotes) -> bool:
        """Perhaps check a transaction q devices accepted, before any block takes it:
        with the audit probability of the lowest-reputation device that vouched for it
        (devices.audit_probability).  False when it was audited and found forged (it
        is then rejected)."""
        reputation = min(self.devices.reputation(device) for device in votes.valid)
        if self.rng.random() >= audit_probability(reputation, self.audit_rate):
            return True
        self.stats.audited += 1
        return self._check_ourselves(tx_id, votes)

    def _check_ourselves(self, tx_id: bytes, votes: TxVotes) -> bool:
        """One stateless check (a signature verification at most): True and settled when
        the transaction passes, False and rejected when it is a forgery."""
        reason = check_transaction_objective(votes.tx, self.chain_id)
        if reason is Reason.OK:
            votes.settled = True
            return True
        self._reject_forged(tx_id, votes, reason)
        return False

    def _reject_forged(self, tx_id: bytes, votes: TxVotes, reason: Reason) -> None:
        """``votes.tx`` fails a check that needs neither time nor state: reject it; the
        devices that judged it valid were wrong beyond doubt."""
        self.stats.forged += 1
        self.devices.record_outcome(*agreement(votes, Outcome(False, reason)))
        self.frauds.note_forged(votes.tx)
        for verdict in votes.valid.values():
            self._offer_fraud(verdict, votes.tx)
        self.reject_pending(tx_id, reason)

    def _offer_fraud(self, verdict: Verdict, tx: Transaction) -> None:
        """``verdict`` judged ``tx`` valid, and ``tx`` is a forgery: queue the proof for
        our next block (frauds.py), or count why it cannot be one."""
        problem = self.frauds.offer(
            verdict, tx, height=self.tip.height + 1, registry=self.registry,
            signatures=self.signatures,
        )  # fmt: skip
        if problem is not None:
            self.note_drop("fraud", problem, verdict.device.hex()[:16])

    def _dispute_accepted(
        self, tx_id: bytes, votes: TxVotes, verdict: Verdict, reason: int
    ) -> None:
        """An "invalid" vote on a transaction already accepted (a verdict that came after
        the q "valid" ones): settle it before a block takes it."""
        if votes.settled:
            self.devices.record_outcome((), (verdict.device,))
            return
        record_vote(votes, verdict, reason)
        if self._settle(tx_id, votes):
            self.devices.record_outcome((), (verdict.device,))

    def _forget_stale_verdicts(self, votes: TxVotes) -> None:
        """Valid votes whose registry is out of the window cannot justify the
        transaction any more; the device may vote again on a fresh batch.  Votes of
        banned devices count for nothing."""
        banned = self.registry.is_banned
        if any(not self._in_window(v) or banned(d) for d, v in votes.valid.items()):
            votes.valid = {
                d: v for d, v in votes.valid.items() if self._in_window(v) and not banned(d)
            }
        if any(banned(d) for d in votes.invalid):
            votes.invalid = {d: r for d, r in votes.invalid.items() if not banned(d)}

    def judge_again(self, tx_id: bytes) -> None:
        """An accepted transaction without q verdicts that can still justify it goes back
        to the devices (a new batch, a new ranking), if it is ours to dispatch."""
        votes = self.accepted.pop(tx_id, None)
        if votes is None:
            return
        self._forget_stale_verdicts(votes)
        votes.outstanding = 0
        self.votes[tx_id] = votes  # at the end: it expires a little later than its peers
        if self.peers.mine(tx_id, self._now):
            self.dispatcher.fresh.append(tx_id)

    def reject_pending(self, tx_id: bytes, reason: Reason) -> None:
        """Reject an admitted transaction.  If that leaves a hole in its sender's run of
        pending nonces, the later ones are held again (NONCE_GAP): the sender may yet
        fill the hole with another transaction.  A node that is not caught up holds a
        transaction the state refuses (OVERSPEND) instead of rejecting it."""
        if reason is Reason.OVERSPEND and not self.is_caught_up(self._now):
            self._hold_again(tx_id, Reason.CATCHING_UP)
            return
        entry = self.mempool.remove(tx_id)
        if entry is None:
            return
        self.votes.pop(tx_id, None)
        self.accepted.pop(tx_id, None)
        self._forget(tx_id)
        self._answer_rejected(entry, reason)
        sender, nonce = entry.tx.sender, entry.tx.nonce
        if nonce >= self.accounts.get(sender, EMPTY_ACCOUNT).nonce:
            for later in self.mempool.later_from_sender(sender, nonce):
                self._hold_again(later, Reason.NONCE_GAP)

    def _hold_again(self, tx_id: bytes, reason: Reason) -> None:
        """A pending transaction goes back to being held (and is judged anew if it is
        admitted again)."""
        entry = self.mempool.remove(tx_id)
        if entry is None:
            return
        self.votes.pop(tx_id, None)
        self.accepted.pop(tx_id, None)
        self._forget(tx_id)
        self.mempool.hold(entry, reason, self._now)
        self._answer_held(entry, reason)

    # ---- enrollment ---------------------------------------------------------------

    def _on_approval(
        self, key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
    ) -> None:
        try:
            approval = decode(payload, DeviceApproval)
        except DecodeError as exc:
            self._drop(out, "approval", f"decode_{exc.code.name.lower()}", exc.detail)
            return
        who = approval.device.hex()[:16]
        # [REJECT] For this chain, on its operator's own topic.
        if approval.chain_id != self.chain_id or approval.operator != key:
            self._drop(out, "approval", "topic_mismatch", who)
            return
        # [REJECT] Its operator is listed in genesis.
        if approval.operator not in self.enrollment.operators:
            self._drop(out, "approval", "not_operator", who)
            return
        # [IGNORE] Not later than the device's recorded or pending approval.
        latest = self.registry.latest_approval(approval.device)
        held = self.approvals.get(approval.device)
        if (latest is not None and approval.timestamp_ms <= latest.timestamp_ms) or (
            held is not None and approval.timestamp_ms <= held.timestamp_ms
        ):
            self._drop(out, "approval", "not_later", who)
            return
        # [IGNORE] Too many pending: the operator publishes it again.
        if held is None and len(self.approvals) >= MAX_PENDING_APPROVALS:
            self._drop(out, "approval", "approvals_full", who)
            return
        # [REJECT] Signed by its operator.
        if not is_signature_valid(approval):
            self._drop(out, "approval", "bad_signature", who)
            return
        self.approvals[approval.device] = approval

    def _enrollment_refusal(self, device: bytes) -> str | None:
        """Why the policy refuses to register ``device`` now, or None."""
        latest = self.registry.latest_approval(device)
        if latest is not None and not latest.approved:
            return "revoked"
        if self.enrollment.needs_approval and latest is None:
            return "not_approved"
        return None

    def _settle_approvals(self, records: Iterable[ApprovalRecord]) -> None:
        """After a block: forget pending approvals it made stale, and the pending
        registrations of devices it revoked."""
        for record in records:
            held = self.approvals.get(record.device)
            if held is not None and held.timestamp_ms <= record.timestamp_ms:
                del self.approvals[record.device]
            if not record.approved:
                self.hellos.pop(record.device, None)
                continue
            waiting = self.awaiting_approval.pop(record.device, None)
            if (
                waiting is not None
                and record.device not in self.registry
                and len(self.hellos) < MAX_PENDING_REGISTRATIONS
            ):
                self.hellos[record.device] = waiting

    def _await_approval(self, hello: DeviceHello) -> None:
        """Keep the latest hello of a device that is not approved (bounded: the oldest
        goes first; a device forgotten here says hello again when it reconnects)."""
        self.awaiting_approval.pop(hello.device, None)
        if len(self.awaiting_approval) >= MAX_AWAITING_APPROVAL:
            del self.awaiting_approval[next(iter(self.awaiting_approval))]
        self.awaiting_approval[hello.device] = hello

    def has_registration_work(self) -> bool:
        """Approvals to record, or hellos the policy lets a block register."""
        return bool(self.approvals) or bool(self.hellos)

    # ---- time ---------------------------------------------------------------------

    def _expire_transactions(self, now_ms: int) -> None:
        """Time out, while caught up: undecided transactions (NO_QUORUM), and those held
        HOLD_MS for a missing nonce (NONCE_GAP), counted from when the node last caught
        up, so a node back from a crash first learns what the others committed."""
        while self.votes:
            tx_id, votes = next(iter(self.votes.items()))
            if now_ms - max(votes.admitted_ms, self._caught_up_since) < self.params.tx_timeout_ms:
                break
            self.reject_pending(tx_id, Reason.NO_QUORUM)
        if now_ms < self._next_hold_scan:
            return
        self._next_hold_scan = now_ms + HOLD_SCAN_MS
        since = self._caught_up_since
        expired = [
            tx_id
            for tx_id, held in self.mempool.held.items()
            if held.reason is Reason.NONCE_GAP and now_ms - max(held.since_ms, since) >= HOLD_MS
        ]
        for tx_id in expired:
            held = self.mempool.release(tx_id)
            if held is not None:
                self._answer_rejected(held.entry, Reason.NONCE_GAP)

    # ---- blocks -------------------------------------------------------------------

    def on_block_committed(
        self, block: Block, transition: Transition, now_ms: int, actions: list[Action]
    ) -> None:
        """A block was decided (by consensus, or learned with its certificate), and
        ``transition`` is its checked state transition: store it, advance the state,
        settle its transactions, and publish it if we proposed it."""
        actions.append(CommitBlock(block, transition.changes))
        self.state = process_commit(self.state, block, transition)
        self.frauds.on_block(block.height + 1, self.registry)
        for device in transition.registered:
            self.hellos.pop(device, None)
        self._settle_approvals(transition.approvals)
        for tx in block.txs:
            tx_id = tx.id
            self.accepted.pop(tx_id, None)
            self.votes.pop(tx_id, None)
            entry = self.mempool.remove(tx_id)
            if entry is None and (held := self.mempool.release(tx_id)) is not None:
                entry = held.entry
            if entry is not None:
                self.receipts.note_if_mine(
                    entry.reply_to, tx_id, ReceiptStatus.COMMITTED, block.height, now_ms
                )
            self.recent_committed[tx_id] = block.height
        while len(self.recent_committed) > RECENT_COMMITTED:
            self.recent_committed.popitem(last=False)
        for sender in dict.fromkeys(tx.sender for tx in block.txs):  # block order
            # [REJECT] Transactions whose nonce the block used can never apply.
            used_below = self.accounts.get(sender, EMPTY_ACCOUNT).nonce
            for tx_id in self.mempool.pending_below(sender, used_below):
                self.reject_pending(tx_id, Reason.BAD_NONCE)
            self._offer_held(sender)  # what the block unblocked, or made impossible
        # Verdicts that fell out of the window: their transactions are judged again.
        for tx_id, votes in list(self.accepted.items()):
            self._forget_stale_verdicts(votes)
            if len(votes.valid) < self.params.q:
                self.judge_again(tx_id)
        self._take_early_verdicts(actions)
        self.stats.blocks += 1
        self.stats.committed += len(block.txs)
        if block.header.proposer == self.key.public:  # one publisher per block
            blocks_topic = topics.blocks(self.chain_id)
            json_topic = topics.blocks_json(self.chain_id)
            actions.append(Publish.on(Channel.BLOCKS, blocks_topic, encode(block)))
            actions.append(Publish.on(Channel.BLOCKS_JSON, json_topic, block_to_json(block)))
            actions.extend(
                get_account_summaries(
                    block, self.accounts, self.vesting, self.devices.records, self.key.public
                )
            )

    # ---- receipts and bookkeeping ----------------------------------------------------

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

    def _drop(self, actions: list[Action], source: str, reason: str, detail: str) -> None:
        self.stats.dropped[f"{source}.{reason}"] += 1
        actions.append(Dropped(source, reason, detail))

    def note_drop(self, source: str, reason: str, detail: str) -> None:
        """A drop noticed where no action list is at hand (consensus callbacks); it goes
        out with the event's other actions."""
        self.stats.dropped[f"{source}.{reason}"] += 1
        self._drops.append(Dropped(source, reason, detail))
