"""The device agent's footprint: memory at rest and under load, CPU per transaction, budget.

    python benchmarks/agent_footprint.py [--idle 20] [--load 30] [--rate 20] [--in-flight 4]
        [--budget 20 --budget-seconds 60 --budget-rate 30] [--python PY] [--json FILE]

``--python`` runs the agent with another interpreter, e.g. that of a venv holding only
what ``pip install micromine`` brings (as on a Raspberry Pi): the development venv has
more packages that the agent's libraries pick up when present (structlog imports rich),
which costs a few MB.

Starts the embedded broker and ONE real agent process (``python -m
micromine.device_agent``), plays the ledger node itself (pre-signed WorkBatches of 256
valid transactions under an ``--issuer`` key the agent trusts), and reads the agent's
/proc/<pid>/status (VmRSS, VmHWM) and /proc/<pid>/stat (utime + stime):

1. **rest**: RSS once connected, and the CPU it uses over ``--idle`` seconds with no work
   (heartbeats only);
2. **load**: a steady flood of ``--rate`` batches a second for ``--load`` seconds (below
   the agent's own work-rate limit, core.WORK_RATE): peak RSS, CPU seconds per verified
   transaction (counted from the verdicts that come back), CPU share;
3. **budget**: a new agent with ``--cpu-budget BUDGET`` under a flood that wants more than
   the budget, for ``--budget-seconds``: the CPU share it takes, and whether that is
   within 10 % of the budget.  Skipped (and said so) while no agent module besides the
   settings ones mentions ``cpu_budget``; ``--force-budget`` runs it anyway.

Phases 1 and 2 run the agent as devnet does, ``--cpu-budget none --nice 0
--no-idle-priority``, so only the work limits it.  Writes JSON (default
benchmarks/results/agent_footprint.json, not committed: the figures go in
docs/PERFORMANCE.md with this command) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micromine.common.logs import configure_logging
from micromine.common.mqtt import Incoming, LinkConfig, MqttLink
from micromine.processes import (
    ManagedProcess,
    WaitTimeoutError,
    free_port,
    port_open,
    python_module,
    read_process,
    wait_until,
)
from micromine.protocol import codec, topics
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello
from micromine.protocol.limits import MAX_BATCH_TXS
from micromine.protocol.messages import Assignment, Transaction, WorkBatch

CHAIN = "footprint"
ISSUER = KeyPair(sha256(b"footprint issuer"))
START_TIMEOUT_S = 60.0
UNBUDGETED = ("--cpu-budget", "none", "--nice", "0", "--no-idle-priority")
# Modules of the agent that only parse settings: a budget named there is not yet enforced.
_SETTINGS_ONLY = {"config.py", "settings.py", "parsers.py", "systemd.py", "cli.py", "__init__.py"}


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    cpu_s: float  # utime + stime
    rss_kb: int
    hwm_kb: int


def sample(pid: int) -> Sample:
    reading = read_process(pid)
    if reading is None:
        raise RuntimeError(f"the agent (pid {pid}) is gone")
    return Sample(time.monotonic(), reading.cpu_s, reading.rss_kib, reading.hwm_kib)


def signed_txs(now_ms: int) -> tuple[Transaction, ...]:
    senders = [KeyPair(sha256(b"footprint sender %d" % i)) for i in range(MAX_BATCH_TXS)]
    recipient = KeyPair(sha256(b"footprint recipient")).public
    txs = []
    for sender in senders:
        tx = Transaction(CHAIN, sender.public, recipient, 5, 1, 0, now_ms + 86_400_000, "")
        txs.append(codec.sign(tx, sender))
    return tuple(txs)


class Ledger:
    """Plays the ledger node: sends pre-signed work, counts the verdicts that come back."""

    def __init__(self, url: str) -> None:
        filters = ((topics.all_devices(CHAIN), 1), (topics.all_verdicts(CHAIN), 1))
        self.link = MqttLink(LinkConfig("footprint-ledger", url, subscriptions=filters))
        self.link.start()
        if not self.link.wait_connected(START_TIMEOUT_S):
            raise SystemExit("the benchmark's ledger client could not connect")
        self.device: bytes | None = None
        self.verdicts = 0
        self.txs = signed_txs(int(time.time() * 1000))
        self.root = compute_batch_root(self.txs)
        self.seq = 0

    def pump(self, timeout: float = 0.05) -> None:
        while (item := self.link.get(timeout)) is not None:
            timeout = 0
            if not isinstance(item, Incoming):
                continue
            if item.topic.endswith("/hello"):
                self.device = codec.decode(item.payload, DeviceHello).device
            elif "/verdicts/" in item.topic:
                self.verdicts += 1

    def batches(self, count: int) -> list[bytes]:
        """``count`` encoded batches, each under a fresh assignment (else: duplicates)."""
        deadline = int(time.time() * 1000) + 3_600_000
        made = []
        for _ in range(count):
            self.seq += 1
            unsigned = Assignment(CHAIN, ISSUER.public, self.seq, 0, deadline, self.root)
            made.append(codec.encode(WorkBatch(codec.sign(unsigned, ISSUER), self.txs)))
        return made

    def flood(self, device: bytes, rate: float, seconds: float, in_flight: int) -> int:
        """Send ``rate`` batches a second for ``seconds``, at most ``in_flight`` unanswered.

        A ledger node keeps at most ``window`` (2) batches unanswered per device; the cap
        does the same, so that memory under load is the agent's, not a backlog the
        benchmark built up in the broker and the agent's inbox.
        """
        payloads = self.batches(max(1, round(rate * seconds)))
        topic = topics.work(CHAIN, device)
        started, answered = time.monotonic(), self.verdicts
        for index, payload in enumerate(payloads):
            while (due := started + index / rate - time.monotonic()) > 0 or (
                index - (self.verdicts - answered) >= in_flight
            ):
                self.pump(min(max(due, 0.001), 0.05))
            self.link.publish(topic, payload, 1, False)
        return len(payloads)


def start_agent(url: str, work: Path, extra: tuple[str, ...], python: str) -> ManagedProcess:
    # -P: run from the sources, the folder `micromine/` in the working directory would shadow
    # the package installed in another venv (--python).
    argv = (
        python, "-P", "-m", "micromine.device_agent", "--broker", url, "--chain", CHAIN,
        "--state-dir", str(work / "agent"), "--issuer", ISSUER.public.hex(),
        "--capacity", str(MAX_BATCH_TXS), "--log-level", "warning", *extra,
    )  # fmt: skip
    return ManagedProcess("agent", argv, work / "agent.log").start()


def pump_for(ledger: Ledger, seconds: float) -> None:
    """Answer the agent for ``seconds``: a measurement window, not a wait for anything."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ledger.pump()


