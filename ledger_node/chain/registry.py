"""The chain's device registry: which devices are registered, since which height, and
which are banned.

    registered at h     a block at height h carried the device's signed DeviceHello in
                        ``Block.registrations`` (genesis may list devices: height 0);
                        records are never removed (revocation has its own height)
    approvals           operators' approvals and revocations recorded by blocks
                        (``Block.approvals``, enrollment.py), kept with their heights
    banned at h         a block at height h carried a fraud proof against the device
                        (``Block.frauds``); a ban is for good
    registry at h       every device registered at a height <= h, less those banned at
                        a height <= h and those whose latest approval record at <= h is
                        a revocation
    entitled(a, h)      the first 2k devices of the registry at h, ranked for the
                        assignment a (protocol/assignment.py)

The registry and the bans are part of the chain state: the state root commits to them
(state.compute_registry_root with the approvals, compute_bans_root).  They grow only
through ``process_block`` of committed blocks, in height order, so the registry at a
committed height never changes again.
That is what makes memoising ``entitled`` safe: the memo is of a pure function of chain
data, and heights above the registry's own are refused rather than guessed.
"""

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from micromine.ledger_node.chain.enrollment import ApprovalRecord, compute_enrolled_registry_root
from micromine.ledger_node.chain.state import compute_bans_root, compute_registry_root
from micromine.protocol.assignment import compute_entitled

ENTITLED_MEMO = 16_384  # (batch, registry height) rankings remembered


