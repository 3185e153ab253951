"""Device presence: hello on connect, periodic heartbeats, retained online/offline status.

Presence is application-level on purpose: amqtt does not enforce MQTT keep-alive, so a
dead client's Last Will may never fire there.  Ledger nodes treat a device as live
only while its signed heartbeats keep arriving.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from micromine.protocol.fields import (
    check_bool,
    check_bytes,
    check_chain_id,
    check_text,
    check_uint,
)
from micromine.protocol.kinds import Kind
from micromine.protocol.limits import (
    MAX_AGENT_VERSION_LEN,
    MAX_BATCH_TXS,
    MAX_DEVICE_WINDOW,
    MAX_HEARTBEAT_BUSY,
    MAX_TIMESTAMP_MS,
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
)
from micromine.protocol.messages import NO_SIGNATURE, SignedMessage, expect_tag


@dataclass(frozen=True, slots=True)
class DeviceHello(SignedMessage):
    """Sent once per connection: who the device is and how much work it wants."""

    KIND: ClassVar[Kind] = Kind.DEVICE_HELLO
    chain_id: str
    device: bytes
    agent_version: str
    capacity: int  # most transactions it wants in one batch (1..MAX_BATCH_TXS)
    timestamp_ms: int
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("device", self.device, PUBLIC_KEY_LEN)
        check_text("agent_version", self.agent_version, MAX_AGENT_VERSION_LEN)
        check_uint("capacity", self.capacity, MAX_BATCH_TXS, minimum=1)
        check_uint("timestamp_ms", self.timestamp_ms, MAX_TIMESTAMP_MS)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.device

    def unsigned_wire(self) -> list[Any]:
        return [
            int(self.KIND), self.chain_id, self.device, self.agent_version,
            self.capacity, self.timestamp_ms,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 7)
        return cls(*items[1:])


@dataclass(frozen=True, slots=True)
class Heartbeat(SignedMessage):
    """Periodic proof of life, and flow control.

    ``busy`` counts batches the device holds unfinished; ``window`` is how many batches
    it will take at once from each ledger node right now (0: paused, send no new work).
    A device sends one at once when its window changes, not only on its cadence, so a
    pause takes effect within a message's flight; a paused device stays live.
    """

    KIND: ClassVar[Kind] = Kind.HEARTBEAT
    chain_id: str
    device: bytes
    seq: int
    timestamp_ms: int
    busy: int
    window: int
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("device", self.device, PUBLIC_KEY_LEN)
        check_uint("seq", self.seq)
        check_uint("timestamp_ms", self.timestamp_ms, MAX_TIMESTAMP_MS)
        check_uint("busy", self.busy, MAX_HEARTBEAT_BUSY)
        check_uint("window", self.window, MAX_DEVICE_WINDOW)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.device

    def unsigned_wire(self) -> list[Any]:
        return [
            int(self.KIND), self.chain_id, self.device, self.seq, self.timestamp_ms, self.busy,
            self.window,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 8)
        return cls(*items[1:])


@dataclass(frozen=True, slots=True)
class DeviceStatus(SignedMessage):
    """Retained online/offline flag; the offline one is signed at connect as Last Will."""

    KIND: ClassVar[Kind] = Kind.DEVICE_STATUS
    chain_id: str
    device: bytes
    online: bool
    timestamp_ms: int
    signature: bytes = NO_SIGNATURE

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        check_bytes("device", self.device, PUBLIC_KEY_LEN)
        check_bool("online", self.online)
        check_uint("timestamp_ms", self.timestamp_ms, MAX_TIMESTAMP_MS)
        check_bytes("signature", self.signature, SIGNATURE_LEN)

    @property
    def signer(self) -> bytes:
        return self.device

    def unsigned_wire(self) -> list[Any]:
        return [int(self.KIND), self.chain_id, self.device, self.online, self.timestamp_ms]

    @classmethod
    def from_wire(cls, items: Sequence[Any]) -> Self:
        expect_tag(items, cls.KIND, 6)
        return cls(*items[1:])
