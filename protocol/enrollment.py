"""Device enrollment: an operator's signed approval or revocation of a device key.

    DeviceApproval(chain_id, operator, device, approve, timestamp_ms, signature)

Published by an operator (a key in genesis ``operators``) on
``micromine/<chain>/approvals/<operator hex>``; ledger nodes collect them and the
proposer records them in ``Block.approvals``.  ``approve`` is True to approve, False to
revoke.  ``timestamp_ms`` orders the approvals of one device: a block may record one
only when its time is after the device's latest recorded approval, so a sequence
approve -> revoke -> approve is unambiguous and an old approval cannot be replayed.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from micromine.protocol.fields import check_bool, check_bytes, check_chain_id, check_uint
from micromine.protocol.kinds import Kind
from micromine.protocol.limits import MAX_TIMESTAMP_MS, PUBLIC_KEY_LEN, SIGNATURE_LEN
from micromine.protocol.messages import NO_SIGNATURE, SignedMessage, expect_tag


@dataclass(frozen=True, slots=True)
class DeviceApproval(SignedMessage):
    """An operator's decision about one device: approved (True) or revoked (False)."""

    KIND: ClassVar[Kind] = Kind.DEVICE_APPROVAL
    chain_id: str
    operator: bytes
    device: bytes
    approve: bool
    timestamp_ms: int
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("operator", self.operator, PUBLIC_KEY_LEN)
        check_bytes("device", self.device, PUBLIC_KEY_LEN)
        check_bool("approve", self.approve)
        check_uint("timestamp_ms", self.timestamp_ms, MAX_TIMESTAMP_MS)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.operator

    def unsigned_wire(self) -> list[Any]:
        return [
            int(self.KIND), self.chain_id, self.operator, self.device, self.approve,
            self.timestamp_ms,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 7)
        return cls(*items[1:])