class DeviceRegistry:
    """Registered devices as of ``height`` (the chain tip it was built from)."""

    def __init__(
        self,
        registered: Mapping[bytes, int],
        height: int,
        *,
        banned: Mapping[bytes, int] | None = None,
        approvals: Iterable[ApprovalRecord] = (),
    ) -> None:
        banned = banned if banned is not None else {}
        if any(at > height for at in (*registered.values(), *banned.values())):
            raise ValueError("a device is registered or banned above the registry's height")
        if any(device not in registered for device in banned):
            raise ValueError("a device is banned but not registered")
        self._approvals: dict[bytes, list[ApprovalRecord]] = {}  # per device, by height
        for record in sorted(approvals, key=lambda r: (r.height, r.timestamp_ms)):
            if record.height > height:
                raise ValueError("an approval is recorded above the registry's height")
            self._approvals.setdefault(record.device, []).append(record)
        self._revoked_ever = any(not r.approved for rs in self._approvals.values() for r in rs)
        self.height = height
        self._heights = dict(registered)
        self._banned = dict(banned)
        self._bans_root: bytes | None = None
        order = sorted((at, device) for device, at in registered.items())
        self._devices = [device for _, device in order]  # by registration height, then key
        self._at = [at for at, _ in order]
        self._root: bytes | None = None
        self._entitled: OrderedDict[tuple[bytes, int, int], tuple[bytes, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._heights)

    def __contains__(self, device: object) -> bool:
        return device in self._heights

    @property
    def heights(self) -> Mapping[bytes, int]:
        """Device key -> the height that registered it (read-only)."""
        return MappingProxyType(self._heights)

    @property
    def banned(self) -> Mapping[bytes, int]:
        """Device key -> the height that banned it (read-only)."""
        return MappingProxyType(self._banned)

    def is_banned(self, device: bytes) -> bool:
        return device in self._banned

    def members_at(self, height: int) -> Sequence[bytes]:
        """The registry at ``height``: devices registered at ``height`` or below, less
        those banned or revoked at ``height`` or below."""
        members = self._devices[: bisect_right(self._at, height)]
        if self._banned:
            members = [d for d in members if self._banned.get(d, height + 1) > height]
        if not self._revoked_ever:
            return members
        return [device for device in members if not self.is_revoked_at(device, height)]

    # -- approvals (enrollment.py) --------------------------------------------------------

    @property
    def approvals(self) -> Mapping[bytes, Sequence[ApprovalRecord]]:
        """Device -> its approval records, oldest first (read-only view)."""
        return MappingProxyType(self._approvals)

    def latest_approval(self, device: bytes) -> ApprovalRecord | None:
        records = self._approvals.get(device)
        return records[-1] if records else None

    def approval_at(self, device: bytes, height: int) -> ApprovalRecord | None:
        """The device's latest approval record at ``height`` or below."""
        found = None
        for record in self._approvals.get(device, ()):
            if record.height > height:
                break
            found = record
        return found

    def is_revoked_at(self, device: bytes, height: int) -> bool:
        record = self.approval_at(device, height)
        return record is not None and not record.approved

    def is_approved_at(self, device: bytes, height: int) -> bool:
        record = self.approval_at(device, height)
        return record is not None and record.approved

    def _latest_records(self) -> dict[bytes, ApprovalRecord]:
        return {device: records[-1] for device, records in self._approvals.items()}

    def is_registered_at(self, device: bytes, height: int) -> bool:
        at = self._heights.get(device)
        return at is not None and at <= height

    def entitled(self, batch_id: bytes, registry_height: int, k: int) -> tuple[bytes, ...]:
        """The devices entitled to judge the batch against the registry at
        ``registry_height``, best first.  Raises ValueError above our own height."""
        if registry_height > self.height:
            raise ValueError(f"registry at {registry_height} is not known yet ({self.height})")
        key = (batch_id, registry_height, k)
        found = self._entitled.get(key)
        if found is None:
            found = compute_entitled(batch_id, self.members_at(registry_height), k)
            self._entitled[key] = found
            if len(self._entitled) > ENTITLED_MEMO:
                self._entitled.popitem(last=False)
        return found

    @property
    def root(self) -> bytes:
        if self._root is None:
            self._root = compute_enrolled_registry_root(
                compute_registry_root(self._heights), self._latest_records()
            )
        return self._root

    def root_after(
        self, devices: Iterable[bytes], height: int, approvals: Iterable[ApprovalRecord] = ()
    ) -> bytes:
        """The registry root once ``devices`` are registered and ``approvals`` recorded
        at ``height``."""
        added = dict.fromkeys(devices, height)
        recorded = {record.device: record for record in approvals}
        if not added and not recorded:
            return self.root
        return compute_enrolled_registry_root(
            compute_registry_root({**self._heights, **added}),
            {**self._latest_records(), **recorded},
        )

    @property
    def bans_root(self) -> bytes:
        if self._bans_root is None:
            self._bans_root = compute_bans_root(self._banned)
        return self._bans_root

    def bans_root_after(self, devices: Iterable[bytes], height: int) -> bytes:
        """The bans root once ``devices`` are banned at ``height``."""
        added = dict.fromkeys(devices, height)
        if not added:
            return self.bans_root
        return compute_bans_root({**self._banned, **added})

    def process_block(
        self,
        height: int,
        devices: Sequence[bytes],
        *,
        banned: Sequence[bytes] = (),
        approvals: Sequence[ApprovalRecord] = (),
    ) -> None:
        """Record a committed block: ``devices`` (not yet registered) registered,
        ``banned`` (registered, not banned yet) banned and ``approvals`` recorded at
        ``height``, which must be the next height."""
        if height != self.height + 1:
            raise ValueError(f"block {height} does not follow the registry's {self.height}")
        if any(device in self._heights for device in devices):
            raise ValueError("a device is registered twice")
        if any(device not in self._heights or device in self._banned for device in banned):
            raise ValueError("a device banned is not registered, or banned already")
        for record in approvals:
            if record.height != height:
                raise ValueError("an approval recorded at another height")
            self._approvals.setdefault(record.device, []).append(record)
            self._revoked_ever = self._revoked_ever or not record.approved
        if approvals:
            self._root = None
        for device in sorted(devices):
            self._heights[device] = height
            self._devices.append(device)
            self._at.append(height)
        if devices:
            self._root = None
        for device in banned:
            self._banned[device] = height
        if banned:
            self._bans_root = None
        self.height = height
