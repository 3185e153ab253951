"""Transactions admitted but not yet decided or committed.

Admission is cheap and stateful: everything a device would check except the signature
(so devices are not asked to judge what the ledger can refuse in microseconds), plus
the sender's next nonce and spendable balance counting what it already has pending.
Nonces are strictly sequential per sender; when one is rejected later, the sender's
later pending transactions can never apply and are rejected with NONCE_GAP.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from micromine.ledger_node.genesis import ChainParams
from micromine.ledger_node.state import EMPTY_ACCOUNT, Account
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Transaction
from micromine.protocol.validation import check_transaction_fields


@dataclass(frozen=True, slots=True)
class PendingTx:
    tx: Transaction
    tx_id: bytes
    reply_to: bytes
    admitted_ms: int


class Mempool:
    """Does not check signatures, and does not decide validity: the tally does."""

    def __init__(self, chain_id: str, params: ChainParams) -> None:
        self.chain_id = chain_id
        self.params = params
        self.by_id: dict[bytes, PendingTx] = {}
        self._by_sender: dict[bytes, dict[int, bytes]] = {}  # sender -> nonce -> tx id
        self._spend: dict[bytes, int] = {}  # sender -> pending amount + fee

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
        # [SHED] Limits that protect the node's memory.
        if len(pending) >= self.params.max_pending_per_sender:
            return Reason.SENDER_LIMIT
        if len(self.by_id) >= self.params.max_pending:
            return Reason.MEMPOOL_FULL
        return Reason.OK

    def add(self, entry: PendingTx) -> None:
        tx = entry.tx
        self.by_id[entry.tx_id] = entry
        self._by_sender.setdefault(tx.sender, {})[tx.nonce] = entry.tx_id
        self._spend[tx.sender] = self._spend.get(tx.sender, 0) + tx.amount + tx.fee

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
        return entry

    def later_from_sender(self, sender: bytes, nonce: int) -> list[bytes]:
        """Ids of the sender's pending transactions after ``nonce``, in nonce order."""
        nonces = self._by_sender.get(sender, {})
        return [nonces[n] for n in sorted(nonces) if n > nonce]