def connect(ledger: Ledger, agent: ManagedProcess) -> bytes:
    ledger.device = None
    try:
        wait_until(lambda: ledger.pump() or ledger.device is not None, START_TIMEOUT_S)
    except WaitTimeoutError:
        raise SystemExit(f"the agent did not say hello:\n{agent.log_tail()}") from None
    assert ledger.device is not None
    return ledger.device


def phase_rest(agent: ManagedProcess, ledger: Ledger, seconds: float) -> dict[str, Any]:
    pump_for(ledger, 3.0)  # let start-up settle
    first = sample(agent.pid)
    pump_for(ledger, seconds)
    last = sample(agent.pid)
    cpu = last.cpu_s - first.cpu_s
    return {"rss_mb": last.rss_kb / 1024, "hwm_mb": last.hwm_kb / 1024, "seconds": seconds,
            "cpu_s": cpu, "cpu_percent": 100 * cpu / (last.at - first.at)}  # fmt: skip


def phase_load(
    agent: ManagedProcess, ledger: Ledger, device: bytes, args: argparse.Namespace
) -> dict[str, Any]:
    rate, seconds, in_flight = args.rate, args.load, args.in_flight
    before = ledger.verdicts
    first = sample(agent.pid)
    peak = first.rss_kb
    sent = 0
    for _ in range(max(1, round(seconds))):  # one second at a time, sampling RSS in between
        sent += ledger.flood(device, rate, 1.0, in_flight)
        peak = max(peak, sample(agent.pid).rss_kb)
    with contextlib.suppress(WaitTimeoutError):  # what did not come is reported as missing
        wait_until(lambda: ledger.pump() or ledger.verdicts - before >= sent, START_TIMEOUT_S)
    last = sample(agent.pid)
    verified = (ledger.verdicts - before) * MAX_BATCH_TXS
    cpu = last.cpu_s - first.cpu_s
    return {
        "offered_batches_per_s": rate, "in_flight": in_flight,
        "batches_sent": sent, "verdicts": ledger.verdicts - before, "txs_verified": verified,
        "seconds": last.at - first.at, "cpu_s": cpu,
        "cpu_percent": 100 * cpu / (last.at - first.at),
        "cpu_us_per_tx": 1e6 * cpu / verified if verified else None,
        "txs_per_s": verified / (last.at - first.at),
        "rss_peak_mb": peak / 1024, "hwm_mb": last.hwm_kb / 1024,
    }  # fmt: skip


