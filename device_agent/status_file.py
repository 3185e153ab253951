"""The status file: written atomically by the agent, read by ``micromine agent status``.

The agent rewrites it every few seconds and on every state change, through a temporary
file in the same directory and ``os.replace``, so a reader sees the old document or
the new one, never half of one.  No fsync: on an SD card a sync every few seconds costs
wear, and a status lost in a power cut is rewritten seconds after the next start.

A reader cannot tell a stopped agent from a running one by the file's existence (a
killed agent leaves it behind), so it judges by ``updated_ms``: older than
:data:`STALE_AFTER_S` means the agent is not running (or is hung).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "STALE_AFTER_S",
    "WRITE_INTERVAL_S",
    "StatusRead",
    "read_status",
    "render_status",
    "write_status",
]

WRITE_INTERVAL_S = 5.0
STALE_AFTER_S = 3 * WRITE_INTERVAL_S
MAX_STATUS_BYTES = 64 * 1024


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Replace ``path`` with ``status`` as JSON, atomically; OSError if impossible."""
    data = json.dumps(status, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class StatusRead:
    """What a reader found: the document (None if unusable), and what is wrong."""

    status: dict[str, Any] | None
    problem: str | None  # None: fresh and well-formed
    age_s: float | None = None


def read_status(path: Path, now_ms: int) -> StatusRead:
    """Read and judge the status file; never raises for a missing or bad file."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return StatusRead(None, f"no status file at {path}: the agent is not running here")
    except OSError as exc:
        return StatusRead(None, f"cannot read {path}: {exc.strerror or exc}")
    if len(data) > MAX_STATUS_BYTES:
        return StatusRead(None, f"{path} is larger than {MAX_STATUS_BYTES} bytes")
    try:
        status = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return StatusRead(None, f"{path} is not JSON")
    updated = status.get("updated_ms") if isinstance(status, dict) else None
    if type(updated) is not int:
        return StatusRead(None, f"{path} is not an agent status file")
    age_s = (now_ms - updated) / 1000
    if age_s > STALE_AFTER_S:
        return StatusRead(
            status,
            f"status is {age_s:.0f} s old: the agent is not running (or is stuck)",
            age_s,
        )
    return StatusRead(status, None, age_s)


def _text(value: Any, unknown: str = "unknown") -> str:
    return unknown if value is None else str(value)


def render_status(read: StatusRead) -> str:
    """A readable summary for a terminal."""
    if read.status is None:
        return f"micromine agent: {read.problem}"
    s = read.status
    rewards = s.get("rewards") or {}
    agreement = s.get("agreement")
    state = str(s.get("state", "?"))
    if s.get("pause_reason"):
        state += f" ({s['pause_reason']})"
    budget = s.get("budget_used_pct")
    drops = {k: v for k, v in (s.get("dropped") or {}).items() if v}
    lines = [
        f"state:        {state}" + (f"   [STALE: {read.problem}]" if read.problem else ""),
        f"device:       {s.get('device', '?')}",
        f"broker:       {s.get('broker', '?')} ({'connected' if s.get('connected') else 'not connected'})",  # noqa: E501
        f"chain:        {s.get('chain', '?')}",
        f"uptime:       {_text(s.get('uptime_s'))} s",
        f"budget used:  {'unknown' if budget is None else f'{budget:.0f} %'}",
        f"batches:      {s.get('batches', 0)}",
        f"verdicts:     {s.get('txs_judged', 0)} transactions judged, "
        f"{s.get('verdicts_last_hour', 0)} in the last hour",
        "agreement:    "
        + ("unknown" if agreement is None else f"{agreement * 100:.1f} % (ledger's count)"),
        f"rewards:      {_text(rewards.get('earned'), '0')} earned since start; "
        f"balance {_text(rewards.get('balance'))}, unvested {_text(rewards.get('unvested'))}"
        + (f" (block {rewards['height']})" if rewards.get("height") is not None else ""),
        f"dropped:      {json.dumps(drops) if drops else 'nothing'}",
    ]
    return "\n".join(lines)


EXIT_OK = 0
EXIT_NOT_RUNNING = 1  # no file, unreadable, or stale


def run_status_command(path: Path, *, as_json: bool, now_ms: int) -> int:
    """``micromine agent status``: print the status; exit 1 if the agent is not running."""
    read = read_status(path, now_ms)
    if as_json:
        doc = dict(read.status or {})
        doc["stale"] = read.problem is not None
        if read.problem is not None:
            doc["problem"] = read.problem
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render_status(read))
    return EXIT_OK if read.problem is None else EXIT_NOT_RUNNING
