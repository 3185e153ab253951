"""When the agent may work: its CPU budget, and the owner's pause policy.  No I/O here.

The service reads the clocks, ``/proc/stat``, ``/proc/loadavg`` and the pause file, and
hands the numbers to these objects; so every rule is tested with made-up numbers, and
a firmware author can port it without a Linux ``/proc``.

**CPU budget** (:class:`CpuBudget`): a token bucket over CPU seconds.  It fills at
``budget`` CPU seconds per wall second (0.25 for "25 % of one core") up to a burst of
``budget * BURST_S``; the process's CPU time (every thread: judging, the MQTT thread,
logging) drains it.  The agent takes its next batch only when the bucket is not in
debt, so over any long run its CPU share is the budget, within (burst + one batch's
cost) / run length.  Wall time is monotonic time: a stepped wall clock cannot make
the agent sprint or stall, and a suspended host (a large monotonic gap) only refills
the bucket up to its burst.

**Pause policy** (:func:`decide`): paused while the pause file exists, outside the
schedule's windows, while the 1-minute load average per core is above ``max_load``,
or while *other* processes keep more than ``max_host_cpu`` % of all cores busy (over
about HOST_CPU_WINDOW_S; our own CPU time is subtracted, so pausing never feeds back
into the decision).  Reasons are checked in that order and the first one is reported.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

__all__ = [
    "BURST_S",
    "HOST_CPU_WINDOW_S",
    "Activity",
    "CpuBudget",
    "CpuShare",
    "CpuTimes",
    "HostCpuMeter",
    "Observation",
    "PausePolicy",
    "Reason",
    "State",
    "TimeWindow",
    "decide",
    "is_in_schedule",
    "parse_proc_stat",
    "parse_schedule",
]

BURST_S = 2.0  # the budget's bucket holds this many wall seconds' worth of CPU
HOST_CPU_WINDOW_S = 10.0  # others' CPU share is averaged over about this long
_MINUTES_PER_DAY = 24 * 60


class State(enum.Enum):
    WORKING = "working"
    PAUSED = "paused"


class Reason(enum.Enum):
    """Why the agent is paused (the first that applies, in this order)."""

    PAUSE_FILE = "pause_file"  # the owner ran ``micromine agent pause``
    SCHEDULE = "schedule"  # outside the allowed time windows
    LOAD = "load"  # load average per core above max_load
    HOST_CPU = "host_cpu"  # other processes busier than max_host_cpu


@dataclass(frozen=True, slots=True)
class Activity:
    """What the agent is doing now, for status files, Home Assistant and metrics."""

    state: State
    reason: Reason | None  # None while working
    window: int  # batches asked of each ledger node (0 while paused)
    cpu_budget: float | None  # percent of one core; None: unlimited
    cpu_percent: float  # our recent CPU use, percent of one core
    dropped_paused: int  # work dropped because it arrived while paused

    @property
    def budget_used_percent(self) -> float | None:
        """Recent CPU use as a share of the budget (100: using all of it)."""
        if self.cpu_budget is None:
            return None
        return 100.0 * self.cpu_percent / self.cpu_budget


# --- CPU budget -------------------------------------------------------------------------


class CpuBudget:
    """Token bucket of CPU seconds.  Feed it ``(monotonic_s, process_cpu_s)`` samples;
    it answers how long to wait before taking the next batch."""

    def __init__(self, percent: float, now_s: float, cpu_s: float) -> None:
        if not percent > 0:
            raise ValueError(f"cpu budget must be above 0 %, got {percent}")
        self.rate = percent / 100.0  # CPU seconds earned per wall second
        self.burst = self.rate * BURST_S
        self.tokens = self.burst
        self._last_s = now_s
        self._last_cpu_s = cpu_s

    def update(self, now_s: float, cpu_s: float) -> None:
        """Earn for the wall time since the last sample, pay for the CPU time used."""
        elapsed = max(0.0, now_s - self._last_s)  # monotonic, but never trust a negative
        used = max(0.0, cpu_s - self._last_cpu_s)
        self._last_s = max(self._last_s, now_s)
        self._last_cpu_s = max(self._last_cpu_s, cpu_s)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate) - used

    def wait_s(self, now_s: float, cpu_s: float) -> float:
        """Seconds to wait before the next batch (0: go now)."""
        self.update(now_s, cpu_s)
        # A debt below a microsecond is rounding: waiting it out could spin forever.
        return 0.0 if self.tokens >= -1e-6 else -self.tokens / self.rate


class CpuShare:
    """Our own CPU use over the last few samples, in percent of one core."""

    def __init__(self, window_s: float = HOST_CPU_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now_s: float, cpu_s: float) -> None:
        if self._samples and now_s <= self._samples[-1][0]:
            return  # not later than the previous sample: nothing to learn
        self._samples.append((now_s, cpu_s))
        while len(self._samples) > 2 and now_s - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def percent(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return max(0.0, 100.0 * (c1 - c0) / (t1 - t0))


# --- host CPU and load ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The first line of /proc/stat, in seconds summed over all cores."""

    busy_s: float  # everything but idle and iowait
    total_s: float


