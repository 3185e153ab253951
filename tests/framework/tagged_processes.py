"""Every process a test started, found again in /proc, whatever it was or started.

A test puts a variable of its own in a process's environment; children inherit it, so
the live processes that carry it are exactly what the test started and what those
started in turn, whatever their command lines.  Linux only (/proc).
"""

import contextlib
import os
import signal
import uuid
from pathlib import Path

TAG = "MICROMINE_TEST_PROCESS_TAG"


def new_tag() -> str:
    return uuid.uuid4().hex


def tagged_environment(tag: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the tag and unbuffered output."""
    return {**(os.environ if base is None else base), TAG: tag, "PYTHONUNBUFFERED": "1"}


def tagged(tag: str) -> set[int]:
    """The live processes that carry ``tag`` (a zombie is dead: it only waits to be reaped)."""
    marker = f"{TAG}={tag}".encode()
    return {
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _carries(int(entry.name), marker)
    }


def _carries(pid: int, marker: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone, or not ours to read
        return False
    state = stat[stat.rindex(")") + 2 :].split()[0]
    return state not in ("Z", "X") and marker in environ.split(b"\0")


def kill_tagged(tag: str) -> None:
    """After a failure: SIGKILL whatever the test started that is still there."""
    for pid in tagged(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
