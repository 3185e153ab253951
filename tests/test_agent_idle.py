"""The agent's idle-time rules (device_agent/idle.py), in memory: budget, pause policy,
schedule parsing, /proc parsing, and the core's window announcements."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from micromine.device_agent.core import AgentCore, Drop
from micromine.device_agent.idle import (
    Activity,
    CpuBudget,
    CpuShare,
    CpuTimes,
    HostCpuMeter,
    Observation,
    PausePolicy,
    Reason,
    State,
    TimeWindow,
    decide,
    is_in_schedule,
    parse_proc_stat,
    parse_schedule,
)
from micromine.protocol import codec
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import Heartbeat

# --- budget -----------------------------------------------------------------------------


def run_flood(percent: float, batch_cpu_s: float, seconds: float) -> float:
    """Simulate an agent that always has work: each batch costs ``batch_cpu_s`` of CPU
    and as much wall time; between batches it waits what the budget says."""
    now, cpu = 100.0, 5.0
    budget = CpuBudget(percent, now, cpu)
    start_now, start_cpu = now, cpu
    while now - start_now < seconds:
        wait = budget.wait_s(now, cpu)
        if wait > 0:
            now += wait
            continue
        now += batch_cpu_s
        cpu += batch_cpu_s
    return 100.0 * (cpu - start_cpu) / (now - start_now)


@settings(max_examples=40, deadline=None)
@given(st.floats(1.0, 100.0), st.floats(0.01, 0.5))
def test_a_flood_uses_the_budget_and_no_more(percent: float, batch_cpu_s: float) -> None:
    share = run_flood(percent, batch_cpu_s, 120.0)
    burst_and_one_batch = 100.0 * (percent / 100 * 2.0 + batch_cpu_s) / 120.0
    assert share == pytest.approx(percent, abs=burst_and_one_batch + 1e-6)


def test_an_idle_agent_banks_only_a_bounded_burst() -> None:
    budget = CpuBudget(20, 0.0, 0.0)
    assert budget.wait_s(3600.0, 0.0) == 0.0  # an hour idle...
    assert budget.tokens == pytest.approx(0.4)  # ...earns only BURST_S * 20 %
    assert budget.wait_s(3600.0, 1.4) == pytest.approx(1.0 / 0.2)  # 1 s in debt: 5 s wait


def test_clock_jumps_and_odd_cpu_readings_neither_sprint_nor_stall() -> None:
    budget = CpuBudget(50, 1000.0, 10.0)
    budget.update(1000.0, 10.5)  # half a second used, nothing earned yet
    before = budget.tokens
    budget.update(900.0, 10.5)  # time went back: earns nothing, waits no longer
    assert budget.tokens == before
    budget.update(1000.5, 9.0)  # CPU went back: costs nothing
    assert budget.tokens == pytest.approx(before + 0.25)
    assert budget.wait_s(1e9, 10.5) == 0.0  # a huge gap refills to the burst only
    assert budget.tokens == pytest.approx(budget.burst)


def test_the_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="above 0"):
        CpuBudget(0, 0.0, 0.0)


def test_own_cpu_share_over_a_window() -> None:
    share = CpuShare(window_s=10.0)
    assert share.percent() == 0.0
    for second in range(30):
        share.add(float(second), second * 0.25)
    share.add(29.0, 100.0)  # not later: ignored
    assert share.percent() == pytest.approx(25.0)


# --- host CPU, load ---------------------------------------------------------------------

STAT = "cpu  {u} 0 {s} {i} {w} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2\n"


def test_proc_stat_parses() -> None:
    times = parse_proc_stat(STAT.format(u=300, s=100, i=500, w=100), 100.0)
    assert times == CpuTimes(busy_s=4.0, total_s=10.0)
    for bad in ("", "intr 1 2", "cpu x y z w v"):
        with pytest.raises(ValueError):
            parse_proc_stat(bad, 100.0)


def test_others_cpu_share_subtracts_our_own() -> None:
    meter = HostCpuMeter(window_s=10.0)
    assert meter.others_percent() is None
    # 2 cores for 10 s = 20 core-seconds; 8 busy, 3 of them ours: others 5/20 = 25 %.
    meter.add(0.0, CpuTimes(100.0, 1000.0), own_cpu_s=50.0)
    meter.add(10.0, CpuTimes(108.0, 1020.0), own_cpu_s=53.0)
    assert meter.others_percent() == pytest.approx(25.0)
    meter.add(10.0, CpuTimes(500.0, 1020.0), own_cpu_s=53.0)  # not later: ignored
    assert meter.others_percent() == pytest.approx(25.0)
    # Old samples fall out of the window: only the last ~10 s count.
    meter.add(20.0, CpuTimes(128.0, 1040.0), own_cpu_s=53.0)
    assert meter.others_percent() == pytest.approx(100.0)


# --- schedule ---------------------------------------------------------------------------


def test_schedules_parse_and_overnight_windows_wrap() -> None:
    assert parse_schedule("09:00-12:00, 13:30-17:00") == (
        TimeWindow(540, 720),
        TimeWindow(810, 1020),
    )
    night = parse_schedule("22:00-07:00")
    assert [is_in_schedule(night, m) for m in (21 * 60 + 59, 22 * 60, 3 * 60, 7 * 60)] == [
        False,
        True,
        True,
        False,
    ]
    assert is_in_schedule(parse_schedule("00:00-24:00"), 12 * 60)
    assert is_in_schedule(parse_schedule("18:00-24:00"), 23 * 60 + 59)
    assert not is_in_schedule(parse_schedule("18:00-24:00"), 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not HH:MM-HH:MM"),
        ("9-17", "is not HH:MM"),
        ("25:00-26:00", "is not a time of day"),
        ("09:60-10:00", "is not a time of day"),
        ("09:00-", "is not HH:MM"),
        ("09:00-10:00,", "is not HH:MM-HH:MM"),
        ("0900-1000", "is not HH:MM"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(text)


@given(st.integers(0, 1439), st.integers(0, 1439), st.integers(0, 1439))
def test_a_window_and_its_complement_cover_the_day_once(start: int, end: int, m: int) -> None:
    window, rest = TimeWindow(start, end), TimeWindow(end, start)
    if start != end:
        assert window.contains(m) != rest.contains(m)


# --- the decision -----------------------------------------------------------------------

NOON = 12 * 60


def test_the_first_reason_that_applies_wins() -> None:
    strict = PausePolicy(max_host_cpu=50, max_load=1.0, schedule=parse_schedule("22:00-07:00"))
    busy = Observation(True, NOON, load_per_core=3.0, others_cpu_percent=90)
    assert decide(strict, busy) is Reason.PAUSE_FILE
    busy = Observation(False, NOON, load_per_core=3.0, others_cpu_percent=90)
    assert decide(strict, busy) is Reason.SCHEDULE
    night = 23 * 60
    assert decide(strict, Observation(False, night, 3.0, 90)) is Reason.LOAD
    assert decide(strict, Observation(False, night, 0.5, 90)) is Reason.HOST_CPU
    assert decide(strict, Observation(False, night, 0.5, 40)) is None
    # Unknown readings (no /proc) never pause; an empty policy never pauses.
    assert decide(strict, Observation(False, night)) is None
    assert decide(PausePolicy(), Observation(False, NOON, 99.0, 100.0)) is None


def test_activity_reports_budget_use() -> None:
    activity = Activity(State.WORKING, None, 2, 20.0, 19.0, 0)
    assert activity.budget_used_percent == pytest.approx(95.0)
    assert Activity(State.PAUSED, Reason.LOAD, 0, None, 0.0, 3).budget_used_percent is None


# --- the core announces its window ------------------------------------------------------

DEVICE = KeyPair(sha256(b"idle test device"))


def beats(outputs: list[object]) -> list[Heartbeat]:
    return [
        codec.decode(o.payload, Heartbeat)  # type: ignore[attr-defined]
        for o in outputs
        if "/heartbeat" in getattr(o, "topic", "")
    ]


def test_a_window_change_is_announced_at_once() -> None:
    core = AgentCore(DEVICE, "devnet", heartbeat_ms=2000, window=3)
    assert [b.window for b in beats(core.on_tick(1000))] == [3]
    assert beats(core.on_tick(1500)) == []  # not due
    assert core.set_window(0, 1600)
    assert [b.window for b in beats(core.on_tick(1600))] == [0]  # due at once
    assert not core.set_window(0, 1700)  # no change: nothing more
    assert beats(core.on_tick(1700)) == []
    assert core.set_window(3, 1800)
    assert [b.window for b in beats(core.on_tick(1800))] == [3]
    dropped = core.discard_paused()
    assert dropped.why is Drop.PAUSED and core.stats.dropped_paused == 1
    assert core.stats.dropped()["paused"] == 1
    with pytest.raises(ValueError):
        core.set_window(17, 1900)
    with pytest.raises(ValueError):
        AgentCore(DEVICE, "devnet", window=0)


def test_priority_is_lowered_in_a_child_process() -> None:
    """nice and SCHED_IDLE are per thread and irreversible without privileges: try them
    in a child, never in the test process."""
    code = (
        "import os; from micromine.device_agent.host import apply_priority; "
        "p = apply_priority(7, True); "
        "print(os.nice(0), p.nice, p.idle, os.sched_getscheduler(0) == os.SCHED_IDLE, "
        "len(p.problems))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout.split()
    assert out[:2] == ["7", "7"]
    assert out[2] == out[3]  # SCHED_IDLE reported as set exactly when it is
    assert (out[2] == "True") == (out[4] == "0")  # or a problem says why not