def parse_proc_stat(text: str, ticks_per_s: float) -> CpuTimes:
    """``cpu  user nice system idle iowait irq softirq steal ...`` -> CpuTimes.
    Raises ValueError on anything else."""
    first = text.split("\n", 1)[0].split()
    if len(first) < 5 or first[0] != "cpu":
        raise ValueError("/proc/stat does not start with an aggregate 'cpu' line")
    ticks = [int(value) for value in first[1:9]]  # guest time is already in user
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    total = sum(ticks)
    return CpuTimes((total - idle) / ticks_per_s, total / ticks_per_s)


class HostCpuMeter:
    """Other processes' share of all cores, from (time, /proc/stat, own CPU) samples
    spanning about HOST_CPU_WINDOW_S."""

    def __init__(self, window_s: float = HOST_CPU_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, CpuTimes, float]] = deque()

    def add(self, now_s: float, host: CpuTimes, own_cpu_s: float) -> None:
        if self._samples and now_s <= self._samples[-1][0]:
            return
        self._samples.append((now_s, host, own_cpu_s))
        while len(self._samples) > 2 and now_s - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def others_percent(self) -> float | None:
        """Percent (0..100) of all cores busy with other processes; None until two
        samples with time between them exist."""
        if len(self._samples) < 2:
            return None
        (_, first, own0), (_, last, own1) = self._samples[0], self._samples[-1]
        total = last.total_s - first.total_s
        if total <= 0:
            return None
        others = (last.busy_s - first.busy_s) - (own1 - own0)
        return min(100.0, max(0.0, 100.0 * others / total))


# --- schedule ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """``start``..``end`` in minutes after local midnight; end < start runs overnight.
    start == end means the whole day."""

    start: int
    end: int

    def contains(self, minute: int) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def _parse_clock(text: str, whole: str) -> int:
    hours, sep, minutes = text.strip().partition(":")
    if (
        not sep
        or not (hours.isdigit() and minutes.isdigit())
        or len(minutes) != 2
        or not 1 <= len(hours) <= 2
    ):
        raise ValueError(f"schedule {whole!r}: {text.strip()!r} is not HH:MM")
    h, m = int(hours), int(minutes)
    if h == 24 and m == 0:
        return _MINUTES_PER_DAY
    if h > 23 or m > 59:
        raise ValueError(f"schedule {whole!r}: {text.strip()!r} is not a time of day")
    return h * 60 + m


def parse_schedule(text: str) -> tuple[TimeWindow, ...]:
    """``"HH:MM-HH:MM[,HH:MM-HH:MM...]"`` local-time windows, e.g. ``"22:00-07:00"``
    (overnight) or ``"09:00-12:00,13:00-17:00"``.  Raises ValueError saying what is wrong."""
    windows = []
    for part in text.split(","):
        start, sep, end = part.partition("-")
        if not sep:
            raise ValueError(f"schedule {text!r}: {part.strip()!r} is not HH:MM-HH:MM")
        first, last = _parse_clock(start, text), _parse_clock(end, text)
        windows.append(TimeWindow(first % _MINUTES_PER_DAY, last % _MINUTES_PER_DAY))
    return tuple(windows)


def is_in_schedule(windows: tuple[TimeWindow, ...], minute_of_day: int) -> bool:
    return any(window.contains(minute_of_day) for window in windows)


# --- the decision -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PausePolicy:
    max_host_cpu: float | None = None  # percent of all cores busy with others
    max_load: float | None = None  # 1-minute load average per core
    schedule: tuple[TimeWindow, ...] | None = None  # None: always


@dataclass(frozen=True, slots=True)
class Observation:
    """What the service saw; a None reading (no /proc, say) never pauses the agent."""

    pause_file: bool
    minute_of_day: int  # local time
    load_per_core: float | None = None
    others_cpu_percent: float | None = None


def decide(policy: PausePolicy, seen: Observation) -> Reason | None:
    """Why the agent must pause now, or None if it may work."""
    if seen.pause_file:
        return Reason.PAUSE_FILE
    if policy.schedule is not None and not is_in_schedule(policy.schedule, seen.minute_of_day):
        return Reason.SCHEDULE
    if (
        policy.max_load is not None
        and seen.load_per_core is not None
        and seen.load_per_core > policy.max_load
    ):
        return Reason.LOAD
    if (
        policy.max_host_cpu is not None
        and seen.others_cpu_percent is not None
        and seen.others_cpu_percent > policy.max_host_cpu
    ):
        return Reason.HOST_CPU
    return None
