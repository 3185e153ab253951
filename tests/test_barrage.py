"""Issue 4's barrage: while four ledger nodes commit under load, a logged-in device key and
an anonymous client send over 10,000 hostile messages to every topic they can name.

Every process stays up, blocks keep coming, every submitted transaction gets a final
receipt and every committed one is in all four chains, and the counters account for
the barrage: the broker counts each hostile publication once, by reason (let through,
or refused: quota, ACL, size), and each ledger node counts every one it let through
among its drops (micromine/barrage.py sends nothing a ledger node could take).
"""

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from framework.brokers import EmbeddedBroker, free_port
from framework.cluster import CHAIN, Cluster, Wallets, Watcher

from micromine.barrage import Barrage
from micromine.client import Fate
from micromine.common.mqtt import Incoming, Login
from micromine.processes import wait_until
from micromine.protocol import topics
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.kinds import ReceiptStatus

pytestmark = pytest.mark.integration

DEVICE_MESSAGES, DEVICE_RATE = 7001, 350.0  # 20 s; the first one is "capture"
ANONYMOUS_MESSAGES, ANONYMOUS_RATE = 3001, 150.0
HOSTILE = KeyPair(sha256(b"barrage: a hostile device"))
# The drop sources of the topics a device may publish on (ledger_node/core/intake.py).
DEVICE_SOURCES = ("submit", "verdict", "hello", "heartbeat", "status")


def device_drops(status: dict[str, Any]) -> int:
    dropped: dict[str, int] = status.get("dropped", {})
    return sum(n for name, n in dropped.items() if name.split(".")[0] in DEVICE_SOURCES)


def access_totals(log: str) -> dict[str, Any]:
    found = re.findall(r"access totals (\{.*\})", log)
    assert found, log[-3000:]
    totals: dict[str, Any] = json.loads(found[-1])
    return totals