def budget_implemented() -> bool:
    agent_dir = Path(__file__).resolve().parent.parent / "device_agent"
    return any(
        "cpu_budget" in path.read_text()
        for path in agent_dir.glob("*.py")
        if path.name not in _SETTINGS_ONLY
    )


def phase_budget(url: str, work: Path, ledger: Ledger, args: argparse.Namespace) -> dict[str, Any]:
    budget, rate, seconds = args.budget, args.budget_rate, args.budget_seconds
    agent = start_agent(url, work, ("--cpu-budget", f"{budget:g}", "--nice", "0",
                                    "--no-idle-priority"), args.python)  # fmt: skip
    try:
        device = connect(ledger, agent)
        before, first = ledger.verdicts, sample(agent.pid)
        sent = ledger.flood(device, rate, seconds, args.in_flight)
        last = sample(agent.pid)
        share = 100 * (last.cpu_s - first.cpu_s) / (last.at - first.at)
        return {
            "budget_percent": budget, "seconds": last.at - first.at, "cpu_percent": share,
            "within_10_percent": share <= budget * 1.1, "batches_sent": sent,
            "verdicts": ledger.verdicts - before, "demand_batches_per_s": rate,
        }  # fmt: skip
    finally:
        agent.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle", type=float, default=20.0, help="seconds at rest (default 20)")
    parser.add_argument("--load", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="batches of 256 a second under load (default 20)")  # fmt: skip
    parser.add_argument("--in-flight", type=int, default=4,
                        help="most batches unanswered (a ledger's window; default 4)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=20.0, help="--cpu-budget (default 20)")
    parser.add_argument("--budget-seconds", type=float, default=60.0)
    parser.add_argument("--force-budget", action="store_true",
                        help="run the budget phase even if no agent module uses it")  # fmt: skip
    parser.add_argument("--budget-rate", type=float, default=30.0,
                        help="batches a second offered under the budget (default 30)")  # fmt: skip
    parser.add_argument("--python", default=sys.executable,
                        help="the agent's interpreter, e.g. a venv with only `pip install .` "
                             "(default: this one; the broker always runs here)")  # fmt: skip
    results = Path(__file__).parent / "results"
    parser.add_argument("--json", type=Path, default=results / "agent_footprint.json")
    args = parser.parse_args()
    configure_logging("warning")

    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "agent_python": args.python,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    with tempfile.TemporaryDirectory(prefix="footprint-") as tmp:
        work = Path(tmp)
        port = free_port()
        url = f"mqtt://127.0.0.1:{port}"
        broker = ManagedProcess("broker", python_module(
            "micromine.broker", "--host", "127.0.0.1", "--port", str(port),
            "--ws-port", str(free_port())), work / "broker.log").start()  # fmt: skip
        try:
            try:
                wait_until(lambda: port_open("127.0.0.1", port), START_TIMEOUT_S)
            except WaitTimeoutError:
                raise SystemExit(f"the broker did not start:\n{broker.log_tail()}") from None
            ledger = Ledger(url)
            agent = start_agent(url, work, UNBUDGETED, args.python)
            try:
                device = connect(ledger, agent)
                result["rest"] = phase_rest(agent, ledger, args.idle)
                result["load"] = phase_load(agent, ledger, device, args)
            finally:
                agent.stop()
            if args.force_budget or budget_implemented():
                result["budget"] = phase_budget(url, work, ledger, args)
            else:
                result["budget"] = {"skipped": "agent has no --cpu-budget (not enforced yet)"}
            ledger.link.close()
        finally:
            broker.stop()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


def print_table(result: dict[str, Any]) -> None:
    rest, load, budget = result["rest"], result["load"], result["budget"]
    print(f"agent footprint on {result['machine']}")
    print(f"  at rest     RSS {rest['rss_mb']:.1f} MB, CPU {rest['cpu_s']:.2f} s in "
          f"{rest['seconds']:.0f} s ({rest['cpu_percent']:.2f} %)")  # fmt: skip
    print(f"  under load  RSS peak {load['rss_peak_mb']:.1f} MB (VmHWM {load['hwm_mb']:.1f}), "
          f"{load['txs_per_s']:.0f} tx/s verified, CPU {load['cpu_percent']:.0f} %, "
          f"{load['cpu_us_per_tx']:.1f} us CPU per tx")  # fmt: skip
    if "skipped" in budget:
        print(f"  budget      skipped: {budget['skipped']}")
    else:
        print(f"  budget      --cpu-budget {budget['budget_percent']:g}: "
              f"{budget['cpu_percent']:.1f} % over {budget['seconds']:.0f} s "
              f"({'within' if budget['within_10_percent'] else 'NOT within'} 10 %)")  # fmt: skip


if __name__ == "__main__":
    main()
