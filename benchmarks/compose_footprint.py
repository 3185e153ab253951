"""What each role of docker-compose.yml costs: memory and CPU per process, under load.

    python benchmarks/compose_footprint.py [--seconds 60] [--agents 3] [--tx-rate 20]

Starts the compose file's own services as local processes (tests/framework/compose_runner.py: the
same commands, environment and volumes), lets them run ``--seconds`` after the first
committed block, then prints each process's resident memory (VmRSS, peak VmHWM) and its
CPU use over that time as a percentage of one core.  Linux only (/proc).  Figures go in
docs/DEPLOY.md (sizing) with this command.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from framework.compose_runner import ComposeProcesses, load_compose

from micromine.ledger_node.storage import ChainReader
from micromine.processes import ManagedProcess, WaitTimeoutError, read_process, wait_until


def cpu_seconds(process: ManagedProcess) -> float:
    """User + system CPU of the process (children are not counted: there are none)."""
    reading = read_process(process.pid)
    return reading.cpu_s if reading is not None else 0.0


def memory_kib(process: ManagedProcess) -> dict[str, int]:
    reading = read_process(process.pid)
    if reading is None:
        return {"VmRSS": 0, "VmHWM": 0}
    return {"VmRSS": reading.rss_kib, "VmHWM": reading.hwm_kib}


def measure(cluster: ComposeProcesses, seconds: float) -> dict[str, Any]:
    """Each running process's CPU over ``seconds`` and memory at the end, and the chain."""
    db = cluster.volume_dir("ledger-1") / "ledger.sqlite"
    try:
        wait_until(lambda: db.exists() and db.stat().st_size > 0, 60, message="a ledger database")
    except WaitTimeoutError:
        raise RuntimeError("no ledger database after 60 s") from None
    running = [p for p in cluster.all_processes() if p.running()]
    before = {p.name: cpu_seconds(p) for p in running}
    started = time.monotonic()
    time.sleep(seconds)  # a measurement window, not a synchronisation
    elapsed = time.monotonic() - started
    rows = [
        {
            "process": p.name,
            "cpu_percent_of_one_core": round(100 * (cpu_seconds(p) - before[p.name]) / elapsed, 1),
            **{k: round(v / 1024, 1) for k, v in memory_kib(p).items()},
        }
        for p in running
    ]
    with ChainReader.open(db) as chain:
        committed, height = chain.committed_count(), chain.height()
    db_bytes = sum(f.stat().st_size for f in db.parent.glob("ledger.sqlite*"))
    return {"processes": rows, "height": height, "committed_txs": committed,
            "ledger_db_bytes": db_bytes}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--tx-rate", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compose = load_compose(env={"LOAD_TX_RATE": f"{args.tx_rate:g}", "LOAD_DURATION": "1e9"})
    with (
        tempfile.TemporaryDirectory(prefix="compose-footprint-") as root,
        ComposeProcesses(Path(root), compose, replicas={"agent": args.agents}) as cluster,
    ):
        cluster.up()
        result = measure(cluster, args.seconds)
    if args.json:
        print(json.dumps(result))
        return 0
    rows = result.pop("processes")
    print(", ".join(f"{k} {v}" for k, v in result.items()))
    print(f"{'process':12} {'CPU % of a core':>16} {'RSS MiB':>8} {'peak MiB':>9}")
    for row in rows:
        print(f"{row['process']:12} {row['cpu_percent_of_one_core']:16.1f} "
              f"{row['VmRSS']:8.1f} {row['VmHWM']:9.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
