"""Wire tags and transaction reason codes: stable numbers shared with firmware."""

from enum import IntEnum


class Kind(IntEnum):
    """First element of every encoded message; also the kind byte in signed bytes."""

    TRANSACTION = 1
    SUBMISSION = 2
    WORK_BATCH = 3
    VERDICT = 4
    BLOCK_HEADER = 5
    BLOCK = 6
    DEVICE_HELLO = 7
    HEARTBEAT = 8
    DEVICE_STATUS = 9
    RECEIPTS = 10
    COMMIT = 11  # signature kind only: a ledger node's commit signature over a header hash
    PROPOSAL = 12
    PREVOTE = 13
    PRECOMMIT = 14
    SYNC_REQUEST = 15
    ASSIGNMENT = 16  # a ledger node's signed assignment of a batch (inside WorkBatch, Verdict)
    DEVICE_APPROVAL = 17  # an operator approves or revokes a device (protocol/enrollment.py)
    FRAUD_REPORT = 18  # anyone's report of a device's proven lie (protocol/block.py)
    # Signature kinds only, never messages.  Numbered apart from the message kinds so that
    # new message kinds can keep counting up from 18 without colliding with them.
    LOGIN = 64  # a client's broker login token (protocol/auth.py)


SIGNATURE_ONLY = frozenset({Kind.COMMIT, Kind.LOGIN})
"""Kinds used only in signed bytes: the codec never accepts them as a message's tag."""


class Reason(IntEnum):
    """Why a transaction is not valid.  OK (0) in a verdict means "valid".

    Agents may return any of MALFORMED..BAD_FEE; the ledger adds the stateful and
    operational reasons.  Unknown codes in a verdict are treated as "invalid, other".
    """

    OK = 0
    MALFORMED = 1  # bytes are not a well-formed transaction
    OVERSIZED = 2  # more than limits.MAX_TX_BYTES
    BAD_SIGNATURE = 3
    WRONG_CHAIN = 4
    EXPIRED = 5
    BAD_AMOUNT = 6  # amount is 0 or above limits.MAX_AMOUNT
    BAD_FEE = 7  # fee below the chain's minimum or above limits.MAX_FEE
    OVERSPEND = 8  # amount + fee exceeds the sender's spendable balance
    BAD_NONCE = 9  # nonce already used (in a HELD receipt: another pending tx has it)
    NONCE_GAP = 10  # an earlier nonce of this sender is missing (never came, or rejected)
    MEMPOOL_FULL = 11  # shed: the ledger's mempool is at its limit
    SENDER_LIMIT = 12  # shed: too many pending transactions from this sender
    NO_QUORUM = 13  # devices never reached q matching verdicts in time
    SELF_TRANSFER = 14  # sender and recipient are the same account
    # Only in a HELD receipt: the ledger node is behind the chain (or has just started),
    # so it judges nothing that depends on the chain state until it has caught up.
    CATCHING_UP = 15
    OTHER = 255


class ReceiptStatus(IntEnum):
    """A receipt's status (docs/PROTOCOL.md section 8: which are final, who sends them)."""

    PENDING = 0  # admitted to the mempool; value is 0.  Not final
    COMMITTED = 1  # value is the block height.  Final
    REJECTED = 2  # value is a Reason.  Final: the node has forgotten the transaction
    # Not admitted yet, kept by the node; value is the Reason it waits on (NONCE_GAP: an
    # earlier nonce; BAD_NONCE: another pending transaction's fate; CATCHING_UP: the
    # chain).  Not final.  Always carries the receipt's detail (height, next nonce).
    HELD = 3


FINAL_STATUSES = frozenset({ReceiptStatus.COMMITTED, ReceiptStatus.REJECTED})
# Rejections that depend on the chain state: their receipts name the committed height
# the state was read at and the sender's next nonce there (messages.Receipt's detail).
STATE_REASONS = frozenset({Reason.OVERSPEND, Reason.BAD_NONCE, Reason.NONCE_GAP})
