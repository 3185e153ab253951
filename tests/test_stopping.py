"""SIGTERM means what Ctrl-C means (common/signals.py), and no child outlives devnet.

The process tests find what they started, and what that started, by a tag in the
environment (tests/framework/tagged_processes.py).
"""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from framework.tagged_processes import kill_tagged, new_tag, tagged, tagged_environment

from micromine.common.signals import EXIT_STOPPED, StopSignals, sigterm_as_sigint, until_stopped
from micromine.processes import free_port, wait_until

DEVNET_FLAGS = ("--ledgers", "4", "--agents", "2", "--tx-rate", "10", "--duration", "60")
CHILDREN = 1 + 4 + 2  # broker, ledgers, agents (the load generator starts later)


def micromine_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "micromine", *args]


# ---- in one process: the signal rules ------------------------------------------------


def test_sigterm_raises_keyboard_interrupt_inside_the_block_and_not_after() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_sigint(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_command_that_runs_until_stopped_exits_0_on_sigterm() -> None:
    @until_stopped
    def serve() -> int:
        signal.raise_signal(signal.SIGTERM)
        return 1  # not reached

    assert serve() == EXIT_STOPPED


def test_the_first_stop_signal_interrupts_the_run_and_later_ones_leave_the_cleanup_alone() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        assert not stop.armed
        signal.raise_signal(signal.SIGTERM)  # timeout's second copy, to the process group
        signal.raise_signal(signal.SIGINT)  # or an impatient Ctrl-C: counted, not raised
        assert stop.received == 3
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_signal_inside_a_deferred_block_raises_at_its_end() -> None:
    with StopSignals() as stop:
        finished = False
        with pytest.raises(KeyboardInterrupt), stop.deferred():
            signal.raise_signal(signal.SIGTERM)
            finished = True  # the block is not cut in two
        assert finished and not stop.armed
    with StopSignals() as stop:
        with stop.deferred():
            pass
        assert stop.armed  # no signal came: the next one still interrupts
        stop.disarm()
        signal.raise_signal(signal.SIGTERM)  # after the run: counted only
        assert stop.received == 1


# ---- real processes ------------------------------------------------------------------


@pytest.mark.integration
def test_a_child_is_killed_with_its_parent(tmp_path: Path) -> None:
    """A parent that is SIGKILLed cannot stop its ManagedProcess children; the kernel
    does (PR_SET_PDEATHSIG)."""
    tag = new_tag()
    parent_code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from micromine.processes import ManagedProcess\n"
        "child = ManagedProcess('sleeper', ['sleep', '600'], Path(sys.argv[1])).start()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", parent_code, str(tmp_path / "sleeper.log")],
        stdout=subprocess.PIPE,
        text=True,
        env=tagged_environment(tag),
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert child in tagged(tag)
        finally:
            parent.kill()
    try:
        wait_until(lambda: not tagged(tag), 10, message=lambda: f"still alive: {tagged(tag)}")
    finally:
        kill_tagged(tag)


@pytest.mark.integration
def test_devnet_under_timeout_leaves_no_process_behind_and_prints_its_summary(
    tmp_path: Path,
) -> None:
    """``timeout -s TERM 20 micromine devnet ...``: what CI, systemd or ``docker stop``
    do.  ``--preserve-status`` makes ``timeout`` exit with devnet's own code."""
    timeout = shutil.which("timeout")
    if timeout is None:
        pytest.skip("coreutils' timeout is not installed")
    tag = new_tag()
    data_dir = tmp_path / "devnet"
    out, err = tmp_path / "devnet.out", tmp_path / "devnet.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        run = subprocess.Popen(
            [timeout, "-s", "TERM", "--preserve-status", "20",
             *micromine_command("devnet", *DEVNET_FLAGS, "--json", "--data-dir", str(data_dir))],
            stdout=stdout, stderr=stderr, env=tagged_environment(tag),
        )  # fmt: skip
        seen: set[int] = set()
        try:
            # Record every process of the run while it lasts: 20 s, then the stop.
            wait_until(
                lambda: seen.update(tagged(tag)) or run.poll() is not None,
                60,
                interval=0.1,
                message="devnet to stop within 40 s of its SIGTERM",
            )
        finally:
            if run.poll() is None:
                kill_tagged(tag)
            code = run.wait(timeout=10)
    log = err.read_text()
    assert code == EXIT_STOPPED, log[-3000:]
    assert len(seen - {run.pid}) >= 2, (seen, log[-3000:])  # devnet and its first child
    assert not tagged(tag), f"left behind: {tagged(tag)}"
    assert "devnet: interrupted; stopping every process" in log
    assert "devnet summary: " in log
    summary: dict[str, Any] = json.loads(out.read_text().splitlines()[-1])
    assert summary["interrupted"] is True
    codes = summary["exit_codes"]
    assert {f"ledger-{i}" for i in range(1, 5)} | {"broker", "agent-1", "agent-2"} <= set(codes)
    assert -signal.SIGKILL not in codes.values(), codes  # each one stopped by itself in time
    if "submitted" in summary:  # the load had started, so every child was up (and seen),
        assert len(seen - {run.pid}) >= 1 + CHILDREN + 1, seen  # and each one handled
        assert set(codes.values()) == {0}, codes  # its SIGTERM and exited 0


