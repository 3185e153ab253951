"""Stateless transaction validity: what a device checks, and what a ledger re-checks.

``check_transaction`` is the agent's whole job for one transaction.  It needs no ledger
state, so a device can do it alone; the ledger adds the stateful rules (nonce, balance)
in ledger_node/.  The order of checks is part of the protocol: the first failing rule
gives the reason code, so honest devices agree on the reason as well as the verdict.
"""

from micromine.protocol.codec import decode, is_signature_valid
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import MAX_AMOUNT, MAX_FEE, MAX_TX_BYTES
from micromine.protocol.messages import Transaction


def check_transaction(tx: Transaction, chain_id: str, now_ms: int, min_fee: int = 0) -> Reason:
    """The first rule ``tx`` breaks, or Reason.OK."""
    reason = check_transaction_fields(tx, chain_id, now_ms, min_fee)
    if reason is not Reason.OK:
        return reason
    # [REJECT] The sender signed it, for this chain and kind (the expensive check, last).
    if not is_signature_valid(tx):
        return Reason.BAD_SIGNATURE
    return Reason.OK


def check_transaction_objective(tx: Transaction, chain_id: str) -> Reason:
    """The first rule ``tx`` breaks whatever the time, the state or the chain's minimum
    fee, or Reason.OK: what any node can establish about the bytes alone, the same way
    forever.  A device that judged ``tx`` valid while this fails was wrong beyond
    doubt (a fraud proof); expiry (clocks differ) and the minimum fee (devices may not
    know it) are left out for that reason.  Same order as check_transaction."""
    # [REJECT] For this chain, a positive amount in bounds, a fee not above MAX_FEE, not
    # a self-transfer.
    reason = check_transaction_fields(tx, chain_id, now_ms=0, min_fee=0)
    if reason is not Reason.OK:
        return reason
    # [REJECT] The sender signed it.
    if not is_signature_valid(tx):
        return Reason.BAD_SIGNATURE
    return Reason.OK


def check_transaction_fields(
    tx: Transaction, chain_id: str, now_ms: int, min_fee: int = 0
) -> Reason:
    """Every stateless rule except the signature: cheap enough for a ledger's admission."""
    # [REJECT] The transaction is for this chain.
    if tx.chain_id != chain_id:
        return Reason.WRONG_CHAIN
    # [REJECT] The amount is positive and within bounds.
    if not 1 <= tx.amount <= MAX_AMOUNT:
        return Reason.BAD_AMOUNT
    # [REJECT] The fee is within bounds.
    if not min_fee <= tx.fee <= MAX_FEE:
        return Reason.BAD_FEE
    # [REJECT] Sender and recipient differ (a self-transfer only burns a fee and a nonce).
    if tx.sender == tx.recipient:
        return Reason.SELF_TRANSFER
    # [REJECT] The transaction has not expired.
    if tx.expiry_ms < now_ms:
        return Reason.EXPIRED
    return Reason.OK


def decode_transaction(item: bytes) -> Transaction | Reason:
    """A submitted item as a Transaction, or why it is not one (OVERSIZED or MALFORMED)."""
    if len(item) > MAX_TX_BYTES:
        return Reason.OVERSIZED
    try:
        return decode(item, Transaction)
    except DecodeError:
        return Reason.MALFORMED
