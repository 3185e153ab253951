"""Devices making themselves known: hellos (registration), heartbeats and statuses
(liveness), and operators' approvals (enrollment).

A signed hello makes a device known (devices.py) and, until a block registers it, a
pending registration that the next proposer includes; only registered devices get work.
Under "approved" enrollment a hello counts only from a device an operator approved on
chain, and a revoked device's hellos and verdicts are dropped under either policy;
operators' signed approvals are held until a block records them (chain/enrollment.py).
A device caught judging a forgery valid is the subject of a fraud proof (frauds.py)
that the next proposer includes; once a block bans it, its verdicts, hellos and
heartbeats are dropped and it gets no work.

These functions act on the ``LedgerCore`` they are given: its pending registrations
(``hellos``), pending approvals (``approvals``) and the hellos awaiting an approval.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from micromine.ledger_node.chain.enrollment import ApprovalRecord
from micromine.ledger_node.core.actions import Action
from micromine.protocol.codec import decode, is_signature_valid
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.errors import DecodeError

if TYPE_CHECKING:
    from micromine.ledger_node.core.ledger import LedgerCore

DeviceMessage = TypeVar("DeviceMessage", DeviceHello, Heartbeat, DeviceStatus)

MAX_PENDING_REGISTRATIONS = 4096  # hellos of unregistered devices held for a block
MAX_PENDING_APPROVALS = 1024  # operators' approvals held for a block
MAX_AWAITING_APPROVAL = 1024  # hellos of devices not approved yet (oldest forgotten first)


# ---- device messages ------------------------------------------------------------------


def on_hello(
    core: "LedgerCore", key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
) -> None:
    if not payload:  # a cleared retained message
        return
    hello = _decode_device_message(core, key, payload, DeviceHello, "hello", out=out)
    if hello is None:
        return
    # [REJECT] A banned device's hello (it gets no work, and stays registered).
    if core.registry.is_banned(hello.device):
        core.drop(out, "hello", "banned", hello.device.hex()[:16])
        return
    core.devices.on_hello(hello, now_ms)
    # [IGNORE] Registered already (by the chain; the latest hello of a device waiting
    # for registration replaces its earlier one).
    if hello.device in core.registry:
        return
    # [IGNORE] Not enrolled: revoked, or (under "approved") not approved; counted.
    reason = _enrollment_refusal(core, hello.device)
    held = core.approvals.get(hello.device)
    if reason == "not_approved" and held is not None and held.approve:
        reason = None  # a pending approval: one block may record both
    if reason is not None:
        if reason == "not_approved":
            _await_approval(core, hello)
        core.drop(out, "hello", reason, hello.device.hex()[:16])
        return
    # [IGNORE] Too many registrations pending: the device says hello again on its
    # next connect, and its retained hello reaches any node that starts.
    if hello.device not in core.hellos and len(core.hellos) >= MAX_PENDING_REGISTRATIONS:
        core.drop(out, "hello", "registrations_full", hello.device.hex()[:16])
        return
    core.hellos[hello.device] = hello


def on_heartbeat(
    core: "LedgerCore", key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
) -> None:
    heartbeat = _decode_device_message(core, key, payload, Heartbeat, "heartbeat", out=out)
    if heartbeat is None:
        return
    # [IGNORE] A banned device's heartbeat: it must never look live (no work).
    if core.registry.is_banned(heartbeat.device):
        return
    # [REJECT] Not older than the device's latest heartbeat (devices.py).
    if why := core.devices.on_heartbeat(heartbeat, now_ms):
        core.drop(out, "heartbeat", why, heartbeat.device.hex()[:16])


def on_device_status(
    core: "LedgerCore", key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
) -> None:
    if not payload:  # a cleared retained message
        return
    status = _decode_device_message(core, key, payload, DeviceStatus, "status", out=out)
    if status is not None and (why := core.devices.on_status(status, now_ms)):
        core.drop(out, "status", why, status.device.hex()[:16])


def _decode_device_message(
    core: "LedgerCore",
    key: bytes | None,
    payload: bytes,
    kind: type[DeviceMessage],
    source: str,
    *,
    out: list[Action],
) -> DeviceMessage | None:
    try:
        message = decode(payload, kind)
    except DecodeError as exc:
        core.drop(out, source, f"decode_{exc.code.name.lower()}", exc.detail)
        return None
    # [REJECT] The message is for this chain, from the device its topic names, signed.
    if message.chain_id != core.chain_id:
        core.drop(out, source, "wrong_chain", message.chain_id)
        return None
    if message.device != key:
        core.drop(out, source, "topic_mismatch", message.device.hex()[:16])
        return None
    if not is_signature_valid(message):
        core.drop(out, source, "bad_signature", message.device.hex()[:16])
        return None
    return message


# ---- enrollment -----------------------------------------------------------------------


def on_approval(
    core: "LedgerCore", key: bytes | None, payload: bytes, now_ms: int, out: list[Action]
) -> None:
    try:
        approval = decode(payload, DeviceApproval)
    except DecodeError as exc:
        core.drop(out, "approval", f"decode_{exc.code.name.lower()}", exc.detail)
        return
    who = approval.device.hex()[:16]
    # [REJECT] For this chain, on its operator's own topic.
    if approval.chain_id != core.chain_id or approval.operator != key:
        core.drop(out, "approval", "topic_mismatch", who)
        return
    # [REJECT] Its operator is listed in genesis.
    if approval.operator not in core.enrollment.operators:
        core.drop(out, "approval", "not_operator", who)
        return
    # [IGNORE] Not later than the device's recorded or pending approval.
    latest = core.registry.latest_approval(approval.device)
    held = core.approvals.get(approval.device)
    if (latest is not None and approval.timestamp_ms <= latest.timestamp_ms) or (
        held is not None and approval.timestamp_ms <= held.timestamp_ms
    ):
        core.drop(out, "approval", "not_later", who)
        return
    # [IGNORE] Too many pending: the operator publishes it again.
    if held is None and len(core.approvals) >= MAX_PENDING_APPROVALS:
        core.drop(out, "approval", "approvals_full", who)
        return
    # [REJECT] Signed by its operator.
    if not is_signature_valid(approval):
        core.drop(out, "approval", "bad_signature", who)
        return
    core.approvals[approval.device] = approval


def _enrollment_refusal(core: "LedgerCore", device: bytes) -> str | None:
    """Why the policy refuses to register ``device`` now, or None."""
    latest = core.registry.latest_approval(device)
    if latest is not None and not latest.approved:
        return "revoked"
    if core.enrollment.needs_approval and latest is None:
        return "not_approved"
    return None


def settle_approvals(core: "LedgerCore", records: Iterable[ApprovalRecord]) -> None:
    """After a block: forget pending approvals it made stale, and the pending
    registrations of devices it revoked."""
    for record in records:
        held = core.approvals.get(record.device)
        if held is not None and held.timestamp_ms <= record.timestamp_ms:
            del core.approvals[record.device]
        if not record.approved:
            core.hellos.pop(record.device, None)
            continue
        waiting = core.awaiting_approval.pop(record.device, None)
        if (
            waiting is not None
            and record.device not in core.registry
            and len(core.hellos) < MAX_PENDING_REGISTRATIONS
        ):
            core.hellos[record.device] = waiting


def _await_approval(core: "LedgerCore", hello: DeviceHello) -> None:
    """Keep the latest hello of a device that is not approved (bounded: the oldest
    goes first; a device forgotten here says hello again when it reconnects)."""
    core.awaiting_approval.pop(hello.device, None)
    if len(core.awaiting_approval) >= MAX_AWAITING_APPROVAL:
        del core.awaiting_approval[next(iter(core.awaiting_approval))]
    core.awaiting_approval[hello.device] = hello
