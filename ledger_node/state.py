"""Account state and the state transition, as small pure functions.

    process_transaction(view, tx, block_time)  -> Reason   (changes ``view`` only if OK)
    process_rewards(view, rewards)
    compute_accounts_root(accounts)            -> Merkle root of the accounts
    compute_registry_root(registered)          -> Merkle root of the device registry
    compute_state_root(accounts_root, registry_root)

The chain state is the accounts and the device registry (registry.py: device key ->
the height of the block that registered it).  The state root commits to both as the
RFC 6962 inner node over their two roots, so a proof about an account is a Merkle path
to ``accounts_root`` plus the sibling ``registry_root`` (and the other way round).

A block's transactions are applied to a ``StateView``: an overlay of changed accounts
over the committed ones, so a rejected block leaves no trace and committing a block
writes only what it changed.  Signatures are *not* checked here: that is the devices'
work, attested by the verdicts in the block.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from micromine.protocol import cbor
from micromine.protocol.block import Reward
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import MAX_UINT
from micromine.protocol.merkle import merkle_root, node_hash
from micromine.protocol.messages import Transaction


@dataclass(frozen=True, slots=True)
class Account:
    balance: int = 0
    nonce: int = 0  # number of committed transactions sent from this account


EMPTY_ACCOUNT = Account()


class StateView:
    """Committed accounts plus uncommitted changes; ``changes`` is the block's diff."""

    __slots__ = ("base", "changes")

    def __init__(self, base: Mapping[bytes, Account]) -> None:
        self.base = base
        self.changes: dict[bytes, Account] = {}

    def get(self, account: bytes) -> Account:
        found = self.changes.get(account)
        if found is not None:
            return found
        return self.base.get(account, EMPTY_ACCOUNT)

    def set(self, account: bytes, value: Account) -> None:
        self.changes[account] = value


def check_transaction_against_state(view: StateView, tx: Transaction, block_time: int) -> Reason:
    """The stateful rules; the first one broken, or OK."""
    sender = view.get(tx.sender)
    # [REJECT] The transaction has not expired at the block's time.
    if tx.expiry_ms < block_time:
        return Reason.EXPIRED
    # [REJECT] The nonce is the sender's next one.
    if tx.nonce != sender.nonce:
        return Reason.BAD_NONCE
    # [REJECT] The sender can pay amount and fee.
    if tx.amount + tx.fee > sender.balance:
        return Reason.OVERSPEND
    # [REJECT] The recipient's balance stays representable.
    if view.get(tx.recipient).balance + tx.amount > MAX_UINT:
        return Reason.OTHER
    return Reason.OK


def process_transaction(view: StateView, tx: Transaction, block_time: int) -> Reason:
    """Apply ``tx`` to ``view`` if it passes the stateful rules.  The fee leaves the
    sender here and reaches devices through ``process_rewards``."""
    reason = check_transaction_against_state(view, tx, block_time)
    if reason is not Reason.OK:
        return reason
    sender = view.get(tx.sender)
    view.set(tx.sender, Account(sender.balance - tx.amount - tx.fee, sender.nonce + 1))
    recipient = view.get(tx.recipient)
    view.set(tx.recipient, Account(recipient.balance + tx.amount, recipient.nonce))
    return Reason.OK


def process_rewards(view: StateView, rewards: Iterable[Reward]) -> None:
    for reward in rewards:
        account = view.get(reward.device)
        view.set(reward.device, Account(account.balance + reward.amount, account.nonce))


def compute_accounts_root(accounts: Mapping[bytes, Account]) -> bytes:
    """Merkle root over [address, balance, nonce] leaves in address order."""
    leaves = [
        cbor.encode([address, account.balance, account.nonce])
        for address, account in sorted(accounts.items())
    ]
    return merkle_root(leaves)


def compute_registry_root(registered: Mapping[bytes, int]) -> bytes:
    """Merkle root over [device, registration height] leaves in device order."""
    leaves = [cbor.encode([device, height]) for device, height in sorted(registered.items())]
    return merkle_root(leaves)


def compute_state_root(accounts_root: bytes, registry_root: bytes) -> bytes:
    """node_hash(accounts_root, registry_root) = SHA-256(0x01 | accounts_root | registry_root)."""
    return node_hash(accounts_root, registry_root)


def merged(base: Mapping[bytes, Account], changes: Mapping[bytes, Account]) -> dict[bytes, Account]:
    result = dict(base)
    result.update(changes)
    return result
