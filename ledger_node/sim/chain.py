"""The simulated chain's fixed cast: validator, device and wallet keys, the genesis, and
the transactions a run submits.

Everything is derived from fixed labels and cached per process (key derivation and
signing are the expensive part of setting up a run), so every run of every seed shares
one genesis and one pool: a seed changes the faults, never the chain.
"""

import dataclasses
import functools

from micromine.protocol.codec import sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.genesis import ChainParams, Genesis
from micromine.protocol.messages import Transaction

CHAIN_ID = "simnet-1"
GENESIS_MS = 1_700_000_000_000  # simulated time 0, as a timestamp
DEVICES = 5  # k = 3 of them judge each batch; one may be down
POOL_SENDERS = 16  # the wallet's senders ...
POOL_NONCES = 8  # ... each with this many transfers, consecutive nonces from 0
POOL_SIZE = POOL_SENDERS * POOL_NONCES  # transfers a run may submit
GROUP = 4  # senders taking turns at a time: a sender's next nonce follows 4 submissions on
FORGED_SIZE = 8  # badly signed transfers, for Byzantine proposals
BALANCE = 1_000
EXPIRY_MS = GENESIS_MS + 10 * 86_400_000

# Short intervals so that a run of a few simulated minutes holds many blocks.
PARAMS = ChainParams(
    k=3,
    q=2,
    batch_size=16,
    block_interval_ms=200,
    max_block_txs=32,
    batch_timeout_ms=1_500,
    tx_timeout_ms=60_000,
    device_timeout_ms=6_000,
    recheck_tx_signatures=1,
)


def _key(label: str, index: int) -> KeyPair:
    return KeyPair(sha256(f"micromine-sim/{label}/{index}".encode()))


@functools.cache
def validator_keys(count: int) -> tuple[KeyPair, ...]:
    return tuple(_key("validator", i) for i in range(count))


@functools.cache
def validator_publics(count: int) -> tuple[bytes, ...]:
    return tuple(key.public for key in validator_keys(count))


@functools.cache
def device_keys() -> tuple[KeyPair, ...]:
    return tuple(_key("device", i) for i in range(DEVICES))


@functools.cache
def sender_keys() -> tuple[KeyPair, ...]:
    return tuple(_key("sender", i) for i in range(POOL_SENDERS + FORGED_SIZE))


@functools.cache
def genesis(validators: int) -> Genesis:
    recipient = sha256(b"micromine-sim/recipient")
    balances = sorted([(key.public, BALANCE) for key in sender_keys()] + [(recipient, 1)])
    return Genesis(
        chain_id=CHAIN_ID,
        timestamp_ms=GENESIS_MS,
        ledger_nodes=tuple(sorted(validator_publics(validators))),
        balances=tuple(balances),
        params=PARAMS,
        devices=tuple(sorted(key.public for key in device_keys())),
    )


def _transfer(sender: KeyPair, amount: int, nonce: int = 0) -> Transaction:
    recipient = sha256(b"micromine-sim/recipient")
    tx = Transaction(CHAIN_ID, sender.public, recipient, amount, 1, nonce, EXPIRY_MS, "sim")
    return sign(tx, sender)


@functools.cache
def tx_pool() -> tuple[Transaction, ...]:
    """Valid transfers, in the order a run submits them: the senders in groups of
    GROUP taking turns, each sender's nonces in order (0, 1, ... POOL_NONCES - 1), so
    that a lost or late message leaves a sender's later nonces waiting for an earlier
    one (what the ledger must hold, not refuse)."""
    senders = sender_keys()[:POOL_SENDERS]
    pool = []
    for first in range(0, POOL_SENDERS, GROUP):
        for nonce in range(POOL_NONCES):
            for index in range(first, first + GROUP):
                pool.append(_transfer(senders[index], 1 + index + nonce, nonce))
    return tuple(pool)


@functools.cache
def replay_of(tx: Transaction) -> Transaction:
    """Another transfer with ``tx``'s sender and nonce: once ``tx`` is committed, the
    ledger must finally reject it (BAD_NONCE), never commit it."""
    senders = {key.public: key for key in sender_keys()}
    return _transfer(senders[tx.sender], tx.amount + 500, tx.nonce)


@functools.cache
def forged_pool() -> tuple[Transaction, ...]:
    """Transfers whose signature does not verify: no honest node may commit one."""
    return tuple(
        dataclasses.replace(tx, signature=bytes(b ^ 0x5A for b in tx.signature))
        for tx in (_transfer(key, 7) for key in sender_keys()[POOL_SENDERS:])
    )
