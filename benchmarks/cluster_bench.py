"""The whole cluster under increasing offered load: throughput, latency, CPU and memory
per role, against the embedded broker and Mosquitto, and a baseline without devices.

    python benchmarks/cluster_bench.py [--quick] [--out benchmarks/results]
    make bench

Each configuration starts once (micromine/devnet.py's processes: broker, ledger nodes,
agents) and steps the offered load up: per step, one load generator process (fresh
senders, every transaction signed before its clock starts) submits at the step's rate
for ``--step-seconds`` and waits for its transactions to settle.  Per step it reports
submitted and committed tx/s, submit-to-COMMITTED latency p50/p99, CPU seconds per
committed transaction and resident memory for each role (broker, ledger, agent,
loadgen), and the efficiency: committed tx/s over the machine's limit for k-fold
verification (cluster_measure.py).  Stepping stops early once a step commits under
SATURATED of what it offered: higher rates would only pile up a backlog.

Configurations: ``embedded`` and ``mosquitto`` (4 ledger nodes, 6 agents, k = 3,
q = 2, signatures left to the devices: recheck_tx_signatures 0; Mosquitto on the
configuration ``micromine broker mosquitto-config`` writes), and ``baseline``
(the embedded broker, one ledger node, no agents, q = 0: the node verifies every
signature itself; docs/PERFORMANCE.md).  Progress goes to stderr, the table to stdout,
everything to ``<out>/cluster.json`` and the curves to ``<out>/cluster_*.png``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cluster_measure import (
    compute_efficiency,
    describe_machine,
    measure_verify_rates,
    role_usage,
    snapshot,
)
from cluster_report import draw_curves, format_table

from micromine.common.keyfile import load_or_create_key
from micromine.common.logs import configure_logging
from micromine.common.mqtt import LinkConfig, Login, LoginMode, MqttLink
from micromine.devnet import (
    Devnet,
    Progress,
    add_devnet_arguments,
    as_count,
    drain,
    follow_load,
    wait_for_devices,
)
from micromine.loadgen import sender_key
from micromine.processes import FULL_SPEED_AGENT, free_port, python_module
from micromine.protocol import topics
from micromine.protocol.auth import compute_static_password
from micromine.protocol.genesis import ChainParams

SATURATED = 0.7  # a step committing less than this share of its offered rate ends the run


@dataclass(frozen=True, slots=True)
class Config:
    name: str
    broker: str  # "embedded" or "mosquitto"
    ledgers: int
    agents: int
    k: int
    q: int

    @property
    def verifications_per_tx(self) -> int:
        return self.k if self.q else 1  # the baseline: the node's own check


def configurations(args: argparse.Namespace) -> list[Config]:
    full = {
        "embedded": Config("embedded", "embedded", args.ledgers, args.agents, args.k, args.q),
        "mosquitto": Config("mosquitto", "mosquitto", args.ledgers, args.agents, args.k, args.q),
        "baseline": Config("baseline", "embedded", 1, 0, 1, 0),
    }
    return [full[name] for name in args.configs.split(",")]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class BenchDevnet(Devnet):
    """devnet's cluster (micromine/cluster.py; its agents run at full speed:
    processes.FULL_SPEED_AGENT), with each process's role for the CPU and memory readings."""

    def roles(self) -> dict[str, list[int]]:
        roles: dict[str, list[int]] = {"broker": [], "ledger": [], "agent": []}
        for name, process in self.cluster.processes.items():
            role = name.split("-")[0]
            if role in roles and process.running():
                roles[role].append(process.pid)
        return roles


def devnet_args(config: Config, args: argparse.Namespace, senders: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_devnet_arguments(parser)
    return parser.parse_args([
        "--ledgers", str(config.ledgers), "--agents", str(config.agents),
        "--k", str(config.k), "--q", str(config.q), "--senders", str(senders),
        "--recheck-tx-signatures", "0", "--chain", "bench",
        "--max-block-txs", str(args.max_block_txs),
    ])  # fmt: skip


def start_mosquitto(devnet: Devnet, first_senders: list[int]) -> str:
    """Mosquitto on the configuration ``micromine broker mosquitto-config`` writes, as an
    operator runs it: every key of the cluster (ledger nodes, operator, agents, each
    step's load generator) logs in with its static password, under the topic ACL."""
    dargs, data_dir, cluster = devnet.args, devnet.data_dir, devnet.cluster
    cluster.write_genesis()  # once: the cluster's start keeps it
    genesis = cluster.genesis_path
    keys = [cluster.ledger_key_path(i) for i in range(dargs.ledgers)]
    keys.append(data_dir / "operator.key")  # and the agents' (agent_keys makes the files):
    keys += [cluster.agent_key_path(i) for i in devnet.agent_keys()]
    passwords = [
        f"{key.public.hex()}={compute_static_password(key, dargs.chain)}"
        for key in (sender_key(i) for i in first_senders)
    ]
    port, out = free_port(), data_dir / "mosquitto"
    subprocess.run(
        python_module("micromine", "broker", "mosquitto-config", "--genesis", str(genesis),
                      "--out", str(out), "--port", str(port),
                      *(f"--key={key}" for key in keys), *(f"--password={p}" for p in passwords)),
        check=True, capture_output=True,
    )  # fmt: skip
    conf = out / "mosquitto.conf"
    if os.geteuid() == 0:  # else mosquitto drops to its own user, who cannot read our files
        conf.write_text(conf.read_text() + "user root\n")
    binary = next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        "mosquitto",
    )
    return cluster.start_broker([binary, "-c", str(conf)], port)


