"""The whole pipeline with real processes: broker, ledger node, agents, a client."""

import json
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from framework.cluster import CHAIN, Cluster, Wallets, Watcher, submit_items

from micromine.processes import wait_until
from micromine.protocol import topics
from micromine.protocol.codec import encode
from micromine.protocol.crypto import sha256
from micromine.protocol.kinds import Reason, ReceiptStatus

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, broker: Any) -> Any:
    running = Cluster(tmp_path, broker.url, agents=3).start()
    yield running
    running.stop()


def test_each_invalid_kind_is_rejected_with_its_reason(cluster: Cluster) -> None:
    s = cluster.senders
    good = cluster.transfer(s[0])
    bad_signature = replace(cluster.transfer(s[1]), signature=bytes(64))
    wrong_chain = cluster.transfer(s[2], chain_id="other-chain")
    expired = cluster.transfer(s[3], expiry_ms=1_000)
    overspend = cluster.transfer(s[4], amount=10**12)
    reused_nonce = cluster.transfer(s[0], nonce=0, memo="replayed nonce")
    malformed = b"\x8a\x01\x02\x03"
    oversized = encode(cluster.transfer(s[5])) + bytes(600)
    txs = [good, bad_signature, wrong_chain, expired, overspend, reused_nonce]
    expected = {
        bad_signature.id: Reason.BAD_SIGNATURE,
        wrong_chain.id: Reason.WRONG_CHAIN,
        expired.id: Reason.EXPIRED,
        overspend.id: Reason.OVERSPEND,
        reused_nonce.id: Reason.BAD_NONCE,
        sha256(malformed): Reason.MALFORMED,
        sha256(oversized): Reason.OVERSIZED,
    }
    client = cluster.client()
    try:
        items = [encode(tx) for tx in txs] + [malformed, oversized]
        client.submit(items)
        ids = [good.id, *expected]
        client.wait_final(ids, timeout=60, resend=items)
        for item_id, reason in expected.items():
            fate = client.fates[item_id]
            assert (fate.status, fate.value) == (ReceiptStatus.REJECTED, reason), fate.describe()
        assert client.fates[good.id].status is ReceiptStatus.COMMITTED
    finally:
        client.link.close()
    committed = {tx.id for block in cluster.assert_chain_linked() for tx in block.txs}
    assert good.id in committed
    assert committed.isdisjoint(expected)


def test_agent_killed_mid_batch_its_batch_goes_to_another_device(
    tmp_path: Path, embedded_broker: Any
) -> None:
    cluster = Cluster(tmp_path, embedded_broker.url, agents=3, k=2, q=2).start()
    victim = cluster.agent_public_key(0)
    watcher = Watcher(embedded_broker.url, extra=(topics.work(CHAIN, victim),)).start()
    client = cluster.client()
    try:
        wait_until(
            lambda: watcher.status.get("devices_live", 0) >= 3, 60, message="three live devices"
        )
        cluster.agents[0].kill(signal.SIGSTOP)  # frozen: it will receive work and never answer
        submitted = []
        for _ in range(20):  # until a batch is addressed to the frozen agent
            txs = [cluster.transfer(s) for s in cluster.senders]
            submitted += txs
            submit_items(client, txs)
            if watcher.messages:
                break
            time.sleep(0.5)  # pacing the load, not waiting for a condition
        assert watcher.messages, "the frozen agent was never given a batch"
        cluster.agents[0].kill(signal.SIGKILL)  # killed holding its batch
        ids = [tx.id for tx in submitted]
        client.wait_final(ids, timeout=90, resend=[encode(tx) for tx in submitted])
        assert all(client.fates[i].status is ReceiptStatus.COMMITTED for i in ids)
        wait_until(lambda: watcher.status.get("redispatched", 0) >= 1, 10, message="a re-dispatch")
    finally:
        client.link.close()
        watcher.stop()
        cluster.stop()


def test_ledger_killed_resumes_at_its_height_and_loses_nothing(
    tmp_path: Path, embedded_broker: Any
) -> None:
    cluster = Cluster(tmp_path, embedded_broker.url, agents=3).start()
    watcher = Watcher(embedded_broker.url).start()
    wallets = Wallets(cluster)
    try:
        wait_until(
            lambda: watcher.status.get("devices_live", 0) >= 3, 60, message="three live devices"
        )
        wallets.start()
        wait_until(lambda: len(watcher.blocks) >= 3, 60, message="three blocks")
        cluster.kill_ledger()
        before = cluster.assert_chain_linked()
        assert len(before) >= 3
        acknowledged_before = {
            i for i, fate in wallets.fates().items() if fate.status is not ReceiptStatus.REJECTED
        }
        cluster.start_ledger()
        wait_until(
            lambda: len(cluster.chain_on_disk()) > len(before), 60, message="a block after restart"
        )
        wallets.submitting.clear()
        wait_until(wallets.all_final, 120, message="every submitted transaction to be decided")
    finally:
        wallets.stop()
        watcher.stop()
        cluster.stop()
    after = cluster.assert_chain_linked()
    # It resumed at its height (its first log line says so) ...
    first = json.loads(cluster.ledger_log(0, 2).read_text().splitlines()[0])
    assert first["event"] == "ledger node starting" and first["height"] == len(before)
    # ... and nothing committed before the crash changed or vanished.
    assert [b.hash for b in after[: len(before)]] == [b.hash for b in before]
    committed = [tx.id for block in after for tx in block.txs]
    assert len(committed) == len(set(committed)), "a transaction was committed twice"
    # Every transaction acknowledged before the crash committed.  Every other one was
    # decided too: submissions sent while no ledger listened were resent, and those whose
    # nonce no longer fitted after a lost predecessor were rejected with that reason.
    assert acknowledged_before <= set(committed)
    for tx_id, fate in wallets.fates().items():
        if fate.status is ReceiptStatus.REJECTED:
            assert fate.value in (Reason.BAD_NONCE, Reason.NONCE_GAP), fate.describe()
        else:
            assert fate.status is ReceiptStatus.COMMITTED and tx_id in committed
