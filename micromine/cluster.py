"""A local cluster as real processes on loopback: the one launcher devnet and the tests share.

| call | what it does |
| --- | --- |
| ``LocalCluster(config, signals=None)`` | nothing yet: the settings and the names below |
| ``.write_genesis()`` | the ledger nodes' key files and ``genesis.json`` (once) |
| ``.start()`` | genesis, the broker (unless ``config.broker_url``), the nodes, the agents |
| ``.start_broker(argv=None, port=None)`` | the embedded broker, or ``argv`` listening on ``port`` |
| ``.start_ledger(i, program=None)`` | ledger node ``i`` (again after a stop: a new log) |
| ``.start_agent(i, extra=())`` | agent ``i`` at full speed (``processes.FULL_SPEED_AGENT``) |
| ``.spawn(name, argv)`` | any other child (a load generator), logged and stopped with the rest |
| ``.crashed()`` | the broker, ledger nodes and agents that exited |
| ``.stop()`` | SIGTERM to everyone but the broker at once, then the broker; bounded |

The processes are the ones users run (``python -m micromine.ledger_node``, ``python -m
micromine.device_agent``, ``python -m micromine.broker``), with the same flags.  Under
``config.root``, node ``i`` (from 0) is numbered ``i + 1``, as devnet always numbered them:

    genesis.json  ledger-N.key  ledger-N.sqlite  agent-N.key  agent-N.status.json
    logs/<name>.log  (the k-th start of a process, k > 1: logs/<name>.<k>.log)

It does not watch the cluster (devnet's monitor and the tests' watcher subscribe to the
broker like anyone), submit transactions, or catch signals: a run that does hands its
``StopSignals`` in, so that a child started is a child recorded, to be stopped.
"""

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from micromine.common.keyfile import load_or_create_key
from micromine.common.mqtt import TlsFiles
from micromine.common.signals import StopSignals
from micromine.device_agent.config import ENV_ALLOW_LYING
from micromine.processes import (
    FULL_SPEED_AGENT,
    ManagedProcess,
    WaitTimeoutError,
    free_port,
    port_open,
    python_module,
    stop_processes,
    wait_until,
)
from micromine.protocol.crypto import KeyPair
from micromine.protocol.genesis import ChainParams, Genesis

