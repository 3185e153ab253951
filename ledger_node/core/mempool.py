"""Transactions admitted but not yet decided or committed, and those held back.

Admission is cheap and stateful: everything a device would check except the signature
(so devices are not asked to judge what the ledger can refuse in microseconds), plus
the sender's next nonce and spendable balance counting what it already has pending.
Nonces are strictly sequential per sender, so what is pending for a sender is always a
run of nonces that starts at its committed nonce.

A transaction that cannot join that run *yet* is held, not refused (``check_admission``
says which), because a refusal is final and the sender would be stuck:

    held NONCE_GAP    an earlier nonce is missing here (lost on the way, or rejected):
                      it waits for it, ``hold_ms`` at most once the node is caught up
    held BAD_NONCE    another pending transaction has its nonce: it waits for that
                      one's fate (committed: then it is a used nonce, rejected)
    held CATCHING_UP  the node is behind the chain: nothing that depends on the
                      chain state (nonce beyond the committed one, balance) is judged

The core takes held transactions out and offers them again whenever their sender's
state changes (admission.py, commit.py).  Held transactions are not persisted: a restarted node has
forgotten them, and the sender, told HELD (not final), submits again.

Memory is bounded four ways, each shedding with a receipt reason (never silently) and
counted in ``shed``, pending and held together: per sender, at most
``max_pending_per_sender`` transactions and ``max_sender_bytes``; in total, at most
``max_pending`` and ``max_bytes``.  A transaction's bytes are its encoding plus
ENTRY_OVERHEAD, an estimate of what the node keeps beside it (the entry, its votes, the
indexes), so the byte caps bound what the process holds, not only what the wire
carried.  Every node computes the same sizes, so nodes that admitted the same
transactions shed the same ones.
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from micromine.ledger_node.chain.state import EMPTY_ACCOUNT, Account
from micromine.protocol.codec import encode
from micromine.protocol.genesis import ChainParams
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Transaction
from micromine.protocol.validation import check_transaction_fields

# Bytes a pending transaction costs besides its encoding: its decoded object, the entry,
# its votes record and the indexes (tracemalloc: about 1.1 KiB for a 155-byte one).
ENTRY_OVERHEAD = 1024
# Above what max_pending and max_pending_per_sender allow of typical transactions, so the
# counts bind first for those and the bytes for large ones.
MAX_PENDING_BYTES = 256 * 1024 * 1024
MAX_SENDER_BYTES = 1280 * 1024


def compute_footprint(tx: Transaction) -> int:
    return len(encode(tx)) + ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class PendingTx:
    tx: Transaction
    tx_id: bytes
    reply_to: bytes
    admitted_ms: int


@dataclass(slots=True)
class HeldTx:
    """A transaction kept back from the pending run: what it waits on, since when."""

    entry: PendingTx
    reason: Reason  # NONCE_GAP, BAD_NONCE or CATCHING_UP (see the module docstring)
    since_ms: int


@dataclass(frozen=True, slots=True)
class Admission:
    """``check_admission``'s answer: admit (reason OK), hold for ``reason``, or refuse."""

    reason: Reason
    hold: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


ADMIT = Admission(Reason.OK)


