"""The ``micromine`` command as a user types it."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from framework.cluster import Cluster, Watcher

from micromine.common.genesis_file import load_genesis
from micromine.common.keyfile import load_or_create_key
from micromine.common.mqtt import Incoming, LinkConfig, MqttLink
from micromine.processes import wait_until
from micromine.protocol import topics
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.block import Block, BlockHeader, CommitSignature, FraudProof, FraudReport
from micromine.protocol.codec import decode, encode, sign, sign_commit
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.genesis import Genesis
from micromine.protocol.messages import Assignment, Judgement, Transaction, Verdict


def micromine(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "micromine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_keys_and_genesis(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    created = micromine("keys", "new", str(key))
    assert created.returncode == 0, created.stderr
    public = created.stdout.strip()
    assert len(public) == 64 and (key.stat().st_mode & 0o777) == 0o600
    assert micromine("keys", "show", str(key)).stdout.strip() == public
    again = micromine("keys", "new", str(key))
    assert again.returncode == 2 and "not overwriting" in again.stderr

    # several at once, keeping what exists (the compose init service's idempotent use)
    other = tmp_path / "other.key"
    kept = micromine("keys", "new", "--exist-ok", str(key), str(other))
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.split() == [public, micromine("keys", "show", str(other)).stdout.strip()]

    out = tmp_path / "genesis.json"
    funded = "ab" * 32
    made = micromine("genesis", "--out", str(out), "--chain", "mychain", "--ledger-key",
                     str(key), "--fund", f"{funded}=1000", "--k", "3", "--q", "2",
                     "--device", "cd" * 32, "--assignment-window", "16")  # fmt: skip
    assert made.returncode == 0, made.stderr
    genesis = load_genesis(out)
    assert genesis.ledger_nodes == (bytes.fromhex(public),)
    assert genesis.balances == ((bytes.fromhex(funded), 1000),)
    assert genesis.devices == (bytes.fromhex("cd" * 32),)
    assert genesis.params.assignment_window == 16
    bad = micromine("genesis", "--out", str(tmp_path / "g2.json"), "--ledger-key", str(key),
                    "--k", "2", "--q", "3")  # fmt: skip
    assert bad.returncode == 2 and "q <= k" in bad.stderr


@pytest.mark.integration
def test_tx_send_wait_and_blocks_watch(tmp_path: Path, embedded_broker: Any) -> None:
    cluster = Cluster(tmp_path, embedded_broker.url, agents=3).start()
    watcher = Watcher(embedded_broker.url).start()
    try:
        # Registered, too (the first block registers them): a device gets work only then.
        wait_until(
            lambda: watcher.status.get("devices_registered", 0) >= 3,
            60,
            message="three registered devices",
        )
        key = tmp_path / "wallet.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, cluster.senders[0].seed.hex().encode() + b"\n")
        os.close(fd)
        common = ("--broker", embedded_broker.url, "--chain", "testchain", "--key", str(key),
                  "--to", "cd" * 32, "--wait", "--timeout", "60")  # fmt: skip
        watch = subprocess.Popen(
            [sys.executable, "-m", "micromine", "blocks", "watch", "--broker",
             embedded_broker.url, "--chain", "testchain", "--json", "--count", "2",
             "--verify", "--genesis", str(cluster.genesis_path)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        sent = micromine("tx", "send", *common, "--amount", "25")
        assert sent.returncode == 0, sent.stderr
        assert "committed at height" in sent.stdout
        tx_id = sent.stdout.split()[1]
        assert (tmp_path / "wallet.key.nonce").read_text().strip() == "1"
        # The first block `watch` prints is the retained latest one: the block that
        # registered the devices, or already the one with our transaction.
        assert watch.stdout is not None
        block = json.loads(watch.stdout.readline())
        if tx_id not in block["txs"]:
            assert block["registrations"] and not block["txs"]
            block = json.loads(watch.stdout.readline())
        watch.terminate()
        watch.communicate(timeout=10)
        assert tx_id in block["txs"] and block["signers"] == [cluster.ledger_key.public.hex()]
        assert block["certificate"]["ok"] and block["certificate"]["signers"] == 1
        assert block["certificate"]["round"] == block["commit_round"] >= 1

        overspend = micromine("tx", "send", *common, "--amount", str(10**13))
        assert overspend.returncode == 1 and "rejected: overspend" in overspend.stdout
    finally:
        watcher.stop()
        cluster.stop()


@pytest.mark.integration
def test_blocks_watch_verify_rejects_a_short_or_forged_certificate(
    tmp_path: Path, embedded_broker: Any
) -> None:
    keys = [KeyPair(sha256(b"watch validator %d" % i)) for i in range(4)]
    genesis = Genesis("watchchain", 0, tuple(sorted(k.public for k in keys)), ())
    genesis_path = tmp_path / "genesis.json"
    genesis_path.write_text(genesis.to_json())
    header = BlockHeader("watchchain", 1, genesis.hash, *(bytes(32),) * 3, 1, keys[0].public)

    def block(signers: list[KeyPair], rounds: tuple[int, ...] = (1, 1, 1)) -> bytes:
        """Certified as of round 1, each signature made for its round in ``rounds``."""
        certificate = tuple(
            CommitSignature(k.public, sign_commit(r, header.hash, "watchchain", k))
            for k, r in zip(signers, rounds, strict=False)
        )
        return encode(Block(header, (), (), (), 1, certificate))

    watch = subprocess.Popen(
        [sys.executable, "-m", "micromine", "blocks", "watch", "--broker", embedded_broker.url,
         "--chain", "watchchain", "--verify", "--genesis", str(genesis_path), "--count", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watch.stderr is not None
    assert watch.stderr.readline().startswith("watching")  # connected and subscribed
    impostor = KeyPair(sha256(b"impostor"))
    with MqttLink(LinkConfig("watch-test-publisher", embedded_broker.url)) as link:
        assert link.wait_connected(10)
        for payload in (
            block(keys[:3]),
            block(keys[:2]),
            block([impostor, *keys[:2]]),
            block(keys[:3], rounds=(1, 1, 2)),  # rounds mixed: the third is of round 2
        ):
            assert link.publish(topics.blocks("watchchain"), payload, 1, wait=5)
    lines = watch.communicate(timeout=60)[0].splitlines()
    assert "round 1" in lines[0] and "verified: round 1, 3/3" in lines[0]
    assert "REJECTED" in lines[1] and "short certificate" in lines[1]
    assert "REJECTED" in lines[2] and "not a validator" in lines[2]
    assert "REJECTED" in lines[3] and "short certificate" in lines[3]
    assert "bad signature" in lines[3] and "for round 1" in lines[3]


def test_blocks_watch_verify_reports_a_committed_forgery(
    tmp_path: Path, embedded_broker: Any
) -> None:
    """A certified block carries a transfer with a signature its sender never made,
    judged valid by a device: ``blocks watch --verify --key`` says so and reports the
    device's verdict to the ledger nodes as a FraudReport on ``frauds``."""
    keys = [KeyPair(sha256(b"watch validator %d" % i)) for i in range(4)]
    device, sender = KeyPair(sha256(b"lying device")), KeyPair(sha256(b"sender"))
    genesis = Genesis("watchchain", 0, tuple(sorted(k.public for k in keys)), ())
    genesis_path = tmp_path / "genesis.json"
    genesis_path.write_text(genesis.to_json())
    tx = sign(Transaction("watchchain", sender.public, keys[1].public, 5, 1, 0, 2**40, ""), sender)
    forged = replace(tx, signature=bytes(64))
    assignment = sign(
        Assignment("watchchain", keys[0].public, 1, 0, 2**40, compute_batch_root([forged])),
        keys[0],
    )
    lie = sign(Verdict("watchchain", device.public, assignment, (Judgement.of(forged, 0),)), device)
    header = BlockHeader("watchchain", 1, genesis.hash, *(bytes(32),) * 3, 1, keys[0].public)
    certificate = tuple(
        CommitSignature(k.public, sign_commit(1, header.hash, "watchchain", k)) for k in keys[:3]
    )
    block = Block(header, (forged,), (lie,), (), 1, certificate)
    watcher_key = tmp_path / "watcher.key"
    load_or_create_key(watcher_key)

    reports: list[bytes] = []
    frauds = topics.frauds("watchchain")
    with MqttLink(
        LinkConfig("fraud-listener", embedded_broker.url, subscriptions=((frauds, 1),))
    ) as link:
        assert link.wait_connected(10)
        watch = subprocess.Popen(
            [sys.executable, "-m", "micromine", "blocks", "watch", "--broker", embedded_broker.url,
             "--chain", "watchchain", "--verify", "--genesis", str(genesis_path),
             "--key", str(watcher_key), "--count", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert watch.stderr is not None
        assert watch.stderr.readline().startswith("watching")
        assert link.publish(topics.blocks("watchchain"), encode(block), 1, wait=5)
        out, err = watch.communicate(timeout=60)
        assert "verified: round 1, 3/3" in out
        assert f"FORGED transaction {forged.id.hex()[:16]}" in err
        assert "1 fraud proofs reported" in err

        def got_report() -> bool:
            item = link.get(0.2)
            if isinstance(item, Incoming) and item.topic == frauds:
                reports.append(item.payload)
            return bool(reports)

        wait_until(got_report, timeout=10)
    report = decode(reports[0], FraudReport)
    assert report.proof == FraudProof(lie, forged)