@pytest.mark.integration
def test_devnet_killed_takes_its_children_with_it(tmp_path: Path) -> None:
    tag = new_tag()
    err = tmp_path / "devnet.err"
    with err.open("w") as stderr:
        devnet = subprocess.Popen(
            micromine_command("devnet", *DEVNET_FLAGS, "--data-dir", str(tmp_path / "devnet")),
            stdout=subprocess.DEVNULL, stderr=stderr, env=tagged_environment(tag),
        )  # fmt: skip
        try:
            # Said once the broker, the ledgers and the agents have been started.
            wait_until(
                lambda: "waiting for 2 devices" in err.read_text() or devnet.poll() is not None,
                90,
                interval=0.1,
                message="devnet to start its cluster",
            )
            children = tagged(tag) - {devnet.pid}
            assert len(children) >= CHILDREN, (children, err.read_text()[-3000:])
        finally:
            devnet.kill()
            devnet.wait(timeout=10)
    try:
        wait_until(lambda: not tagged(tag), 10, message=lambda: f"still alive: {tagged(tag)}")
    finally:
        kill_tagged(tag)


@pytest.mark.integration
def test_load_stopped_by_sigterm_reports_what_it_did_and_exits_0(
    tmp_path: Path, embedded_broker: Any
) -> None:
    err = tmp_path / "load.err"
    report = tmp_path / "load.json"
    with err.open("w") as stderr:
        load = subprocess.Popen(
            micromine_command("load", "--broker", embedded_broker.url, "--tx-rate", "20",
                              "--duration", "600", "--report", str(report)),
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
        try:
            wait_until(
                lambda: "load started" in err.read_text() or load.poll() is not None,
                60,
                message="the load generator to connect",
            )
            load.send_signal(signal.SIGTERM)
            stdout, _ = load.communicate(timeout=30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(timeout=10)
    assert load.returncode == EXIT_STOPPED, err.read_text()[-3000:]
    printed = json.loads(stdout.splitlines()[-1])
    assert printed["interrupted"] is True and printed["submitted"] >= 0
    assert json.loads(report.read_text()) == printed


@pytest.mark.integration
def test_blocks_watch_stopped_by_sigterm_says_how_many_blocks_and_exits_0(
    embedded_broker: Any,
) -> None:
    watch = subprocess.Popen(
        micromine_command("blocks", "watch", "--broker", embedded_broker.url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watch.stderr is not None
        assert watch.stderr.readline().startswith("watching")  # connected and subscribed
        watch.send_signal(signal.SIGTERM)
        _, stderr = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(timeout=10)
    assert watch.returncode == EXIT_STOPPED, stderr
    assert "blocks watch: 0 blocks, 0 undecodable" in stderr


@pytest.mark.integration
def test_a_one_shot_command_cut_short_by_sigterm_exits_130(tmp_path: Path) -> None:
    """``tx send`` waits for a broker nobody runs; SIGTERM ends it as Ctrl-C would."""
    key = tmp_path / "wallet.key"
    subprocess.run(micromine_command("keys", "new", str(key)), check=True, capture_output=True)
    closed_port = free_port()  # bound, then released: nothing listens there
    send = subprocess.Popen(
        micromine_command("tx", "send", "--broker", f"mqtt://127.0.0.1:{closed_port}",
                          "--key", str(key), "--to", "cd" * 32, "--amount", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert send.stdout is not None
        assert send.stdout.readline().startswith("tx ")  # signed; now connecting
        send.send_signal(signal.SIGTERM)
        send.communicate(timeout=30)
    finally:
        if send.poll() is None:
            send.kill()
            send.wait(timeout=10)
    assert send.returncode == 130
