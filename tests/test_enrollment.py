"""Device enrollment in memory: DeviceApproval on the wire, the genesis policy, the block
rules for approvals and registrations, the registry's approval records and root
(docs/CONSENSUS.md, "Device assignment"; docs/PROTOCOL.md 6.16, 14)."""

import dataclasses

import pytest
from test_ledger_core import CHAIN, NODE, T0, key

from micromine.ledger_node.chain.blocks import build_block
from micromine.ledger_node.chain.chain_state import ChainState, ChainTip
from micromine.ledger_node.chain.enrollment import ApprovalRecord, Enrollment
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import (
    compute_accounts_root,
    compute_bans_root,
    compute_registry_root,
    compute_state_root,
    compute_vesting_root,
)
from micromine.ledger_node.chain.transition import InvalidBlockError
from micromine.ledger_node.chain.verify import verify_block
from micromine.protocol import cbor
from micromine.protocol.block import Block, compute_body_hash
from micromine.protocol.codec import decode, encode, sign
from micromine.protocol.device import DeviceHello
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.genesis import ChainParams, Genesis, GenesisError

OPERATOR = key(400)
NOT_OPERATOR = key(401)
DEVICE = key(402)
OTHER = key(403)
PARAMS = ChainParams(k=1, q=1)
APPROVED = Enrollment("approved", frozenset({OPERATOR.public}))
OPEN = Enrollment("open", frozenset({OPERATOR.public}))
TIP = ChainTip(0, bytes(32), T0)


def approval(device=DEVICE, approve=True, at=T0, signer=OPERATOR) -> DeviceApproval:
    return sign(DeviceApproval(CHAIN, signer.public, device.public, approve, at), signer)


def hello(device=DEVICE) -> DeviceHello:
    return sign(DeviceHello(CHAIN, device.public, "test", 64, T0), device)


def state(registry, enrollment, tip) -> ChainState:
    return ChainState(CHAIN, PARAMS, enrollment, tip, {}, registry, {})


def build(registry, *, hellos=(), approvals=(), enrollment=APPROVED, tip=TIP) -> Block:
    return build_block(
        state(registry, enrollment, tip), proposer=NODE, timestamp_ms=tip.timestamp_ms + 1000,
        candidates=[], justification={}, hellos=hellos, approvals=approvals, seal=False,
    ).block  # fmt: skip


def verify(registry, block, enrollment=APPROVED, tip=TIP) -> None:
    verify_block(state(registry, enrollment, tip), block, validators=(NODE.public,))


# --- wire -----------------------------------------------------------------------------------


def test_approval_round_trips_and_is_strict() -> None:
    message = approval(approve=False)
    assert decode(encode(message), DeviceApproval) == message
    wire = message.to_wire()
    wire[4] = 0  # an integer where the bool goes
    with pytest.raises(DecodeError) as caught:
        decode(cbor.encode(wire), DeviceApproval)
    assert caught.value.code is DecodeFailure.BAD_TYPE
    with pytest.raises(DecodeError):
        decode(cbor.encode(message.to_wire()[:-1]), DeviceApproval)


def test_block_with_approvals_round_trips() -> None:
    block = build(DeviceRegistry({}, 0), hellos=[hello()], approvals=[approval()])
    assert block.approvals == (approval(),)
    assert [h.device for h in block.registrations] == [DEVICE.public]
    assert decode(encode(block), Block) == block


# --- genesis --------------------------------------------------------------------------------


def genesis(**changes) -> Genesis:
    return Genesis(CHAIN, T0, (NODE.public,), (), **changes)


def test_genesis_enrollment_default_keeps_the_hash() -> None:
    assert genesis().hash == genesis(enrollment="open").hash
    approved = genesis(operators=(OPERATOR.public,), enrollment="approved")
    assert approved.hash != genesis(operators=(OPERATOR.public,)).hash
    assert Genesis.from_json(approved.to_json()) == approved
    assert "enrollment" not in genesis().to_json()


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"enrollment": "closed"}, "enrollment must be"), ({"enrollment": "approved"}, "operator")],
)
def test_genesis_enrollment_is_checked(changes, message) -> None:
    with pytest.raises(GenesisError, match=message):
        genesis(**changes)


# --- block rules ----------------------------------------------------------------------------


def test_approved_policy_registers_only_approved_devices() -> None:
    registry = DeviceRegistry({}, 0)
    unapproved = build(registry, hellos=[hello()])
    assert unapproved.registrations == ()
    # A block that registers it anyway is refused.
    forced = dataclasses.replace(unapproved, registrations=(hello(),))
    forced = _rehash(forced, registry)
    with pytest.raises(InvalidBlockError, match="unapproved"):
        verify(registry, forced)
    # Approval and registration in one block: valid.
    block = build(registry, hellos=[hello()], approvals=[approval()])
    verify(registry, block)