def run_config(config: Config, args: argparse.Namespace, verify_rate: float) -> dict[str, Any]:
    senders_per_step = args.senders_per_step
    dargs = devnet_args(config, args, senders_per_step * len(args.steps))
    if config.broker == "mosquitto":
        dargs.login = "password"
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{config.name}-"))
    devnet = BenchDevnet(dargs, data_dir)
    steps: list[dict[str, Any]] = []
    say(f"bench: {config.name}: {config.ledgers} ledger(s), {config.agents} agents, "
        f"k={config.k} q={config.q}; logs in {data_dir} (--keep keeps them)")  # fmt: skip
    try:
        if config.broker == "mosquitto":
            firsts = [i * senders_per_step for i in range(len(args.steps))]
            start_mosquitto(devnet, firsts)
        devnet.cluster.start()
        operator = load_or_create_key(data_dir / "operator.key")
        monitor = MqttLink(LinkConfig(
            client_id=f"bench-monitor-{free_port()}", broker_url=devnet.broker_url,
            subscriptions=((topics.blocks_json(dargs.chain), 1),
                           (f"micromine/{dargs.chain}/ledger/+/status", 1)),
            inbox_max=100_000, login=Login(operator, dargs.chain, LoginMode(dargs.login)),
        ))  # fmt: skip
        progress = Progress()
        with monitor:
            if not monitor.wait_connected(30):
                raise RuntimeError(f"cannot reach the broker at {devnet.broker_url}")
            wait_for_devices(monitor, progress, dargs)
            deadline = time.monotonic() + 30
            while config.agents and progress.height < 1 and time.monotonic() < deadline:
                drain(monitor, progress, dargs.chain, 0.2)  # block 1 registers the devices
            for index, rate in enumerate(args.steps):
                step = run_step(devnet, monitor, progress, args=args, index=index, rate=rate)
                step["efficiency"] = round(
                    compute_efficiency(
                        step["committed_tps"], args.cores, verify_rate, config.verifications_per_tx
                    ),
                    4,
                )
                steps.append(step)
                say(f"bench: {config.name} {rate:g} tx/s offered: {step['submitted_tps']:.0f} "
                    f"submitted/s, {step['committed_tps']:.0f} committed/s, p50 "
                    f"{step['p50_latency_s']} s, p99 {step['p99_latency_s']} s")  # fmt: skip
                if step["committed_tps"] < SATURATED * rate:
                    say(f"bench: {config.name} saturated at {rate:g} tx/s offered; stopping")
                    break
    finally:
        devnet.cluster.stop()
    if not args.keep:  # a failure raised above and left the logs for reading
        shutil.rmtree(data_dir, ignore_errors=True)
    kept = str(data_dir) if args.keep else None
    return {"config": asdict(config), "steps": steps, "data_dir": kept}


