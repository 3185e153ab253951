"""Starting and stopping the platform's own processes (devnet, tests, benchmarks).

Every child gets its own log file and its own session (so Ctrl-C in a terminal reaches
only the parent, which stops the children in order), is stopped with SIGTERM first (so
it can publish its offline status and close its database) and SIGKILL only if it does
not exit in time (:func:`stop_processes` stops many at once, within one deadline).

A child must not outlive a parent that is killed without a chance to stop it (SIGKILL,
the OOM killer, a crash): on Linux every child started from the main thread asks the
kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, see
:func:`_die_with_parent`).
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
STOP_TIMEOUT_S = 10.0  # between SIGTERM and SIGKILL
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ProcessReading:
    """What the benchmarks and the budget test read of a process: CPU and memory."""

    cpu_s: float  # user + system time since the process started
    rss_kib: int  # resident now
    hwm_kib: int  # highest resident so far


def read_process(pid: int) -> ProcessReading | None:
    """CPU and memory of ``pid`` from /proc, or None when it is gone (or not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is first
    utime, stime = int(fields[11]), int(fields[12])
    memory = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0])
    return ProcessReading(
        (utime + stime) / CLOCK_TICKS, memory.get("VmRSS", 0), memory.get("VmHWM", 0)
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class WaitTimeoutError(TimeoutError):
    """What :func:`wait_until` waited for did not come in time (the message says what it
    was, and the last value seen)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    After ``timeout`` seconds raise :class:`WaitTimeoutError`, naming what was awaited
    (``message``, or a callable that makes it then, to show the state at the deadline;
    by default the predicate) and the last value the predicate returned.  The predicate
    is asked once more after the last sleep, so a condition that came true meanwhile is
    not reported as a timeout; an exception it raises (a process that died during the
    wait) goes through.  A caller for whom a timeout is an answer, not an error, catches
    :class:`WaitTimeoutError` (devnet: "the broker did not open its port").
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    what = (message() if callable(message) else message) or repr(predicate)
    seen = repr(value)
    if len(seen) > 200:
        seen = seen[:200] + "..."
    raise WaitTimeoutError(f"timed out after {timeout:g} s waiting for {what} (last value: {seen})")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# Agents started by devnet, the tests and the benchmarks run at full speed and never
# pause: SCHED_IDLE or a CPU budget would starve them on a loaded 2-core CI machine.
# Window 4 is the ledger's own cap per device, as before windows existed, so devnet's
# throughput stays comparable with the figures in docs/PERFORMANCE.md.
FULL_SPEED_AGENT = (
    "--cpu-budget", "none", "--nice", "0", "--no-idle-priority", "--window", "4",
)  # fmt: skip


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = (ctypes.c_int, *(ctypes.c_ulong,) * 4)
    prctl.restype = ctypes.c_int
    function: Callable[..., int] = prctl
    return function


_PRCTL = _load_prctl()  # looked up here: the child between fork and exec only calls it


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when ``parent`` dies; None where
    it cannot be had (not Linux, or not the main thread).

    Why this and not only a process group: a group the parent kills in its cleanup helps
    only when the parent gets to clean up; after a SIGKILL nobody is left to do it, and
    the kernel is the only one who can.  Why SIGKILL and not SIGTERM: the parent had no
    chance to stop the children in order, so there is no order to keep, and SIGKILL
    cannot be ignored or stalled; every role survives it by design (SQLite's WAL, the
    MQTT Last Will).  Three caveats.  The signal comes when the *thread* that started the
    child ends, so only children started from the main thread, which lasts as long as
    the process, get it.  ``preexec_fn`` runs Python between fork and exec, which the
    subprocess documentation calls unsafe in a threaded process (a lock held by another
    thread at the fork stays held in the child); this one takes no lock: it calls a
    function looked up in advance and two system calls.  And a parent that died before
    the call is seen by the child afterwards: its parent is then no longer ``parent``.
    Survives exec (not exec of a set-user-ID program, which micromine never runs)."""
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl, kill = _PRCTL, int(signal.SIGKILL)

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), kill)

    return set_parent_death_signal


def stop_processes(
    processes: Iterable["ManagedProcess"], timeout: float = STOP_TIMEOUT_S
) -> dict[str, int | None]:
    """SIGTERM to every one at once, then SIGKILL to those still running after
    ``timeout`` seconds; every one waited for.  Returns each one's exit code by name
    (negative: the signal that ended it, -9 if it had to be killed)."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    while any(p.running() for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in processes:
        process.kill()
    return {process.name: process.stop() for process in processes}


class ManagedProcess:
    """A child process with a name, a log file and a bounded, graceful stop."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        environment = dict(os.environ)
        environment.setdefault("PYTHONUNBUFFERED", "1")
        if self.env:
            environment.update(self.env)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,  # Ctrl-C in a terminal reaches only the orchestrator
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - see _die_with_parent
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def terminate(self) -> None:
        """SIGTERM, without waiting (:meth:`stop` waits)."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.proc.wait(timeout=10)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