# Serial: beside the simulation at load 7 its nodes once committed 2 blocks, not 3, during
# the barrage, and once the broker counted 6352 of 7002 QoS 0 publishes (under 98 %).
@pytest.mark.serial
def test_a_barrage_of_hostile_messages_changes_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    port = free_port()
    cluster = Cluster(tmp_path, f"mqtt://127.0.0.1:{port}", agents=3, ledgers=4, logins=True)
    broker = EmbeddedBroker(
        port=port, log_dir=tmp_path, extra_args=("--genesis", str(cluster.genesis_path))
    )
    broker.start()
    watchers: list[Watcher] = []
    wallets: Wallets | None = None
    nodes = [key.public.hex() for key in cluster.ledger_keys]
    try:
        cluster.start()
        watcher = cluster.watcher()
        watchers.append(watcher)
        wait_until(
            lambda: (
                len(watcher.statuses) == 4
                and all(s.get("devices_live", 0) >= 3 for s in watcher.statuses.values())
            ),
            60,
            message=lambda: f"four ledger nodes with three live devices: {watcher.statuses}",
        )
        wallets = Wallets(cluster)
        wallets.start()
        first = watcher.top_height()
        wait_until(lambda: watcher.top_height() >= first + 3, 60, message="blocks under load")
        # What an attacker can capture: the blocks (a device may read them).
        spy = Watcher(
            cluster.broker_url, (topics.blocks(CHAIN),), login=Login(HOSTILE, CHAIN)
        ).start()
        watchers.append(spy)
        wait_until(lambda: len(spy.messages) >= 2, 30, message="two blocks to capture")
        captured = [m.payload for m in spy.messages if isinstance(m, Incoming)][:4]

        before = {node: dict(watcher.statuses[node]) for node in nodes}
        ledger = cluster.ledger_keys[0].public
        device = Barrage(cluster.broker_url, CHAIN, HOSTILE, ledger, count=DEVICE_MESSAGES,
                         rate=DEVICE_RATE, seed=1, captured=captured)  # fmt: skip
        anonymous = Barrage(cluster.broker_url, CHAIN, KeyPair(sha256(b"anon")), ledger,
                            count=ANONYMOUS_MESSAGES, rate=ANONYMOUS_RATE, login=False,
                            seed=2, captured=captured)  # fmt: skip
        barrage_started = time.monotonic()
        device.start()
        anonymous.start()
        heights: list[list[int]] = []  # per second of the barrage, each node's height
        while device.is_alive() or anonymous.is_alive():
            heights.append([watcher.height_of(bytes.fromhex(n)) for n in nodes])
            device.join(1.0)
            anonymous.join(0.01)
        barrage_s = time.monotonic() - barrage_started
        heights.append([watcher.height_of(bytes.fromhex(n)) for n in nodes])
        sent = device.total + anonymous.total
        kinds = device.sent + anonymous.sent
        assert sent - kinds["capture"] - kinds["end_marker"] >= 10_000
        assert device.failed == anonymous.failed == 0

        # Every process is up, and every node kept committing during the barrage.
        assert broker.running
        alive = [p for p in (*cluster.ledgers, *cluster.agents) if p is not None and p.running()]
        assert len(alive) == 4 + 3
        for index, node in enumerate(nodes):
            during = [h[index] for h in heights]
            assert during[-1] >= int(before[node]["height"]) + 3, (node[:16], during)

        # Every transaction the wallets submitted gets a final receipt.
        wallets.submitting.clear()
        wait_until(wallets.all_final, 60, message="a final receipt for every transfer")
        fates: dict[bytes, Fate] = wallets.fates()
        committed = {i for i, f in fates.items() if f.status is ReceiptStatus.COMMITTED}
        top = max(f.value for f in fates.values() if f.status is ReceiptStatus.COMMITTED)
        # Statuses taken after the barrage: every node at or above the last commit.
        after_barrage = time.time_ns() // 1_000_000
        wait_until(
            lambda: all(
                watcher.statuses[n]["timestamp"] > after_barrage
                and watcher.statuses[n]["height"] >= top
                for n in nodes
            ),
            30,
            message="fresh statuses from every node at the last committed height",
        )
        after = {node: dict(watcher.statuses[node]) for node in nodes}
    finally:
        if wallets is not None:
            wallets.stop()
        for each in watchers:
            each.stop()
        cluster.stop()
        broker.stop()

    # No committed transaction is missing from any chain, and the chains agree.
    chains = [cluster.assert_chain_linked(i) for i in range(4)]
    shortest = min(len(chain) for chain in chains)
    assert shortest >= top
    assert len({tuple(b.hash for b in chain[:shortest]) for chain in chains}) == 1
    for chain in chains:
        assert committed <= {tx.id for block in chain for tx in block.txs}
    assert len(committed) == len(fates), "every transfer was valid: all commit"

    # The broker counted every hostile publication once; what it let through, every
    # ledger node counted among its drops (the first, "capture", is a valid heartbeat).
    totals = access_totals(broker.log_text())["publishes"]
    mine = totals[HOSTILE.public.hex()[:16]]
    for counted, barrage in (
        (sum(mine.values()), device),
        (sum(totals["anonymous"].values()), anonymous),
    ):
        # At most what was sent.  Fewer when the link dropped (QoS 0 messages in paho's
        # buffer are lost), and, on a loaded machine, by up to 2 %: amqtt 0.12.1 drops
        # the QoS 0 messages still queued for a client when that client disconnects,
        # before its plugins see them (1 run in 15 at 52ef172, more often under load).
        assert counted <= barrage.total
        if not barrage.reconnected:
            assert counted >= 0.98 * barrage.total, (counted, barrage.total)
    assert totals["anonymous"].get("ok", 0) == 0
    let_through = mine.get("ok", 0) - 1
    growth = {n[:16]: device_drops(after[n]) - device_drops(before[n]) for n in nodes}
    assert all(g >= let_through for g in growth.values()), (let_through, growth)

    reasons: dict[str, int] = {}
    for node in nodes:
        for name, n in after[node]["dropped"].items():
            reasons[name] = reasons.get(name, 0) + n - before[node]["dropped"].get(name, 0)
    assert "message.internal_error" not in reasons  # no handler raised
    assert "Traceback" not in broker.log_text()
    print(
        f"\nbarrage: sent {sent} ({device.total} device, {anonymous.total} anonymous) in "
        f"{barrage_s:.1f} s, by kind {dict(kinds)}"
        f"\nbroker: device {mine}, anonymous {totals['anonymous']}"
        f"\nledger drops, all four nodes: {dict(sorted(reasons.items()))}"
        f"\nheights during the barrage: {heights[0]} -> {heights[-1]}"
        f"\ntransfers: {len(fates)} submitted, {len(committed)} committed up to height {top}"
        f"\nruntime {time.monotonic() - started:.1f} s"
    )
