"""A real cluster for integration tests: ledger and agents as processes on loopback.

In the manner of bitcoin's functional test framework: the processes are the ones users
run (``python -m micromine.ledger_node``, ``python -m micromine.device_agent``), driven
only through their real interfaces (MQTT and the SQLite file), and every wait is on a
condition with a deadline, never a bare sleep.
"""

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from brokers import wait_until

from micromine.client import LedgerClient
from micromine.device_agent.keyfile import load_or_create_key
from micromine.ledger_node.genesis import ChainParams, Genesis
from micromine.loadgen import sender_key
from micromine.mqtt import Incoming, LinkConfig, MqttLink
from micromine.processes import ManagedProcess, python_module
from micromine.protocol import topics
from micromine.protocol.block import Block
from micromine.protocol.codec import decode, encode, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.messages import Transaction

CHAIN = "testchain"


class Watcher:
    """Subscribes like a dashboard would: ledger status, JSON blocks, and extra filters."""

    def __init__(self, broker_url: str, extra: tuple[str, ...] = ()) -> None:
        filters = (f"micromine/{CHAIN}/ledger/+/status", topics.blocks_json(CHAIN), *extra)
        self.link = MqttLink(LinkConfig(
            client_id=f"watcher-{id(self)}", broker_url=broker_url,
            subscriptions=tuple((f, 1) for f in filters), inbox_max=100_000,
        ))  # fmt: skip
        self.status: dict[str, Any] = {}
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
                elif item.topic == topics.blocks_json(CHAIN):
                    block = json.loads(item.payload)
                    self.blocks[block["height"]] = block
                else:
                    self.messages.append(item)

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
    """One ledger node and N agents against a broker the test started."""

    def __init__(self, root: Path, broker_url: str, agents: int = 3, **params: int) -> None:
        self.root = root
        self.broker_url = broker_url
        self.ledger_key_path = root / "ledger.key"
        self.ledger_key = load_or_create_key(self.ledger_key_path)
        self.senders = [sender_key(i) for i in range(8)]
        self.genesis = Genesis(
            chain_id=CHAIN,
            timestamp_ms=time.time_ns() // 1_000_000,
            ledger_nodes=(self.ledger_key.public,),
            balances=tuple(sorted((s.public, 10**9) for s in self.senders)),
            params=ChainParams(**{"block_interval_ms": 500, **params}),
        )
        self.genesis_path = root / "genesis.json"
        self.genesis_path.write_text(self.genesis.to_json())
        self.db_path = root / "ledger.sqlite"
        self.agents: list[ManagedProcess] = []
        self.agent_count = agents
        self.ledger: ManagedProcess | None = None
        self.nonces: dict[bytes, int] = {}
        self.ledger_starts = 0

    def start_ledger(self) -> None:
        self.ledger_starts += 1
        self.ledger = ManagedProcess(
            "ledger",
            python_module(
                "micromine.ledger_node",
                "--broker",
                self.broker_url,
                "--key",
                str(self.ledger_key_path),
                "--genesis",
                str(self.genesis_path),
                "--db",
                str(self.db_path),
                "--log-json",
            ),
            self.root / f"ledger-{self.ledger_starts}.log",
        ).start()

    def start_agent(self, index: int) -> ManagedProcess:
        agent = ManagedProcess(
            f"agent-{index}",
            python_module(
                "micromine.device_agent",
                "--broker",
                self.broker_url,
                "--chain",
                CHAIN,
                "--key",
                str(self.root / f"agent-{index}.key"),
                "--log-json",
            ),
            self.root / f"agent-{index}.log",
        ).start()
        self.agents.append(agent)
        return agent

    def start(self) -> "Cluster":
        self.start_ledger()
        for index in range(self.agent_count):
            self.start_agent(index)
        return self

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        if self.ledger is not None:
            self.ledger.stop()

    def kill_ledger(self) -> None:
        assert self.ledger is not None
        self.ledger.kill(signal.SIGKILL)
        self.ledger.stop()

    def agent_public_key(self, index: int) -> bytes:
        return load_or_create_key(self.root / f"agent-{index}.key").public

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

    def client(self) -> LedgerClient:
        client = LedgerClient(self.broker_url, CHAIN)
        client.link.start()
        client.connect(30)
        return client

    # ---- the chain on disk ----------------------------------------------------------

    def chain_on_disk(self) -> list[Block]:
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT data FROM blocks ORDER BY height").fetchall()
        return [decode(bytes(row[0]), Block) for row in rows]

    def assert_chain_linked(self) -> list[Block]:
        chain = self.chain_on_disk()
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
    receipts followed, and anything not acknowledged within 3 s submitted again."""

    RESEND_AFTER_S = 3.0

    def __init__(self, cluster: Cluster, senders: int = 4) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.senders = cluster.senders[:senders]
        self.client = LedgerClient(cluster.broker_url, CHAIN)
        self.submitting = threading.Event()
        self.submitting.set()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.items: dict[bytes, bytes] = {}
        self.last_sent: dict[bytes, float] = {}

    def run(self) -> None:
        with self.client:
            self.client.connect(30)
            while not self.done.is_set():
                if self.submitting.is_set():
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
                if i not in self.client.fates and now - sent > self.RESEND_AFTER_S
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