def test_open_policy_needs_no_approval_but_revocation_bans() -> None:
    registry = DeviceRegistry({}, 0)
    block = build(registry, hellos=[hello()], enrollment=OPEN)
    verify(registry, block, OPEN)
    assert block.approvals == ()
    revoked = build(
        registry, hellos=[hello()], approvals=[approval(approve=False)], enrollment=OPEN
    )
    assert revoked.registrations == ()
    with pytest.raises(InvalidBlockError, match="revoked"):
        verify(
            registry,
            _rehash(dataclasses.replace(revoked, registrations=(hello(),)), registry),
            OPEN,
        )


def test_approval_rules() -> None:
    registry = DeviceRegistry({}, 1, approvals=[ApprovalRecord(DEVICE.public, True, 1, T0)])
    tip = ChainTip(1, bytes(32), T0)
    # Not later than the recorded one: not proposed, and refused when forced in.
    assert build(registry, approvals=[approval(approve=False)], tip=tip).approvals == ()
    stale = build(registry, approvals=[approval(approve=False, at=T0 + 1)], tip=tip)
    verify(registry, stale, tip=tip)
    stale = dataclasses.replace(stale, approvals=(approval(approve=False, at=T0),))
    with pytest.raises(InvalidBlockError, match="not after"):
        verify(registry, _rehash(stale, registry, tip), tip=tip)
    # Signed by a key that is not an operator: not proposed, refused.
    outsider = approval(device=OTHER, signer=NOT_OPERATOR)
    assert build(registry, approvals=[outsider], tip=tip).approvals == ()
    forced = build(registry, approvals=[approval(device=OTHER)], tip=tip)
    forced = dataclasses.replace(forced, approvals=(outsider,))
    with pytest.raises(InvalidBlockError, match="not by an operator"):
        verify(registry, _rehash(forced, registry, tip), tip=tip)
    # Forged signature.
    forged = dataclasses.replace(approval(device=OTHER), signature=bytes(64))
    block = build(registry, approvals=[approval(device=OTHER)], tip=tip)
    with pytest.raises(InvalidBlockError, match="forged"):
        verify(
            registry,
            _rehash(dataclasses.replace(block, approvals=(forged,)), registry, tip),
            tip=tip,
        )
    # Two for one device, or out of key order.
    later = approval(at=T0 + 5)
    two = dataclasses.replace(block, approvals=(approval(at=T0 + 4), later))
    with pytest.raises(InvalidBlockError, match="one per device"):
        verify(registry, _rehash(two, registry, tip), tip=tip)


def _rehash(block: Block, registry: DeviceRegistry, tip: ChainTip = TIP) -> Block:
    """The block with its body hash and state root recomputed for its (changed) body, so
    that only the rule under test can refuse it."""
    records = [ApprovalRecord.of(a, block.height) for a in block.approvals]
    root = registry.root_after((h.device for h in block.registrations), block.height, records)
    header = dataclasses.replace(
        block.header,
        body_hash=compute_body_hash(
            block.verdicts, block.rewards, block.registrations, approvals=block.approvals
        ),
        state_root=compute_state_root(
            compute_accounts_root({}), root, compute_bans_root({}), compute_vesting_root({})
        ),
    )
    return dataclasses.replace(block, header=header)


# --- registry -------------------------------------------------------------------------------


def test_revocation_takes_effect_at_its_height() -> None:
    registry = DeviceRegistry({DEVICE.public: 1, OTHER.public: 1}, 3)
    registry.process_block(4, [], approvals=[ApprovalRecord(DEVICE.public, False, 4, T0)])
    assert list(registry.members_at(3)) == sorted([DEVICE.public, OTHER.public])
    assert list(registry.members_at(4)) == [OTHER.public]
    assert DEVICE.public not in registry.entitled(b"\x01" * 32, 4, 1)
    registry.process_block(5, [], approvals=[ApprovalRecord(DEVICE.public, True, 5, T0 + 1)])
    assert DEVICE.public in registry.members_at(5)
    assert registry.is_revoked_at(DEVICE.public, 4)
    assert registry.is_approved_at(DEVICE.public, 5)


def test_registry_root_covers_approvals_only_when_there_are_some() -> None:
    registered = {DEVICE.public: 1}
    plain = DeviceRegistry(registered, 1)
    assert plain.root == compute_registry_root(registered)
    record = ApprovalRecord(DEVICE.public, True, 1, T0)
    approved = DeviceRegistry(registered, 1, approvals=[record])
    assert approved.root != plain.root
    assert plain.root_after([], 2, [dataclasses.replace(record, height=2)]) != plain.root
    revoked = DeviceRegistry(registered, 1, approvals=[dataclasses.replace(record, approved=False)])
    assert revoked.root not in (plain.root, approved.root)