def run_step(
    devnet: BenchDevnet,
    monitor: MqttLink,
    progress: Progress,
    *,
    args: argparse.Namespace,
    index: int,
    rate: float,
) -> dict[str, Any]:
    """One load generator at ``rate`` for ``args.step_seconds``; the cluster's CPU is
    read from the moment it starts submitting (after presigning) until it exits."""
    dargs = devnet.args
    report_path = devnet.data_dir / f"step-{index}.json"
    load = devnet.cluster.spawn(f"loadgen-{index}", python_module(
        "micromine.loadgen", "--broker", devnet.broker_url, "--chain", dargs.chain,
        "--senders", str(args.senders_per_step),
        "--first-sender", str(index * args.senders_per_step),
        "--tx-rate", str(rate), "--duration", str(args.step_seconds),
        "--settle", str(args.settle_seconds), "--presign", "--report", str(report_path),
        *devnet.cluster.link_flags,
    ))  # fmt: skip
    while load.running() and "load started" not in load.log_path.read_text(errors="replace"):
        drain(monitor, progress, dargs.chain, 0.05)
    roles = devnet.roles()
    before = snapshot(pid for pids in roles.values() for pid in pids)
    blocks_before = progress.blocks
    follow_load(devnet, monitor, progress, load, first_line=1.0)
    after = snapshot(pid for pids in roles.values() for pid in pids)
    if load.returncode() != 0 or not report_path.exists():
        raise RuntimeError(f"the load generator failed:\n{load.log_tail()}")
    report = json.loads(report_path.read_text())
    usage = role_usage(roles, before, after)
    usage["loadgen"] = {
        "processes": 1,
        "cpu_s": report["cpu_s"],
        "rss_mib": round(report["max_rss_kib"] / 1024, 1),
        "peak_rss_mib_per_process": round(report["max_rss_kib"] / 1024, 1),
    }
    committed = report["committed"]
    commit_span = max(1.0, report["last_commit_s"] - report["first_commit_s"])  # a block or more
    for role in usage.values():
        role["cpu_ms_per_tx"] = round(1000 * role["cpu_s"] / committed, 3) if committed else None
    return {
        "offered_tps": rate,
        "submitted": report["submitted"],
        "submitted_tps": round(report["submitted"] / max(1e-9, report["submit_span_s"]), 1),
        "committed": committed,
        "committed_tps": round(committed / commit_span, 1) if committed > 1 else 0.0,
        "commit_span_s": round(commit_span, 2),
        "unresolved": report["unresolved"],
        "rejected": report["rejected"],
        "rejections": report["rejections"],
        "p50_latency_s": report["p50_latency_s"],
        "p99_latency_s": report["p99_latency_s"],
        "blocks": progress.blocks - blocks_before,
        "roles": usage,
        "ledgers": ledger_summary(progress),
    }


def ledger_summary(progress: Progress) -> dict[str, Any]:
    """What the ledger nodes' latest statuses say at the end of a step: why a step
    stalled shows here (consensus rounds, re-dispatched batches, drops)."""
    statuses = list(progress.ledgers.values())

    def most(name: str) -> int:
        return max((as_count(s.get(name)) for s in statuses), default=0)

    return {
        "heights": sorted(as_count(s.get("height")) for s in statuses),
        **{
            name: most(name)
            for name in (
                "round",
                "mempool",
                "redispatched",
                "reissued",
                "settled",
                "audited",
                "checked_in_blocks",
            )
        },
        "dropped": progress.drops(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: one ledger, three agents, two small steps, "
                        "embedded broker and baseline (about a minute)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--configs", default="embedded,mosquitto,baseline",
                        help="comma-separated: embedded, mosquitto, baseline")  # fmt: skip
    parser.add_argument("--steps", default="125,250,500,1000,2000,4000",
                        help="offered tx/s per step, comma-separated")  # fmt: skip
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--settle-seconds", type=float, default=12.0,
                        help="at most this long a step waits for its transactions")  # fmt: skip
    parser.add_argument("--senders-per-step", type=int, default=256)
    parser.add_argument("--keep", action="store_true", help="keep each cluster's logs and keys")
    parser.add_argument("--ledgers", type=int, default=4)
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--q", type=int, default=2)
    parser.add_argument("--verify-seconds", type=float, default=2.0)
    parser.add_argument("--max-block-txs", type=int, default=ChainParams().max_block_txs,
                        help="the genesis parameter (beyond saturation, large proposals "
                        "outlast the consensus timeouts: docs/PERFORMANCE.md)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.steps, args.step_seconds, args.settle_seconds = (
            "embedded,baseline", "50,100", 3.0, 6.0
        )  # fmt: skip
        args.ledgers, args.agents, args.senders_per_step, args.verify_seconds = 1, 3, 16, 0.3
    args.steps = [float(x) for x in str(args.steps).split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")
    started = time.monotonic()
    machine = describe_machine()
    args.cores = machine["cores"]
    say(f"bench: measuring Ed25519 verification ({args.verify_seconds:g} s per figure)")
    rates = measure_verify_rates(args.verify_seconds)
    say(f"bench: {rates}")
    results = []
    for config in configurations(args):
        results.append(run_config(config, args, rates["raw_per_core"]))
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document = {
        "command": "python benchmarks/cluster_bench.py" + (" --quick" if args.quick else ""),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "ed25519": rates,
        "agent_flags": list(FULL_SPEED_AGENT),
        "step_seconds": args.step_seconds,
        "max_block_txs": args.max_block_txs,
        "saturation_stop": SATURATED,
        "configs": results,
        "wall_s": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(document, indent=2) + "\n")
    drawn = draw_curves(document, args.out)
    print(format_table(document))
    say(f"bench: wrote {args.out / 'cluster.json'}" + (f" and {', '.join(drawn)}" if drawn else
        " (no PNG: matplotlib is not installed; pip install -e '.[bench]')"))  # fmt: skip
    say(f"bench: {document['wall_s']:.0f} s in all")
    return 0 if all(any(s["committed"] for s in r["steps"]) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
