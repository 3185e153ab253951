"""Transactions admitted but not yet decided or committed.

Admission is cheap and stateful: everything a device would check except the signature
(so devices are not asked to judge what the ledger can refuse in microseconds), plus
the sender's next nonce and spendable balance counting what it already has pending.
Nonces are strictly sequential per sender; when one is rejected later, the sender's
later pending transactions can never apply and are rejected with NONCE_GAP.

Memory is bounded four ways, each shedding with a receipt reason (never silently) and
counted in ``shed``: per sender, at most ``max_pending_per_sender`` transactions and
``max_sender_bytes``; in total, at most ``max_pending`` and ``max_bytes``.  A
transaction's bytes are its encoding plus ENTRY_OVERHEAD, an estimate of what the node
keeps beside it (the entry, its votes, the indexes), so the byte caps bound what the
process holds, not only what the wire carried.  Every node computes the same sizes, so
nodes that admitted the same transactions shed the same ones.
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
        self._by_sender: dict[bytes, dict[int, bytes]] = {}  # sender -> nonce -> tx id
        self._spend: dict[bytes, int] = {}  # sender -> pending amount + fee
        self.bytes = 0  # footprint of everything pending
        self._sender_bytes: dict[bytes, int] = {}
        self.shed: Counter[str] = Counter()  # admissions refused for memory, by reason

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self.by_id

    def check_admission(
        self, tx: Transaction, now_ms: int, accounts: Mapping[bytes, Account]
    ) -> Reason:
        reason = check_transaction_fields(tx, self.chain_id, now_ms, self.params.min_fee)
        if reason is not Reason.OK:
            return reason
        account = accounts.get(tx.sender, EMPTY_ACCOUNT)
        pending = self._by_sender.get(tx.sender, {})
        # [REJECT] The nonce is the sender's next one, counting its pending transactions.
        if tx.nonce != account.nonce + len(pending):
            return Reason.BAD_NONCE
        # [REJECT] The sender can pay, counting what its pending transactions spend.
        if tx.amount + tx.fee > account.balance - self._spend.get(tx.sender, 0):
            return Reason.OVERSPEND
        # [SHED] Limits that protect the node's memory: per sender, then in total.
        size = compute_footprint(tx)
        if (
            len(pending) >= self.params.max_pending_per_sender
            or self._sender_bytes.get(tx.sender, 0) + size > self.max_sender_bytes
        ):
            return self._shed(Reason.SENDER_LIMIT)
        if len(self.by_id) >= self.params.max_pending or self.bytes + size > self.max_bytes:
            return self._shed(Reason.MEMPOOL_FULL)
        return Reason.OK

    def _shed(self, reason: Reason) -> Reason:
        self.shed[reason.name.lower()] += 1
        return reason

    def add(self, entry: PendingTx) -> None:
        tx = entry.tx
        self.by_id[entry.tx_id] = entry
        self._by_sender.setdefault(tx.sender, {})[tx.nonce] = entry.tx_id
        self._spend[tx.sender] = self._spend.get(tx.sender, 0) + tx.amount + tx.fee
        size = compute_footprint(tx)
        self.bytes += size
        self._sender_bytes[tx.sender] = self._sender_bytes.get(tx.sender, 0) + size

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
        size = compute_footprint(tx)
        self.bytes -= size
        if nonces:
            self._sender_bytes[tx.sender] -= size
        else:
            del self._sender_bytes[tx.sender]
        return entry

    def later_from_sender(self, sender: bytes, nonce: int) -> list[bytes]:
        """Ids of the sender's pending transactions after ``nonce``, in nonce order."""
        nonces = self._by_sender.get(sender, {})
        return [nonces[n] for n in sorted(nonces) if n > nonce]
