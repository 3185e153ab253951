"""The chain state: one value that every block rule reads and every committed block
advances, as consensus-specs' ``BeaconState`` is.

    ChainState                      chain identity, parameters, enrollment policy, tip,
                                    accounts, device registry (with approval records
                                    and bans) and vesting rewards, as of the tip
    genesis_state(genesis)          the state before the first block
    ChainState.copy()               an independent copy (tests; a state kept apart)

What the state is made of and how it is committed to (the state root) is state.py's
and registry.py's; the rules that take a state across a block are transition.py's.

A state is used linearly.  ``state_transition`` only reads it (a block's effects go to
an overlay, state.StateView), so proposer and validators can run it on the committed
state as on a copy.  ``transition.process_commit`` hands the state's accounts, vesting
and registry on to the next state, updated in place: O(what the block changed), not a
copy of every account for each of thousands of blocks.  The state it was given is
spent; one used again is caught by the registry being ahead of its tip.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from micromine.ledger_node.chain.enrollment import ApprovalRecord, Enrollment
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import Account, VestingEntry
from micromine.protocol.genesis import ChainParams, Genesis


@dataclass(frozen=True, slots=True)
class ChainTip:
    height: int
    hash: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class ChainState:
    """The chain as of the block at ``tip``: what a block is checked against.

    ``chain_id``, ``params`` and ``enrollment`` come from genesis and never change;
    the rest is what blocks change, and what the state root commits to (registry.py
    holds the registrations, the operators' approval records and the bans).
    """

    chain_id: str
    params: ChainParams
    enrollment: Enrollment
    tip: ChainTip
    accounts: dict[bytes, Account]
    registry: DeviceRegistry
    vesting: dict[bytes, tuple[VestingEntry, ...]]  # device -> entries, by earned height

    def __post_init__(self) -> None:
        if self.registry.height != self.tip.height:  # a caller's bug, not a block's
            raise ValueError(f"registry at {self.registry.height} with tip {self.tip.height}")

    @classmethod
    def of(
        cls,
        genesis: Genesis,
        *,
        tip: ChainTip,
        accounts: dict[bytes, Account],
        registered: Mapping[bytes, int] | None = None,
        banned: Mapping[bytes, int] | None = None,
        vesting: Mapping[bytes, tuple[VestingEntry, ...]] | None = None,
        approvals: Iterable[ApprovalRecord] = (),
    ) -> "ChainState":
        """The state as stored at ``tip`` (storage.py reads each part).  ``accounts`` is
        taken, not copied: the state owns it from now on.  ``registered`` None means the
        genesis devices, for a chain at height 0."""
        if registered is None:
            registered = dict.fromkeys(genesis.devices, 0)
        registry = DeviceRegistry(registered, tip.height, banned=banned, approvals=approvals)
        return cls(
            chain_id=genesis.chain_id,
            params=genesis.params,
            enrollment=Enrollment.of(genesis),
            tip=tip,
            accounts=accounts,
            registry=registry,
            vesting=dict(vesting) if vesting is not None else {},
        )

    def copy(self) -> "ChainState":
        """A state that shares nothing mutable with this one (O(accounts)): for holding
        a state across commits, which spend the one they advance."""
        registry = self.registry
        records = [record for records in registry.approvals.values() for record in records]
        return ChainState(
            chain_id=self.chain_id,
            params=self.params,
            enrollment=self.enrollment,
            tip=self.tip,
            accounts=dict(self.accounts),
            registry=DeviceRegistry(
                dict(registry.heights),
                registry.height,
                banned=dict(registry.banned),
                approvals=records,
            ),
            vesting=dict(self.vesting),
        )


def genesis_state(genesis: Genesis) -> ChainState:
    """The state before block 1: genesis balances and devices, nothing vested or banned."""
    accounts = {account: Account(balance, 0) for account, balance in genesis.balances}
    tip = ChainTip(0, genesis.hash, genesis.timestamp_ms)
    return ChainState.of(genesis, tip=tip, accounts=accounts)
