"""The agent's thin readers of the host, and its scheduling priority.  No decisions here:
:mod:`.idle` decides from what these return.

Everything degrades to "unknown" (None) rather than failing: a host without ``/proc``
(or a container hiding it) simply never pauses for host CPU or load.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from micromine.device_agent.idle import CpuTimes, Observation, parse_proc_stat

__all__ = ["Priority", "apply_priority", "observe", "own_cpu_s", "read_host_cpu"]

PROC_STAT = Path("/proc/stat")


def own_cpu_s() -> float:
    """This process's CPU time, all threads, user + system (nanosecond resolution)."""
    return time.process_time()


def read_host_cpu() -> CpuTimes | None:
    try:
        return parse_proc_stat(PROC_STAT.read_text(), float(os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError):
        return None


def load_per_core() -> float | None:
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return None


def observe(pause_file: Path, others_cpu_percent: float | None) -> Observation:
    local = time.localtime()
    return Observation(
        pause_file=pause_file.exists(),
        minute_of_day=local.tm_hour * 60 + local.tm_min,
        load_per_core=load_per_core(),
        others_cpu_percent=others_cpu_percent,
    )


@dataclass(frozen=True, slots=True)
class Priority:
    """What :func:`apply_priority` managed to set, and what it could not (for the log)."""

    nice: int
    idle: bool
    problems: tuple[str, ...]


def apply_priority(nice: int, idle_priority: bool) -> Priority:
    """Raise our nice value to ``nice`` and ask for SCHED_IDLE, before any thread starts
    (threads inherit both; on Linux both are per thread).  SCHED_IDLE also puts our
    disk I/O in the idle class.  Never fails: what is not permitted is reported."""
    problems = []
    current = os.nice(0)
    if nice > current:
        try:
            current = os.nice(nice - current)
        except OSError as exc:
            problems.append(f"nice {nice}: {exc}")
    idle = False
    if idle_priority:
        if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                idle = True
            except OSError as exc:
                problems.append(f"SCHED_IDLE: {exc}")
        else:
            problems.append("SCHED_IDLE: not available on this system")
    return Priority(current, idle, tuple(problems))
