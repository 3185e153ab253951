"""Every size, count and range the protocol enforces, in one place.

Decoders check these before doing any work proportional to the input, so a hostile
peer can make a node spend at most O(limit) on one message.  docs/PROTOCOL.md repeats
them; tests/test_vectors.py checks that the two agree.
"""

from typing import Final

# --- integers -------------------------------------------------------------------------
MAX_UINT: Final = 2**63 - 1  # every unsigned field fits a signed 64-bit C integer
MAX_TIMESTAMP_MS: Final = 2**53  # milliseconds since the Unix epoch; exact in a double

# --- identifiers ----------------------------------------------------------------------
MAX_CHAIN_ID_LEN: Final = 32  # bytes of [a-z0-9-]; must also be a valid MQTT topic level
PUBLIC_KEY_LEN: Final = 32  # Ed25519 public key
SIGNATURE_LEN: Final = 64  # Ed25519 signature
HASH_LEN: Final = 32  # SHA-256
REPLY_TO_LEN: Final = 16  # a submitter's random receipt channel

# --- consensus ------------------------------------------------------------------------
MAX_ROUND: Final = 2**31  # far beyond any real round; keeps round arithmetic small

# --- transactions ---------------------------------------------------------------------
MAX_MEMO_BYTES: Final = 64  # UTF-8 bytes of the memo
MAX_TX_BYTES: Final = 512  # a whole encoded transaction; larger is "oversized"
MAX_AMOUNT: Final = 10**15  # semantic bound checked by validators (reason BAD_AMOUNT)
MAX_FEE: Final = 10**12  # semantic bound checked by validators (reason BAD_FEE)

# --- containers -----------------------------------------------------------------------
MAX_SUBMISSION_TXS: Final = 1024
MAX_SUBMISSION_ITEM_BYTES: Final = 4096  # items above MAX_TX_BYTES are reported "oversized"
MAX_BATCH_TXS: Final = 256
MAX_BLOCK_TXS: Final = 8192
MAX_BLOCK_VERDICTS: Final = 8192
MAX_BLOCK_REWARDS: Final = 4096
MAX_BLOCK_REGISTRATIONS: Final = 64  # DeviceHellos registered by one block
MAX_BLOCK_FRAUDS: Final = 16  # fraud proofs (devices banned) in one block
MAX_BLOCK_APPROVALS: Final = 64  # DeviceApprovals recorded by one block
MAX_CERTIFICATE_SIGNATURES: Final = 256
MAX_RECEIPT_ITEMS: Final = 8192
MAX_AGENT_VERSION_LEN: Final = 32
MAX_HEARTBEAT_BUSY: Final = 1024  # a heartbeat's count of unfinished batches
MAX_DEVICE_WINDOW: Final = 16  # batches a device takes at once from one ledger node
# Deepest valid message: Proposal > Block > frauds > proof > verdict > judgements > judgement.
MAX_DEPTH: Final = 7

# --- whole messages, in bytes, checked before decoding --------------------------------
MAX_MESSAGE_BYTES: Final = {
    "transaction": MAX_TX_BYTES,
    "submission": 1_048_576,
    "work_batch": 131_072,
    "verdict": 65_536,
    "block": 16_777_216,
    "device_hello": 1_024,
    "heartbeat": 1_024,
    "device_status": 1_024,
    "receipts": 1_048_576,
    "block_header": 1_024,
    "proposal": 16_777_216,
    "prevote": 1_024,
    "precommit": 1_024,
    "sync_request": 1_024,
    "device_approval": 1_024,
    "assignment": 1_024,
    "fraud_report": 65_536 + 1_024,  # a verdict and a transaction
}
MAX_ANY_MESSAGE_BYTES: Final = max(MAX_MESSAGE_BYTES.values())