BROKER = "broker"
BROKER_START_S = 30.0
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """The embedded broker a cluster starts when ``ClusterConfig.broker_url`` names none."""

    access_control: bool = True  # --genesis: login tokens and the topic ACL of the cluster
    tls_cert: str | None = None  # a TLS listener too, which the clients then use (mqtts://)
    tls_key: str | None = None
    tls_client_ca: str | None = None  # client certificates are verified by this CA


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What a local cluster is: its genesis, its processes and how they reach the broker."""

    root: Path  # keys, genesis, databases, status files and logs
    chain: str = "devnet"
    ledgers: int = 1
    agents: int = 0
    lying_agents: int = 0  # the last N agents run with --lie always-valid
    params: ChainParams = field(default_factory=ChainParams)
    balances: tuple[tuple[bytes, int], ...] = ()
    operators: tuple[bytes, ...] = ()
    enrollment: str = "open"
    broker_url: str | None = None  # a broker someone else runs; None: start the embedded one
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    login: str | None = None  # every client process's --login (None: their default)
    tls: TlsFiles | None = None  # every client process's --tls-ca/--tls-cert/--tls-key

    def __post_init__(self) -> None:
        if not 0 <= self.lying_agents <= self.agents:
            raise ValueError("lying_agents must be 0..agents")


class LocalCluster:
    """Keys, genesis and the processes of a local cluster, with their logs; stops them all."""

    def __init__(self, config: ClusterConfig, signals: StopSignals | None = None) -> None:
        self.config = config
        self.signals = signals
        self.broker_url: str | None = config.broker_url
        self.genesis: Genesis | None = None
        self.processes: dict[str, ManagedProcess] = {}  # by name, the latest start of each
        self.starts: dict[str, int] = {}  # by name, how many times it was started
        self._members: set[str] = set()  # the broker, ledger nodes and agents

    # ---- names -----------------------------------------------------------------------

    @property
    def genesis_path(self) -> Path:
        return self.config.root / "genesis.json"

    @staticmethod
    def ledger_name(index: int) -> str:
        return f"ledger-{index + 1}"

    @staticmethod
    def agent_name(index: int) -> str:
        return f"agent-{index + 1}"

    def ledger_key_path(self, index: int) -> Path:
        return self.config.root / f"{self.ledger_name(index)}.key"

    def db_path(self, index: int) -> Path:
        return self.config.root / f"{self.ledger_name(index)}.sqlite"

    def agent_key_path(self, index: int) -> Path:
        return self.config.root / f"{self.agent_name(index)}.key"

    def agent_status_path(self, index: int) -> Path:
        return self.config.root / f"{self.agent_name(index)}.status.json"

    def log_path(self, name: str, start: int = 1) -> Path:
        """The log of the ``start``-th start of process ``name``."""
        return self.config.root / "logs" / (f"{name}.log" if start == 1 else f"{name}.{start}.log")

    def ledger_key(self, index: int) -> KeyPair:
        return load_or_create_key(self.ledger_key_path(index))

    def agent_key(self, index: int) -> KeyPair:
        """Agent ``index``'s key (its file is made here if the agent has not made it yet)."""
        return load_or_create_key(self.agent_key_path(index))

    def is_lying(self, index: int) -> bool:
        return index >= self.config.agents - self.config.lying_agents

    @property
    def link_flags(self) -> tuple[str, ...]:
        """--login and --tls-* for every client process (ledger nodes, agents, load)."""
        config, flags = self.config, []
        if config.login is not None:
            flags += ["--login", config.login]
        if config.tls is not None:
            for name, path in (("ca", config.tls.ca), ("cert", config.tls.cert),
                               ("key", config.tls.key)):  # fmt: skip
                if path is not None:
                    flags += [f"--tls-{name}", str(path)]
        return tuple(flags)

    # ---- starting --------------------------------------------------------------------

    def write_genesis(self) -> Genesis:
        """The ledger nodes' keys (made if missing) and genesis.json, written once."""
        if self.genesis is None:
            config = self.config
            self.config.root.mkdir(parents=True, exist_ok=True)
            nodes = [self.ledger_key(index).public for index in range(config.ledgers)]
            self.genesis = Genesis(
                chain_id=config.chain,
                timestamp_ms=time.time_ns() // 1_000_000,
                ledger_nodes=tuple(sorted(nodes)),
                balances=tuple(sorted(config.balances)),
                params=config.params,
                operators=config.operators,
                enrollment=config.enrollment,
            )
            self.genesis_path.write_text(self.genesis.to_json())
        return self.genesis

    def start(self) -> "LocalCluster":
        self.write_genesis()
        if self.broker_url is None:
            self.start_broker()
        for index in range(self.config.ledgers):
            self.start_ledger(index)
        for index in range(self.config.agents):
            self.start_agent(index)
        return self

    def start_broker(self, argv: Sequence[str] | None = None, port: int | None = None) -> str:
        """Start the embedded broker on free loopback ports (``python -m micromine.broker``,
        as ``config.broker`` says), or ``argv``, a broker listening on ``port`` (the cluster
        benchmark's Mosquitto); wait until it accepts connections; return its URL.
        RuntimeError if it does not within 30 s."""
        embedded = argv is None
        if argv is None:
            argv, port, url = self._embedded_broker()
        elif port is None:
            raise ValueError("a broker's argv goes with the port it listens on")
        else:
            url = f"mqtt://{LOOPBACK}:{port}"
        process = self._launch(BROKER, argv, member=True)
        try:
            wait_until(lambda: port_open(LOOPBACK, port), BROKER_START_S, interval=0.05,
                       message=f"the broker's port {port}")  # fmt: skip
        except WaitTimeoutError:
            if embedded:
                problem = "the embedded broker did not open its port within 30 s"
            else:
                problem = f"the broker did not open port {port} within 30 s:\n{process.log_tail()}"
            raise RuntimeError(problem) from None
        self.broker_url = url
        return url

    def _embedded_broker(self) -> tuple[list[str], int, str]:
        """The embedded broker's argv, the port to wait for and the URL clients use."""
        settings = self.config.broker
        port, ws_port = free_port(), free_port()
        flags = ["--genesis", str(self.genesis_path)] if settings.access_control else []
        url = f"mqtt://{LOOPBACK}:{port}"
        if settings.tls_cert:
            tls_port = free_port()
            flags += ["--tls-port", str(tls_port), "--tls-cert", settings.tls_cert,
                      "--tls-key", settings.tls_key or ""]  # fmt: skip
            if settings.tls_client_ca:
                flags += ["--tls-ca", settings.tls_client_ca]
            url = f"mqtts://{LOOPBACK}:{tls_port}"
        argv = python_module(
            "micromine.broker", "--host", LOOPBACK, "--port", str(port),
            "--ws-port", str(ws_port), *flags,
        )  # fmt: skip
        return argv, port, url

    def start_ledger(self, index: int, program: Sequence[str] | None = None) -> ManagedProcess:
        """Start ledger node ``index`` (again); ``program`` replaces ``python -m
        micromine.ledger_node`` (a Byzantine stand-in, say)."""
        argv = [
            *(program or python_module("micromine.ledger_node")),
            "--broker", self._broker(), "--key", str(self.ledger_key_path(index)),
            "--genesis", str(self.genesis_path), "--db", str(self.db_path(index)), "--log-json",
            *self.link_flags,
        ]  # fmt: skip
        return self._launch(self.ledger_name(index), argv, member=True)

    def start_agent(self, index: int, extra: Sequence[str] = ()) -> ManagedProcess:
        """Start agent ``index`` (its key file is made by the agent); ``extra`` flags go last."""
        lying = self.is_lying(index)
        argv = python_module(
            "micromine.device_agent", "--broker", self._broker(), "--chain", self.config.chain,
            "--key", str(self.agent_key_path(index)), "--log-json",
            "--status-file", str(self.agent_status_path(index)),
            *FULL_SPEED_AGENT, *self.link_flags, *(["--lie", "always-valid"] if lying else []),
            *extra,
        )  # fmt: skip
        env = {ENV_ALLOW_LYING: "1"} if lying else None  # for the liars alone
        return self._launch(self.agent_name(index), argv, env, member=True)

    def spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        """Any other child (a load generator): logged like the rest, stopped with them, and
        free to end by itself (not counted by :meth:`crashed`)."""
        return self._launch(name, argv, env)

    def _broker(self) -> str:
        if self.broker_url is None:
            raise RuntimeError("no broker yet: start_broker() or config.broker_url")
        return self.broker_url

    def _launch(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        member: bool = False,
    ) -> ManagedProcess:
        previous = self.processes.get(name)
        if previous is not None:
            if previous.running():
                raise RuntimeError(f"{name} is running already (pid {previous.pid})")
            previous.stop()  # reaped, its log closed
        start = self.starts.get(name, 0) + 1
        with self._recording():
            process = ManagedProcess(name, argv, self.log_path(name, start), env).start()
            self.processes[name] = process
            self.starts[name] = start
        if member:
            self._members.add(name)
        return process

    @contextmanager
    def _recording(self) -> Iterator[None]:
        """A stop signal between a child's start and its record waits for the record."""
        if self.signals is None:
            yield
            return
        with self.signals.deferred():
            yield

    # ---- looking and stopping --------------------------------------------------------

    def ledger(self, index: int) -> ManagedProcess | None:
        return self.processes.get(self.ledger_name(index))

    def agent(self, index: int) -> ManagedProcess | None:
        return self.processes.get(self.agent_name(index))

    def crashed(self) -> list[ManagedProcess]:
        """The broker, ledger nodes and agents that exited (other children may end)."""
        return [p for n, p in self.processes.items() if n in self._members and not p.running()]

    def stop(self) -> dict[str, int | None]:
        """Everyone but the broker at once, then the broker (so that the ledger nodes and
        agents can still publish their offline status); bounded: SIGKILL after 10 s each
        round.  Every process's exit code, by name."""
        codes = stop_processes(p for n, p in self.processes.items() if n != BROKER)
        return {**codes, **stop_processes(p for n, p in self.processes.items() if n == BROKER)}
