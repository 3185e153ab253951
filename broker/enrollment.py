"""What the embedded broker knows of the chain's enrollment decisions.

The broker holds no ledger, but the ACL needs to know which keys are devices: under
genesis ``enrollment: approved`` only a key that an operator approved (and did not revoke
since) may publish hellos and verdicts and read its work; under ``open`` every key may,
except a revoked one.  The broker learns the decisions from the blocks the ledger nodes
publish on ``blocks`` (only ledger keys may publish there, the ACL sees to it), and
checks each recorded DeviceApproval itself: signed by an operator of genesis, for this
chain, later than the device's last decision.  So a faulty ledger node cannot enroll a
device no operator approved.

Decisions are saved to a small JSON file when one is given (``--enrollment-state``),
because a restarted broker sees only new blocks: without the file it forgets every
approval until the next block that records one, and approved devices are only
"clients" (submit and read) meanwhile.  The file is rewritten atomically on change.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from micromine.protocol.block import Block
from micromine.protocol.codec import decode, is_signature_valid
from micromine.protocol.enrollment import DeviceApproval
from micromine.protocol.errors import DecodeError
from micromine.protocol.genesis import Genesis

log = logging.getLogger("micromine.broker.enrollment")

MAX_DEVICES = 1_000_000  # decisions kept (bounded: each one came signed by an operator)


@dataclass(frozen=True, slots=True)
class Decision:
    approve: bool
    timestamp_ms: int


class BrokerEnrollment:
    def __init__(self, genesis: Genesis, state_path: Path | None = None) -> None:
        self.chain_id = genesis.chain_id
        self.operators = frozenset(genesis.operators)
        self.needs_approval = genesis.enrollment == "approved"
        self.state_path = state_path
        self.decisions: dict[bytes, Decision] = {}
        self.blocks_read = 0
        self.refused = 0  # blocks that did not decode, approvals that did not check out
        if state_path is not None and state_path.exists():
            self._load(state_path)
        elif self.needs_approval and state_path is None:
            log.warning(
                "enrollment 'approved' without --enrollment-state: approvals are learned "
                "from new blocks only, and a restart forgets them"
            )

    def is_enrolled(self, key: bytes) -> bool:
        """Is ``key`` a device now (the ACL's DEVICE role), as far as the blocks say."""
        decision = self.decisions.get(key)
        if decision is None:
            return not self.needs_approval
        return decision.approve

    def learn_from_block(self, payload: bytes) -> int:
        """Take the enrollment decisions a published block records; how many changed.
        Never raises: a block that does not decode is counted and ignored."""
        try:
            block = decode(payload, Block)
        except DecodeError:
            self.refused += 1
            return 0
        self.blocks_read += 1
        changed = sum(self._take(approval) for approval in block.approvals)
        if changed and self.state_path is not None:
            self._save(self.state_path)
        return changed

    def _take(self, approval: DeviceApproval) -> bool:
        known = self.decisions.get(approval.device)
        # [IGNORE] Not this chain's operator's, not later than what we know, or forged.
        if (
            approval.chain_id != self.chain_id
            or approval.operator not in self.operators
            or (known is not None and approval.timestamp_ms <= known.timestamp_ms)
            or (known is None and len(self.decisions) >= MAX_DEVICES)
            or not is_signature_valid(approval)
        ):
            self.refused += 1
            return False
        self.decisions[approval.device] = Decision(approval.approve, approval.timestamp_ms)
        log.info(
            "device %s %s by operator %s",
            approval.device.hex()[:16],
            "approved" if approval.approve else "revoked",
            approval.operator.hex()[:16],
        )
        return True

    def _load(self, path: Path) -> None:
        try:
            document = json.loads(path.read_text())
            if document.get("chain_id") != self.chain_id:
                raise ValueError(f"it is for chain {document.get('chain_id')!r}")
            for device_hex, (approve, stamp) in document["decisions"].items():
                device = bytes.fromhex(device_hex)
                if len(device) != 32 or type(approve) is not bool or type(stamp) is not int:
                    raise ValueError(f"bad entry for {device_hex[:16]}")
                self.decisions[device] = Decision(approve, stamp)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"enrollment state {path}: {exc}") from None
        log.info("enrollment state: %d decisions from %s", len(self.decisions), path)

    def _save(self, path: Path) -> None:
        document = {
            "chain_id": self.chain_id,
            "decisions": {
                device.hex(): [d.approve, d.timestamp_ms] for device, d in self.decisions.items()
            },
        }
        temporary = path.with_name(path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(document))
            os.replace(temporary, path)
        except OSError as exc:  # the broker keeps running on what it knows in memory
            log.error("cannot save enrollment state to %s: %s", path, exc)
