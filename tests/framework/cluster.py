"""A real cluster for integration tests: ledger and agents as processes on loopback.

In the manner of bitcoin's functional test framework: the processes are the ones users
run (``python -m micromine.ledger_node``, ``python -m micromine.device_agent``), started
by the launcher devnet uses (``micromine.cluster``), driven only through their real
interfaces (MQTT and the SQLite file), and every wait is on a condition with a deadline,
never a bare sleep.
"""

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from micromine.chains import read_chain
from micromine.client import LedgerClient
from micromine.cluster import ClusterConfig, LocalCluster
from micromine.common.mqtt import Incoming, LinkConfig, Login, MqttLink
from micromine.loadgen import sender_key
from micromine.processes import ManagedProcess, wait_until
from micromine.protocol import topics
from micromine.protocol.block import Block
from micromine.protocol.codec import decode, encode, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.genesis import ChainParams
from micromine.protocol.messages import Transaction

CHAIN = "testchain"


class Watcher:
    """Subscribes like a dashboard would: ledger status, JSON blocks, and extra filters."""

    def __init__(
        self, broker_url: str, extra: tuple[str, ...] = (), login: Login | None = None
    ) -> None:
        filters = (f"micromine/{CHAIN}/ledger/+/status", topics.blocks_json(CHAIN), *extra)
        self.link = MqttLink(LinkConfig(
            client_id=f"watcher-{id(self)}", broker_url=broker_url,
            subscriptions=tuple((f, 1) for f in filters), inbox_max=100_000, login=login,
        ))  # fmt: skip
        self.status: dict[str, Any] = {}  # the latest ledger status, from any node
        self.statuses: dict[str, dict[str, Any]] = {}  # node key hex -> its latest status
        self.blocks: dict[int, dict[str, Any]] = {}
        self.messages: list[Incoming] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Watcher":
        self.link.start()
        self._thread.start()
        wait_until(lambda: self.link.connected, 30, message="the watcher to connect")
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.link.get(0.1)
            if not isinstance(item, Incoming):
                continue
            with self._lock:
                if item.topic.endswith("/status") and "/ledger/" in item.topic:
                    self.status = json.loads(item.payload)
                    self.statuses[self.status["node"]] = self.status
                elif item.topic == topics.blocks_json(CHAIN):
                    block = json.loads(item.payload)
                    self.blocks[block["height"]] = block
                else:
                    self.messages.append(item)

    def height_of(self, node: bytes) -> int:
        with self._lock:
            return int(self.statuses.get(node.hex(), {}).get("height", -1))

    def top_height(self) -> int:
        with self._lock:
            return max((int(s.get("height", 0)) for s in self.statuses.values()), default=0)

    def wait_for_devices(self, count: int, timeout: float = 60) -> None:
        wait_until(
            lambda: self.status.get("devices_live", 0) >= count,
            timeout,
            message=f"{count} live devices in the ledger's status",
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.link.close()


class Cluster:
    """``ledgers`` ledger nodes (validators) and N agents against a broker the test
    started.  The processes, their keys, genesis and logs are micromine.cluster's (the
    launcher devnet uses); this adds what tests want: indices from 0, funded senders and
    transfers, watchers and clients, and the chain on disk.  Ledger 0 also has the
    single-node names (``ledger``, ``ledger_key``, ``db_path``).  With ``logins`` the
    test's own clients (watchers, wallets) log in with keys of their own, for a broker
    with access control on (ledger nodes and agents always do)."""

    def __init__(
        self,
        root: Path,
        broker_url: str,
        agents: int = 3,
        ledgers: int = 1,
        logins: bool = False,
        *,
        operators: tuple[bytes, ...] = (),
        enrollment: str = "open",
        login: str | None = None,
        **params: int,
    ) -> None:
        """``login``: every process's --login (e.g. "password" for a Mosquitto
        configured by ``micromine broker mosquitto-config``)."""
        self.root = root
        self.broker_url = broker_url
        self.logins = logins
        self.senders = [sender_key(i) for i in range(8)]
        self.launcher = LocalCluster(ClusterConfig(
            root=root, chain=CHAIN, ledgers=ledgers, agents=agents,
            params=ChainParams(**{"block_interval_ms": 500, **params}),
            balances=tuple((s.public, 10**9) for s in self.senders),
            operators=operators, enrollment=enrollment, broker_url=broker_url, login=login,
        ))  # fmt: skip
        self.genesis = self.launcher.write_genesis()
        self.genesis_path = self.launcher.genesis_path
        self.ledger_key_paths = [self.launcher.ledger_key_path(i) for i in range(ledgers)]
        self.ledger_keys = [self.launcher.ledger_key(i) for i in range(ledgers)]
        self.ledger_key_path, self.ledger_key = self.ledger_key_paths[0], self.ledger_keys[0]
        self.db_paths = [self.launcher.db_path(i) for i in range(ledgers)]
        self.db_path = self.db_paths[0]
        self.agent_count = agents
        self.nonces: dict[bytes, int] = {}

    @property
    def ledgers(self) -> list[ManagedProcess | None]:
        """Each ledger node's process (its latest start), None before its first."""
        return [self.launcher.ledger(i) for i in range(len(self.db_paths))]

    @property
    def agents(self) -> list[ManagedProcess]:
        """The agents started, by index."""
        started = (self.launcher.agent(i) for i in range(self.agent_count))
        return [agent for agent in started if agent is not None]

    @property
    def ledger(self) -> ManagedProcess | None:
        return self.ledgers[0]

    @property
    def ledger_starts(self) -> int:
        return self.launcher.starts.get(self.launcher.ledger_name(0), 0)

    def ledger_log(self, index: int, start: int) -> Path:
        """The log of ledger ``index``'s ``start``-th start."""
        return self.launcher.log_path(self.launcher.ledger_name(index), start)

    def agent_log(self, index: int) -> Path:
        return self.launcher.log_path(self.launcher.agent_name(index))

    def start_ledger(self, index: int = 0, program: list[str] | None = None) -> None:
        """Start ledger ``index`` (again); ``program`` replaces ``python -m
        micromine.ledger_node`` (a Byzantine stand-in, say)."""
        self.launcher.start_ledger(index, program)

    def start_agent(self, index: int, extra: tuple[str, ...] = ()) -> ManagedProcess:
        """Start agent ``index``; its status file is ``agent_status_path(index)``."""
        return self.launcher.start_agent(index, extra)

    def agent_key_path(self, index: int) -> Path:
        return self.launcher.agent_key_path(index)

    def agent_status_path(self, index: int) -> Path:
        return self.launcher.agent_status_path(index)

    def agent_status(self, index: int) -> dict[str, Any]:
        """The agent's status file ({} while there is none yet)."""
        try:
            status: dict[str, Any] = json.loads(self.agent_status_path(index).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return status

    def start(self) -> "Cluster":
        self.launcher.start()
        return self

    def stop(self) -> None:
        self.launcher.stop()

    def kill_ledger(self, index: int = 0) -> None:
        ledger = self.ledgers[index]
        assert ledger is not None
        ledger.kill(signal.SIGKILL)
        ledger.stop()

    def agent_public_key(self, index: int) -> bytes:
        return self.launcher.agent_key(index).public

    # ---- transactions -------------------------------------------------------------

    def transfer(self, sender: KeyPair, amount: int = 5, **changes: Any) -> Transaction:
        nonce = self.nonces.get(sender.public, 0)
        self.nonces[sender.public] = nonce + 1
        fields: dict[str, Any] = {
            "chain_id": CHAIN, "sender": sender.public, "recipient": sha256(b"sink"),
            "amount": amount, "fee": 1, "nonce": nonce,
            "expiry_ms": time.time_ns() // 1_000_000 + 600_000, "memo": "test",
        }  # fmt: skip
        fields.update(changes)
        return sign(Transaction(**fields), sender)

    def login(self, name: str) -> Login | None:
        """A login with a key of the test's own, if the broker wants one."""
        return (
            Login(KeyPair(sha256(b"cluster client " + name.encode())), CHAIN)
            if self.logins
            else None
        )

    def watcher(self, extra: tuple[str, ...] = ()) -> Watcher:
        return Watcher(self.broker_url, extra, login=self.login("watcher")).start()

    def client(self) -> LedgerClient:
        client = LedgerClient(self.broker_url, CHAIN, login=self.login("client"))
        client.link.start()
        client.connect(30)
        return client

    # ---- the chain on disk ----------------------------------------------------------

    def chain_on_disk(self, index: int = 0) -> list[Block]:
        return [decode(data, Block) for data in read_chain(self.db_paths[index])]

    def assert_chain_linked(self, index: int = 0) -> list[Block]:
        chain = self.chain_on_disk(index)
        previous = self.genesis.hash
        for height, block in enumerate(chain, start=1):
            assert block.height == height, f"gap at height {height}"
            assert block.header.prev_hash == previous, f"broken link at height {height}"
            previous = block.hash
        return chain


def submit_items(client: LedgerClient, txs: list[Transaction]) -> list[bytes]:
    items = [encode(tx) for tx in txs]
    client.submit(items)
    return items


class Wallets(threading.Thread):
    """Background load that behaves like careful wallets: a few transfers every 200 ms,
    receipts followed, and anything without a final receipt after 3 s submitted again."""

    RESEND_AFTER_S = 3.0
    INTERVAL_S = 0.2

    def __init__(self, cluster: Cluster, senders: int = 4) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.senders = cluster.senders[:senders]
        self.client = LedgerClient(cluster.broker_url, CHAIN, login=cluster.login("wallets"))
        self.submitting = threading.Event()
        self.submitting.set()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.items: dict[bytes, bytes] = {}
        self.last_sent: dict[bytes, float] = {}

    def run(self) -> None:
        with self.client:
            self.client.connect(30)
            next_submit = time.monotonic()
            while not self.done.is_set():
                # Paced by the clock: poll returns early whenever receipts arrive.
                if self.submitting.is_set() and time.monotonic() >= next_submit:
                    next_submit += self.INTERVAL_S
                    txs = [self.cluster.transfer(s) for s in self.senders]
                    with self.lock:
                        for tx in txs:
                            self.items[tx.id] = encode(tx)
                            self.last_sent[tx.id] = time.monotonic()
                    submit_items(self.client, txs)
                self.client.poll(0.2)
                self._resend()

    def _resend(self) -> None:
        now = time.monotonic()
        with self.lock:
            stale = [
                i for i, sent in self.last_sent.items()
                if (i not in self.client.fates or not self.client.fates[i].final)
                and now - sent > self.RESEND_AFTER_S
            ]  # fmt: skip
            for tx_id in stale:
                self.last_sent[tx_id] = now
            if stale:
                self.client.submit([self.items[i] for i in stale])

    def fates(self) -> dict[bytes, Any]:
        with self.lock:
            return dict(self.client.fates)

    def all_final(self) -> bool:
        fates = self.fates()
        with self.lock:
            ids = list(self.items)
        return all(i in fates and fates[i].final for i in ids)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)
