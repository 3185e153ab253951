"""The chain's enrollment policy and the approval records of the device registry.

    Enrollment.of(genesis)            the policy ("open" | "approved") and operator keys
    ApprovalRecord                    one recorded DeviceApproval: device, approved or
                                      revoked, the height of the block, the approval's time
    compute_approvals_root(latest)    Merkle root of each device's latest record
    compute_enrolled_registry_root(registered_root, latest)

Policy at a height h (registry.py applies it):

    status at h     the latest record of the device at a height <= h: approved, revoked,
                    or none
    open            a device may register unless its status is revoked
    approved        a device may register only when its status is approved
    entitled        registered at <= h and status at h not revoked (both policies): a
                    revocation at h takes effect for batches ranked at h and later

Records are part of the chain state.  The registry root is the registrations' root
alone while no approval was ever recorded (so chains without approvals keep their
state roots), otherwise ``node_hash(registrations_root, approvals_root)`` whose leaves
are ``[device, approved, height, timestamp_ms]`` in device order, one per device
(its latest record).
"""

from collections.abc import Mapping
from dataclasses import dataclass

from micromine.protocol import cbor
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.genesis import Genesis
from micromine.protocol.merkle import merkle_root, node_hash


@dataclass(frozen=True, slots=True)
class Enrollment:
    policy: str = "open"  # "open" | "approved"
    operators: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, genesis: Genesis) -> "Enrollment":
        return cls(genesis.enrollment, frozenset(genesis.operators))

    @property
    def needs_approval(self) -> bool:
        return self.policy == "approved"


OPEN = Enrollment()


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    device: bytes
    approved: bool
    height: int  # the block that recorded it
    timestamp_ms: int  # the approval's own time: orders one device's approvals

    @classmethod
    def of(cls, approval: DeviceApproval, height: int) -> "ApprovalRecord":
        return cls(approval.device, approval.approve, height, approval.timestamp_ms)


def compute_approvals_root(latest: Mapping[bytes, ApprovalRecord]) -> bytes:
    """Merkle root over [device, approved, height, timestamp_ms] leaves in device order."""
    leaves = [
        cbor.encode([device, r.approved, r.height, r.timestamp_ms])
        for device, r in sorted(latest.items())
    ]
    return merkle_root(leaves)


def compute_enrolled_registry_root(
    registered_root: bytes, latest: Mapping[bytes, ApprovalRecord]
) -> bytes:
    """The registry root: see the module docstring."""
    if not latest:
        return registered_root
    return node_hash(registered_root, compute_approvals_root(latest))
