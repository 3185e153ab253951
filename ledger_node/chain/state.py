"""Chain state and the state transition, as small pure functions.

    process_vesting(view, height, vesting_blocks)          release rewards now due
    process_transaction(view, tx, block_time)  -> Reason   (changes ``view`` only if OK)
    process_rewards(view, rewards, height, vesting_blocks) pay a block's rewards (vesting)
    process_bans(view, devices)                            burn banned devices' unvested
    compute_accounts_root(accounts), compute_registry_root(registered),
    compute_bans_root(banned), compute_vesting_root(vesting)
    compute_state_root(accounts_root, registry_root, bans_root, vesting_root)

The chain state is:

* the accounts: address -> (balance, nonce); ``balance`` is what the account can spend;
* the device registry (registry.py): device key -> the height that registered it;
* the bans: device key -> the height of the block whose fraud proof banned it;
* the vesting rewards: device key -> (earned height, amount) entries.  A reward earned in
  the block at height h is not spendable until the block at h + ``reward_vesting_blocks``
  (a chain parameter): that block moves it into the device's balance before applying
  its transactions.  A device banned while rewards are unvested forfeits them: they are
  burned.  With ``reward_vesting_blocks`` 0 rewards are spendable at once.

The state root commits to the four as an RFC 6962 tree over their roots:

    state_root = node_hash(node_hash(accounts_root, registry_root),
                           node_hash(bans_root, vesting_root))

so a proof about an account is a Merkle path to ``accounts_root`` plus three sibling
hashes (and likewise for the other three).  Each root is a Merkle root of canonical CBOR
leaves in key order (an empty set: SHA-256("")):

    accounts  [address, balance, nonce]          by address
    registry  [device, registration height]      by device
    bans      [device, ban height]               by device
    vesting   [device, earned height, amount]    by device, then earned height

A block's effects are applied to a ``StateView``: an overlay of changed accounts and
vesting entries over the committed ones, so a rejected block leaves no trace and
committing a block writes only what it changed.  Signatures are *not* checked here:
that is the devices' work, attested by the verdicts in the block.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from micromine.protocol import cbor
from micromine.protocol.block import Reward
from micromine.protocol.kinds import Reason
from micromine.protocol.limits import MAX_UINT
from micromine.protocol.merkle import merkle_root, node_hash
from micromine.protocol.messages import Transaction

VestingEntry = tuple[int, int]  # (earned height, amount)
Vesting = Mapping[bytes, tuple[VestingEntry, ...]]  # device -> entries, by earned height


@dataclass(frozen=True, slots=True)
class Account:
    balance: int = 0
    nonce: int = 0  # number of committed transactions sent from this account


EMPTY_ACCOUNT = Account()


@dataclass(frozen=True, slots=True)
class StateChanges:
    """What a block changed: accounts (post-state), and each device whose vesting entries
    changed with all of its entries after the block (empty: none left)."""

    accounts: dict[bytes, Account] = field(default_factory=dict)
    vesting: dict[bytes, tuple[VestingEntry, ...]] = field(default_factory=dict)


class StateView:
    """Committed accounts and vesting entries plus uncommitted changes; ``changes`` and
    ``vesting_changes`` are the block's diff."""

    __slots__ = ("base", "changes", "vesting_base", "vesting_changes")

    def __init__(self, base: Mapping[bytes, Account], vesting: Vesting | None = None) -> None:
        self.base = base
        self.changes: dict[bytes, Account] = {}
        self.vesting_base: Vesting = vesting if vesting is not None else {}
        self.vesting_changes: dict[bytes, tuple[VestingEntry, ...]] = {}

    @property
    def diff(self) -> StateChanges:
        return StateChanges(dict(self.changes), dict(self.vesting_changes))

    def vesting(self, device: bytes) -> tuple[VestingEntry, ...]:
        found = self.vesting_changes.get(device)
        if found is not None:
            return found
        return self.vesting_base.get(device, ())

    def vesting_devices(self) -> list[bytes]:
        """Every device with vesting entries, in key order."""
        return sorted({*self.vesting_base, *self.vesting_changes})

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


def _credit(view: StateView, address: bytes, amount: int) -> None:
    account = view.get(address)
    view.set(address, Account(account.balance + amount, account.nonce))


def process_vesting(view: StateView, height: int, vesting_blocks: int) -> None:
    """Move into balances the rewards that become spendable at ``height``: those earned
    at ``height - vesting_blocks`` or before.  Applied before a block's transactions."""
    for device in view.vesting_devices():
        entries = view.vesting(device)
        due = [amount for earned, amount in entries if earned + vesting_blocks <= height]
        if due:
            _credit(view, device, sum(due))
            rest = tuple(e for e in entries if e[0] + vesting_blocks > height)
            view.vesting_changes[device] = rest


def process_rewards(
    view: StateView, rewards: Iterable[Reward], height: int, vesting_blocks: int
) -> None:
    """Pay a block's rewards: vesting until ``height + vesting_blocks``, or at once."""
    for reward in rewards:
        if vesting_blocks == 0:
            _credit(view, reward.device, reward.amount)
        else:
            entries = view.vesting(reward.device)
            view.vesting_changes[reward.device] = (*entries, (height, reward.amount))


def process_bans(view: StateView, devices: Iterable[bytes]) -> int:
    """Burn the unvested rewards of ``devices`` (banned by this block); the amount."""
    burned = 0
    for device in devices:
        entries = view.vesting(device)
        if entries:
            burned += sum(amount for _, amount in entries)
            view.vesting_changes[device] = ()
    return burned


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


def compute_bans_root(banned: Mapping[bytes, int]) -> bytes:
    """Merkle root over [device, ban height] leaves in device order."""
    leaves = [cbor.encode([device, height]) for device, height in sorted(banned.items())]
    return merkle_root(leaves)


def compute_vesting_root(vesting: Vesting) -> bytes:
    """Merkle root over [device, earned height, amount] leaves in (device, height) order."""
    leaves = [
        cbor.encode([device, earned, amount])
        for device, entries in sorted(vesting.items())
        for earned, amount in sorted(entries)
    ]
    return merkle_root(leaves)


def compute_state_root(
    accounts_root: bytes, registry_root: bytes, bans_root: bytes, vesting_root: bytes
) -> bytes:
    """The root of the four-leaf tree over the state's roots (module docstring)."""
    return node_hash(node_hash(accounts_root, registry_root), node_hash(bans_root, vesting_root))


def merged(base: Mapping[bytes, Account], changes: Mapping[bytes, Account]) -> dict[bytes, Account]:
    result = dict(base)
    result.update(changes)
    return result


def merged_vesting(
    base: Vesting, changes: Mapping[bytes, tuple[VestingEntry, ...]]
) -> dict[bytes, tuple[VestingEntry, ...]]:
    """``base`` with ``changes`` applied; devices left without entries are dropped."""
    result = dict(base)
    for device, entries in changes.items():
        if entries:
            result[device] = entries
        else:
            result.pop(device, None)
    return result