class Mempool:
    """Does not check signatures, and does not decide validity: the tally does."""

    def __init__(
        self,
        chain_id: str,
        params: ChainParams,
        *,
        max_bytes: int = MAX_PENDING_BYTES,
        max_sender_bytes: int = MAX_SENDER_BYTES,
    ) -> None:
        self.chain_id = chain_id
        self.params = params
        self.max_bytes = max_bytes
        self.max_sender_bytes = max_sender_bytes
        self.by_id: dict[bytes, PendingTx] = {}
        self.held: dict[bytes, HeldTx] = {}  # by tx id, in the order they were held
        self._by_sender: dict[bytes, dict[int, bytes]] = {}  # sender -> nonce -> tx id
        self._held_by_sender: dict[bytes, set[bytes]] = {}  # sender -> held tx ids
        self._spend: dict[bytes, int] = {}  # sender -> pending amount + fee
        self.bytes = 0  # footprint of everything pending or held
        self._sender_bytes: dict[bytes, int] = {}
        self.shed: Counter[str] = Counter()  # admissions refused for memory, by reason

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self.by_id

    def next_nonce(self, sender: bytes, accounts: Mapping[bytes, Account]) -> int:
        """The nonce this node needs next from ``sender``: its committed nonce plus its
        pending run."""
        account = accounts.get(sender, EMPTY_ACCOUNT)
        return account.nonce + len(self._by_sender.get(sender, ()))

    def check_admission(
        self,
        tx: Transaction,
        now_ms: int,
        accounts: Mapping[bytes, Account],
        *,
        caught_up: bool = True,
    ) -> Admission:
        """Admit, hold or refuse ``tx`` (not pending or held here).  ``caught_up``: the
        node holds the chain's latest committed state (ledger.LedgerCore.is_caught_up);
        if not, it refuses nothing on state it may not have."""
        reason = check_transaction_fields(tx, self.chain_id, now_ms, self.params.min_fee)
        if reason is not Reason.OK:
            return Admission(reason)
        account = accounts.get(tx.sender, EMPTY_ACCOUNT)
        # [REJECT] The nonce is not used yet: committed nonces only grow, so a nonce used
        # at our height is used at every later one, however far behind we are.
        if tx.nonce < account.nonce:
            return Admission(Reason.BAD_NONCE)
        # [SHED] Limits that protect the node's memory: per sender, then in total
        # (pending and held together).
        size = compute_footprint(tx)
        pending = self._by_sender.get(tx.sender, {})
        held = len(self._held_by_sender.get(tx.sender, ()))
        if (
            len(pending) + held >= self.params.max_pending_per_sender
            or self._sender_bytes.get(tx.sender, 0) + size > self.max_sender_bytes
        ):
            return Admission(self._shed(Reason.SENDER_LIMIT))
        if (
            len(self.by_id) + len(self.held) >= self.params.max_pending
            or self.bytes + size > self.max_bytes
        ):
            return Admission(self._shed(Reason.MEMPOOL_FULL))
        # [HOLD] Behind the chain: a later nonce or a balance we may not know yet.
        if not caught_up:
            return Admission(Reason.CATCHING_UP, hold=True)
        expected = account.nonce + len(pending)
        # [HOLD] Another pending transaction has this nonce: its fate decides.
        if tx.nonce < expected:
            return Admission(Reason.BAD_NONCE, hold=True)
        # [HOLD] An earlier nonce is missing here: wait for it.
        if tx.nonce > expected:
            return Admission(Reason.NONCE_GAP, hold=True)
        # [REJECT] The sender can pay, counting what its pending transactions spend.
        if tx.amount + tx.fee > account.balance - self._spend.get(tx.sender, 0):
            return Admission(Reason.OVERSPEND)
        return ADMIT

    def _shed(self, reason: Reason) -> Reason:
        self.shed[reason.name.lower()] += 1
        return reason

    def add(self, entry: PendingTx) -> None:
        tx = entry.tx
        self.by_id[entry.tx_id] = entry
        self._by_sender.setdefault(tx.sender, {})[tx.nonce] = entry.tx_id
        self._spend[tx.sender] = self._spend.get(tx.sender, 0) + tx.amount + tx.fee
        self._count_bytes(tx, compute_footprint(tx))

    def remove(self, tx_id: bytes) -> PendingTx | None:
        entry = self.by_id.pop(tx_id, None)
        if entry is None:
            return None
        tx = entry.tx
        nonces = self._by_sender[tx.sender]
        del nonces[tx.nonce]
        if not nonces:
            del self._by_sender[tx.sender]
        remaining = self._spend[tx.sender] - tx.amount - tx.fee
        if remaining:
            self._spend[tx.sender] = remaining
        else:
            del self._spend[tx.sender]
        self._count_bytes(tx, -compute_footprint(tx))
        return entry

    def hold(self, entry: PendingTx, reason: Reason, since_ms: int) -> None:
        self.held[entry.tx_id] = HeldTx(entry, reason, since_ms)
        self._held_by_sender.setdefault(entry.tx.sender, set()).add(entry.tx_id)
        self._count_bytes(entry.tx, compute_footprint(entry.tx))

    def release(self, tx_id: bytes) -> HeldTx | None:
        """Take a held transaction out (to offer it again, or to forget it)."""
        held = self.held.pop(tx_id, None)
        if held is None:
            return None
        sender = held.entry.tx.sender
        ids = self._held_by_sender[sender]
        ids.discard(tx_id)
        if not ids:
            del self._held_by_sender[sender]
        self._count_bytes(held.entry.tx, -compute_footprint(held.entry.tx))
        return held

    def held_from(self, sender: bytes) -> list[HeldTx]:
        """The sender's held transactions, in nonce order (then the longest held first)."""
        held = [self.held[i] for i in self._held_by_sender.get(sender, ())]
        held.sort(key=lambda h: (h.entry.tx.nonce, h.since_ms, h.entry.tx_id))
        return held

    def held_senders(self) -> list[bytes]:
        return list(self._held_by_sender)

    def _count_bytes(self, tx: Transaction, size: int) -> None:
        self.bytes += size
        total = self._sender_bytes.get(tx.sender, 0) + size
        if total:
            self._sender_bytes[tx.sender] = total
        else:
            del self._sender_bytes[tx.sender]

    def later_from_sender(self, sender: bytes, nonce: int) -> list[bytes]:
        """Ids of the sender's pending transactions after ``nonce``, in nonce order."""
        nonces = self._by_sender.get(sender, {})
        return [nonces[n] for n in sorted(nonces) if n > nonce]

    def pending_below(self, sender: bytes, nonce: int) -> list[bytes]:
        """Ids of the sender's pending transactions before ``nonce``, in nonce order."""
        nonces = self._by_sender.get(sender, {})
        return [nonces[n] for n in sorted(nonces) if n < nonce]
