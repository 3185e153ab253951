"""The broker restarts under a running agent: it reconnects and earns again, unrestarted."""

from pathlib import Path
from typing import Any

import pytest
from framework.brokers import EmbeddedBroker
from framework.cluster import Cluster, submit_items

from micromine.client import LedgerClient
from micromine.ledger_node.storage import StorageError
from micromine.processes import wait_until
from micromine.protocol.kinds import ReceiptStatus

pytestmark = pytest.mark.integration


def rewarded_heights(cluster: Cluster, device: bytes) -> list[int]:
    """Heights of the committed blocks (on the ledger's disk) that rewarded ``device``."""
    try:
        chain = cluster.chain_on_disk()
    except StorageError:  # the ledger has not created its database yet
        return []
    return [block.height for block in chain if any(r.device == device for r in block.rewards)]


def commit_transfers(cluster: Cluster, client: LedgerClient, sender: int) -> None:
    """Two transfers from a sender of their own, committed (resent while not final)."""
    txs = [cluster.transfer(cluster.senders[sender]) for _ in range(2)]
    items = submit_items(client, txs)
    client.wait_final([tx.id for tx in txs], timeout=90, resend=items)
    for tx in txs:
        assert client.fates[tx.id].status is ReceiptStatus.COMMITTED, client.fates[tx.id]


def test_broker_restart_agent_reconnects_and_earns_again(
    tmp_path: Path, embedded_broker: EmbeddedBroker
) -> None:
    cluster = Cluster(tmp_path, embedded_broker.url, agents=1, k=1, q=1).start()
    watcher = cluster.watcher()
    client = cluster.client()
    try:
        agent, device = cluster.agents[0], cluster.agent_public_key(0)
        pid = agent.pid

        def status() -> dict[str, Any]:
            return cluster.agent_status(0)

        # Before: the agent earns, and learns it from its account topic.
        watcher.wait_for_devices(1)
        commit_transfers(cluster, client, 0)
        wait_until(lambda: rewarded_heights(cluster, device), 30, message="a first reward")
        wait_until(
            lambda: (status().get("rewards") or {}).get("summaries", 0) >= 1,
            30,
            message=lambda: f"the agent to see an account summary: {status()}",
        )
        connects = status()["link"]["connects"]

        embedded_broker.restart()
        restarted_at = max(block.height for block in cluster.chain_on_disk())
        wait_until(
            lambda: (
                status().get("link", {}).get("connects", 0) > connects and status().get("connected")
            ),
            60,
            message=lambda: f"the agent to reconnect: {status()}",
        )

        # After: new transactions are judged by the same agent process and pay it.
        commit_transfers(cluster, client, 1)
        wait_until(
            lambda: any(h > restarted_at for h in rewarded_heights(cluster, device)),
            30,
            message="a reward for the agent in a block committed after the restart",
        )
        wait_until(
            lambda: ((status().get("rewards") or {}).get("height") or 0) > restarted_at,
            30,
            message=lambda: f"the agent to learn of its new reward: {status()}",
        )
        assert agent.running() and agent.pid == pid, "the agent was restarted"
        assert status()["state"] == "working"
    finally:
        client.link.close()
        watcher.stop()
        cluster.stop()
