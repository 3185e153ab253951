"""``micromine devnet``: a whole local cluster as real processes on loopback.

Broker (unless ``--broker`` names one), ``--ledgers`` ledger nodes that agree on every
block by consensus, N agents and a load generator,
each its own process with its own log under the data directory, started and stopped by
micromine/cluster.py (the launcher the integration tests use too).  Live progress goes
to stderr; the summary goes to stderr, and with ``--json`` also to stdout as one JSON
object on the last line.

``--lying-agents N`` makes the last N agents lie (``--lie always-valid``: every
transaction "valid", unchecked; a test of the ledger's defences, so devnet sets
MICROMINE_ALLOW_LYING=1 for them alone).  The summary then says, from the first
ledger's stored chain, which devices were banned by fraud proofs, and what each device
earned, before and after the last ban.  Devnet's genesis leaves transaction signatures
to the devices (``--recheck-tx-signatures 0``, unlike the chain default) so that it
exercises what guards them.

Stopping: SIGINT (Ctrl-C) and SIGTERM (``timeout``, systemd, ``docker stop``, CI) alike
end the run early: every child gets SIGTERM at once (the broker last, so the others can
still say goodbye through it) and SIGKILL if it has not exited within 10 s (further
signals change nothing: the stop is bounded anyway); the summary is printed, with
``interrupted`` true, and devnet exits 0, as after a full run.  If devnet itself is
killed (SIGKILL), the kernel kills the children (micromine/processes.py).

Longer than 400 lines because the progress monitor, the summary and the stop sequence
read together; starting the processes is micromine/cluster.py's.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micromine.barrage import Barrage
from micromine.chains import compare_chains, read_device_ledger
from micromine.cluster import BrokerSettings, ClusterConfig, LocalCluster
from micromine.common.keyfile import load_or_create_key
from micromine.common.mqtt import Incoming, LinkConfig, Login, LoginMode, MqttLink, TlsFiles
from micromine.common.signals import StopSignals
from micromine.loadgen import load_balances
from micromine.processes import ManagedProcess, free_port, python_module
from micromine.protocol import topics
from micromine.protocol.genesis import ChainParams

PROGRESS_INTERVAL_S = 1.0
# The numbers the progress lines read from block and status JSON.
_COUNTERS = ("height", "tx_count", "devices_live", "mempool", "tip_signers", "tip_round")


def as_count(value: Any) -> int:
    """A JSON number the monitor counts with; anything else (a status or JSON block is
    unsigned: on an open broker anyone can publish one) counts as 0."""
    return value if type(value) is int and value >= 0 else 0


@dataclass
class Progress:
    """What the orchestrator sees on the broker, like any subscriber would."""

    started: float = field(default_factory=time.monotonic)
    blocks: int = 0
    height: int = 0
    txs_committed: int = 0
    last_block_txs: int = 0
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> status
    window: list[tuple[float, int]] = field(default_factory=list)  # (time, committed)
    ignored: int = 0  # messages on our topics that are not what ledger nodes publish
    barrage_sent: int = 0

    def take(self, item: Incoming, chain_id: str) -> None:
        parsed = topics.parse(chain_id, item.topic)
        if parsed is None:
            return
        try:
            document = json.loads(item.payload)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
            document = None
        # [IGNORE] Anyone can publish here: only an object whose counters are integers
        # is believed (a string height would crash the arithmetic further on).
        if not isinstance(document, dict) or any(
            type(document.get(name, 0)) is not int for name in _COUNTERS
        ):
            self.ignored += 1
            return
        if parsed.channel is topics.Channel.BLOCKS_JSON and not item.retained:
            self.blocks += 1
            self.height = max(self.height, as_count(document.get("height")))
            self.last_block_txs = as_count(document.get("tx_count"))
            self.txs_committed += self.last_block_txs
        elif parsed.channel is topics.Channel.LEDGER_STATUS and parsed.key is not None:
            self.ledgers[parsed.key.hex()] = document
            self.height = max(self.height, as_count(document.get("height")))

    @property
    def ledger(self) -> dict[str, Any]:
        """The most advanced online ledger node's status."""
        online = [d for d in self.ledgers.values() if d.get("online")]
        return max(online, key=lambda d: as_count(d.get("height")), default={})

    def drops(self) -> dict[str, int]:
        """Every ledger node's drop counters (from its status), summed by reason."""
        total: dict[str, int] = {}
        for status in self.ledgers.values():
            dropped = status.get("dropped")
            for name, count in dropped.items() if isinstance(dropped, dict) else ():
                total[str(name)] = total.get(str(name), 0) + as_count(count)
        return dict(sorted(total.items()))

    def online_heights(self) -> list[int]:
        return [as_count(d.get("height")) for d in self.ledgers.values() if d.get("online")]

    def rate(self) -> float:
        now = time.monotonic()
        self.window.append((now, self.txs_committed))
        self.window = [(t, c) for t, c in self.window if now - t <= 5.0]
        (t0, c0), (t1, c1) = self.window[0], self.window[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def line(self, agents: int) -> str:
        elapsed = time.monotonic() - self.started
        return (
            f"[{elapsed:5.0f}s] height {self.height:5d} ({self.last_block_txs:4d} txs)"
            f"  committed {self.txs_committed:7d}"
            f"  {self.rate():7.1f} tx/s  devices {self.ledger.get('devices_live', 0)}/{agents}"
            f"  mempool {self.ledger.get('mempool', 0)}"
            f"  banned {self.ledger.get('devices_banned', 0)}"
            f"  ledgers {len(self.online_heights())}"
        )


def client_tls(args: argparse.Namespace) -> TlsFiles | None:
    """What the clients verify the broker by: the CA alone with devnet's own broker (the
    certificate and key are then the broker's), all three with an external one."""
    if not (args.tls_ca or args.tls_cert):
        return None
    if args.broker:
        return TlsFiles(
            *(Path(p) if p else None for p in (args.tls_ca, args.tls_cert, args.tls_key))
        )
    return TlsFiles(Path(args.tls_ca) if args.tls_ca else None)


def cluster_config(args: argparse.Namespace, data_dir: Path) -> ClusterConfig:
    """devnet's flags as the settings of its cluster (micromine/cluster.py)."""
    operator = load_or_create_key(data_dir / "operator.key")  # devnet's monitor logs in with it
    k = min(args.k, max(1, args.agents))
    return ClusterConfig(
        root=data_dir,
        chain=args.chain,
        ledgers=args.ledgers,
        agents=args.agents,
        lying_agents=args.lying_agents,
        params=ChainParams(
            k=k,
            q=min(args.q, k),
            block_interval_ms=args.block_interval_ms,
            max_block_txs=args.max_block_txs,
            recheck_tx_signatures=args.recheck_tx_signatures,
        ),
        balances=tuple(load_balances(args.senders).items()),
        operators=(operator.public,),
        broker_url=args.broker or None,
        broker=BrokerSettings(
            access_control=args.auth,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
        ),
        login=args.login,
        tls=client_tls(args),
    )


class Devnet:
    """devnet's run: its cluster (micromine/cluster.py, set up from the flags) and the load
    generator it adds."""

    def __init__(
        self, args: argparse.Namespace, data_dir: Path, signals: StopSignals | None = None
    ) -> None:
        self.args = args
        self.data_dir = data_dir
        self.cluster = LocalCluster(cluster_config(args, data_dir), signals)

    @property
    def broker_url(self) -> str:
        return self.cluster.broker_url or ""

    def agent_keys(self) -> dict[int, bytes]:
        """Every agent's public key, by index (from 0)."""
        return {index: self.cluster.agent_key(index).public for index in range(self.args.agents)}

    def start_load(self) -> ManagedProcess:
        args = self.args
        return self.cluster.spawn("loadgen", python_module(
            "micromine.loadgen", "--broker", self.broker_url, "--chain", args.chain,
            "--senders", str(args.senders), "--tx-rate", str(args.tx_rate),
            "--duration", str(args.duration), "--invalid-fraction", str(args.invalid_fraction),
            "--settle", str(args.settle), "--report", str(self.data_dir / "load.json"),
            *self.cluster.link_flags,
        ))  # fmt: skip


def run_devnet(args: argparse.Namespace) -> int:
    if not 0 <= args.lying_agents <= args.agents:
        say("devnet: error: --lying-agents must be 0..--agents")
        return 2
    with StopSignals() as signals:
        return run_and_report(args, signals)


def run_and_report(args: argparse.Namespace, signals: StopSignals) -> int:
    """Run the cluster until the load is done or a stop signal comes, stop every child,
    then report.  Only the run can be interrupted: the first signal ends it (and
    disarms ``signals``), so stopping and reporting always run to their end."""
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="devnet-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    devnet = Devnet(args, data_dir, signals)
    progress = Progress()
    say(f"devnet: data and logs in {data_dir}")
    interrupted = False
    report: dict[str, Any] = {}
    try:
        try:
            report = run_load_with_progress(devnet, progress)
        finally:
            signals.disarm()
    except KeyboardInterrupt:
        interrupted = True
        say("devnet: interrupted; stopping every process")
    except RuntimeError as exc:
        say(f"devnet: error: {exc}")
        devnet.cluster.stop()
        return 1
    codes = devnet.cluster.stop()
    cluster = devnet.cluster
    chains = compare_chains(
        {cluster.ledger_name(i): cluster.db_path(i) for i in range(args.ledgers)}
    )
    say(f"devnet: {chains.describe()}")
    report_path = data_dir / "load.json"
    if not report and report_path.exists():  # interrupted: the load generator's last word
        report = json.loads(report_path.read_text())
    summary = {
        **report,
        **device_summary(devnet, cluster.db_path(0)),
        "blocks": progress.blocks,
        "height": progress.height,
        "agents": args.agents,
        "ledgers": args.ledgers,
        "ledger_heights": chains.heights,
        "chains_identical": chains.identical and chains.same_height,
        "chains_same_bytes": chains.same_bytes,
        "min_certificate_signers": chains.min_signers,
        **(
            {"barrage_sent": progress.barrage_sent, "ledger_drops": progress.drops()}
            if args.barrage
            else {}
        ),
        "duration_s": args.duration,
        "interrupted": interrupted,
        "exit_codes": codes,
        "data_dir": str(data_dir),
    }
    say("devnet summary: " + ", ".join(f"{k}={v}" for k, v in summary.items() if k != "exit_codes"))
    if args.json:
        print(json.dumps(summary), flush=True)
    if not args.data_dir and not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def device_summary(devnet: Devnet, db_path: Path) -> dict[str, Any]:
    """What the first ledger's chain says about the agents: bans, frauds, rewards."""
    if not db_path.exists():
        return {}
    ledger = read_device_ledger(db_path)
    keys = devnet.agent_keys()
    liars = {key for index, key in keys.items() if devnet.cluster.is_lying(index)}
    honest = set(keys.values()) - liars

    def name(device: bytes) -> str:
        return device.hex()[:16]

    return {
        "lying_agents": len(liars),
        "liars": sorted(name(d) for d in liars),
        "recheck_tx_signatures": devnet.args.recheck_tx_signatures,
        "frauds": ledger.frauds,
        "banned": {name(d): height for d, height in sorted(ledger.banned.items())},
        "liars_banned": len(liars & set(ledger.banned)),
        "honest_banned": len(honest & set(ledger.banned)),
        "rewards": {name(d): amount for d, amount in sorted(ledger.rewards.items())},
        "burned": {name(d): ledger.burned(d) for d in sorted(ledger.banned)},
        "earning_devices": len(honest & set(ledger.rewards)),
        "earning_after_bans": len(honest & set(ledger.rewards_after_bans)),
    }


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_load_with_progress(devnet: Devnet, progress: Progress) -> dict[str, Any]:
    """Start the cluster, wait for the devices, run the load while printing progress,
    and return the load generator's report."""
    args = devnet.args
    devnet.cluster.start()
    operator = load_or_create_key(devnet.data_dir / "operator.key")
    monitor = MqttLink(LinkConfig(
        client_id=f"devnet-monitor-{free_port()}", broker_url=devnet.broker_url,
        subscriptions=((topics.blocks_json(args.chain), 1),
                       (f"micromine/{args.chain}/ledger/+/status", 1)),
        inbox_max=100_000, login=Login(operator, args.chain, LoginMode(args.login)),
        tls=client_tls(args),
    ))  # fmt: skip
    with monitor:
        if not monitor.wait_connected(30):
            raise RuntimeError(f"cannot reach the broker at {devnet.broker_url}")
        say(f"devnet: broker {devnet.broker_url}; waiting for {args.agents} devices")
        wait_for_devices(monitor, progress, args)
        load = devnet.start_load()
        say(f"devnet: submitting {args.tx_rate:g} tx/s for {args.duration:g} s")
        barrages = start_barrages(devnet) if args.barrage else []
        follow_load(devnet, monitor, progress, load)
        for barrage in barrages:
            barrage.join()
            progress.barrage_sent += barrage.total
        drain(monitor, progress, args.chain, 1.0)
        wait_for_ledgers_to_agree(monitor, progress, args)
    report_path = devnet.data_dir / "load.json"
    if load.returncode() != 0 or not report_path.exists():
        raise RuntimeError(f"the load generator failed:\n{load.log_tail()}")
    report: dict[str, Any] = json.loads(report_path.read_text())
    return report


def follow_load(
    devnet: Devnet,
    monitor: MqttLink,
    progress: Progress,
    load: ManagedProcess,
    first_line: float = 0.0,
) -> None:
    """Until ``load`` exits: take what the monitor sees and print a progress line a second
    (the first after ``first_line`` seconds); RuntimeError if the cluster loses a process."""
    args = devnet.args
    next_line = time.monotonic() + first_line
    while load.running():
        drain(monitor, progress, args.chain, 0.2)
        if crashed := devnet.cluster.crashed():
            names = ", ".join(p.name for p in crashed)
            raise RuntimeError(f"{names} exited early; see {devnet.data_dir / 'logs'}")
        if time.monotonic() >= next_line:
            say(progress.line(args.agents))
            next_line += PROGRESS_INTERVAL_S


def start_barrages(devnet: Devnet) -> list[Barrage]:
    """``--barrage N`` hostile messages during the load: 70 % from a logged-in device key,
    30 % from an anonymous client (micromine/barrage.py), spread over the load's duration."""
    args = devnet.args
    ledger = devnet.cluster.ledger_key(0).public
    hostile = load_or_create_key(devnet.data_dir / "barrage.key")
    rate = args.barrage / max(1.0, args.duration)
    logged_in = round(args.barrage * 0.7)
    barrages = []
    for seed, (count, login) in enumerate(((logged_in, True), (args.barrage - logged_in, False))):
        barrage = Barrage(devnet.broker_url, args.chain, hostile, ledger, count=count,
                          rate=rate * count / args.barrage, login=login, seed=seed)  # fmt: skip
        barrage.start()
        barrages.append(barrage)
    say(f"devnet: {args.barrage} hostile messages at {rate:.0f}/s (micromine/barrage.py)")
    return barrages


def wait_for_devices(monitor: MqttLink, progress: Progress, args: argparse.Namespace) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        drain(monitor, progress, args.chain, 0.2)
        if progress.ledger.get("online") and as_count(progress.ledger.get("devices_live")) >= (
            args.agents
        ):
            return
    raise RuntimeError(f"only {progress.ledger.get('devices_live', 0)} devices online after 60 s")


def wait_for_ledgers_to_agree(
    monitor: MqttLink, progress: Progress, args: argparse.Namespace
) -> None:
    """Before stopping, give every ledger node a moment to reach the same height (the
    last decision reaches them at slightly different times)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        drain(monitor, progress, args.chain, 0.5)
        heights = progress.online_heights()
        certificates = {
            (as_count(d.get("tip_signers")), as_count(d.get("tip_round")))
            for d in progress.ledgers.values()
        }
        if len(heights) == args.ledgers and len(set(heights)) == 1 and len(certificates) == 1:
            return  # same height, and the same certificate (round, signers) on every node
    say(f"devnet: ledger heights still differ: {sorted(progress.online_heights())}")


def drain(monitor: MqttLink, progress: Progress, chain_id: str, timeout: float) -> None:
    item = monitor.get(timeout)
    while item is not None:
        if isinstance(item, Incoming):
            progress.take(item, chain_id)
        item = monitor.get(0)


def add_devnet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=int, default=4, help="device agents to start")
    parser.add_argument("--lying-agents", type=int, default=0,
                        help="of the agents, how many lie (every transaction 'valid'; a "
                        "test of the ledger's defences: they should be banned)")  # fmt: skip
    parser.add_argument("--recheck-tx-signatures", type=int, choices=(0, 1), default=0,
                        help="the genesis parameter (default 0 here: signatures are the "
                        "devices' work; the chain default is 1)")  # fmt: skip
    parser.add_argument("--ledgers", type=int, default=4,
                        help="ledger nodes (validators; 3f + 1 tolerate f faulty)")  # fmt: skip
    parser.add_argument("--tx-rate", type=float, default=50.0, help="transactions per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--broker", help="use this broker instead of starting one")
    parser.add_argument("--invalid-fraction", type=float, default=0.0,
                        help="share of deliberately invalid transactions (0..1)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--chain", default="devnet")
    parser.add_argument("--senders", type=int, default=32, help="funded load accounts")
    parser.add_argument("--k", type=int, default=3, help="devices per batch")
    parser.add_argument("--q", type=int, default=2, help="matching verdicts for a decision")
    parser.add_argument("--block-interval-ms", type=int, default=1000)
    parser.add_argument("--max-block-txs", type=int, default=ChainParams().max_block_txs,
                        help="most transactions in a block (the genesis parameter)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=30.0,
                        help="most seconds to let in-flight transactions settle")  # fmt: skip
    parser.add_argument("--barrage", type=int, default=0, metavar="N",
                        help="also send N hostile messages during the load (a device key "
                        "and an anonymous client; see docs/SECURITY.md section 7)")  # fmt: skip
    parser.add_argument("--data-dir", help="keep keys, databases and logs here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--auth", action=argparse.BooleanOptionalAction, default=True,
                        help="start the broker with access control for devnet's genesis "
                        "(login tokens, topic ACL); --no-auth: an open broker")  # fmt: skip
    parser.add_argument("--login", choices=[m.value for m in LoginMode], default="token",
                        help="how the processes log in (password: an external Mosquitto "
                        "configured by micromine broker mosquitto-config)")  # fmt: skip
    parser.add_argument("--tls-cert", help="PEM certificate: of the broker devnet starts "
                        "(enables its TLS listener), or the clients' with --broker")  # fmt: skip
    parser.add_argument("--tls-key", help="PEM key of --tls-cert")
    parser.add_argument("--tls-ca", help="PEM CA every client verifies the broker by")
    parser.add_argument("--tls-client-ca", help="PEM CA devnet's broker verifies client "
                        "certificates by (optional)")  # fmt: skip
