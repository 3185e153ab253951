"""``micromine devnet`` as a user runs it, against the embedded broker and Mosquitto."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from micromine.chains import read_chain
from micromine.protocol.block import Block
from micromine.protocol.codec import decode

pytestmark = pytest.mark.integration


def run_devnet(*flags: str, timeout: float = 240) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "micromine", "devnet", "--json", *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def test_devnet_commits_valid_and_never_invalid(tmp_path: Path) -> None:
    summary = run_devnet(
        "--agents", "4", "--tx-rate", "50", "--duration", "15",
        "--invalid-fraction", "0.2", "--data-dir", str(tmp_path),
    )  # fmt: skip
    for key in ("blocks", "submitted", "committed", "rejected", "invalid_submitted",
                "invalid_committed", "tps", "p50_latency_s", "p99_latency_s"):  # fmt: skip
        assert key in summary
    assert summary["submitted"] > 400
    assert summary["committed"] >= 0.95 * summary["submitted"]
    assert summary["invalid_submitted"] > 50
    assert summary["invalid_committed"] == 0
    assert summary["blocks"] > 0
    assert set(summary["exit_codes"].values()) == {0}, summary["exit_codes"]
    # Four ledger nodes by default: every block certified by at least 3 of 4, and the
    # four stored chains holding the same blocks afterwards.
    assert summary["ledgers"] == 4
    assert summary["min_certificate_signers"] >= 3
    assert summary["chains_identical"], summary["ledger_heights"]


@pytest.mark.mosquitto
def test_devnet_on_mosquitto_and_mosquitto_sub_sees_every_block(
    tmp_path: Path, mosquitto_broker: Any
) -> None:
    mosquitto_sub = shutil.which("mosquitto_sub")
    if mosquitto_sub is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto_sub (Debian package mosquitto-clients) is not installed")
        pytest.skip("mosquitto_sub (Debian package mosquitto-clients) is not installed")
    received = tmp_path / "mosquitto_sub.out"
    with received.open("w") as out:
        sub = subprocess.Popen(
            [mosquitto_sub, "-h", "127.0.0.1", "-p", str(mosquitto_broker.port),
             "-t", "micromine/devnet/blocks/json", "-q", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            data_dir = tmp_path / "devnet"
            summary = run_devnet(
                "--agents", "4", "--tx-rate", "50", "--duration", "10",
                "--broker", mosquitto_broker.url, "--data-dir", str(data_dir),
            )  # fmt: skip
        finally:
            sub.send_signal(signal.SIGTERM)
            sub.wait(timeout=10)
    assert summary["committed"] >= 0.95 * summary["submitted"] > 0
    chain = [decode(data, Block) for data in read_chain(data_dir / "ledger-1.sqlite")]
    lines = [json.loads(line) for line in received.read_text().splitlines() if line.strip()]
    seen = {block["height"]: block["hash"] for block in lines}
    assert seen == {block.height: block.hash.hex() for block in chain}
    assert all(
        {"height", "hash", "prev_hash", "timestamp", "txs", "signers"} <= set(b) for b in lines
    )


def test_devnet_bans_lying_agents_and_commits_no_forgery(tmp_path: Path) -> None:
    """2 of 8 agents judge every transaction valid (``--lie always-valid``), invalid
    transactions are mixed into the load, and the genesis leaves signatures to the
    devices (recheck 0): no invalid transaction is committed, both liars are banned by
    fraud proofs and forfeit their unvested rewards, and the honest devices keep
    earning after the bans (docs/CONSENSUS.md, "Device assignment")."""
    summary = run_devnet(
        "--ledgers", "4", "--agents", "8", "--lying-agents", "2",
        "--invalid-fraction", "0.2", "--tx-rate", "50", "--duration", "15",
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert summary["recheck_tx_signatures"] == 0
    assert summary["invalid_submitted"] > 50 and summary["invalid_committed"] == 0
    assert summary["invalid_kinds"].get("bad_signature", 0) > 0
    assert summary["valid_rejected"] == 0
    assert summary["committed"] >= 0.95 * summary["submitted"]
    assert summary["liars_banned"] == 2 and summary["honest_banned"] == 0
    assert set(summary["banned"]) == set(summary["liars"]) and summary["frauds"] == 2
    assert all(
        summary["burned"][liar] == summary["rewards"].get(liar, 0) for liar in summary["liars"]
    )
    assert summary["earning_devices"] == 6 and summary["earning_after_bans"] >= 4
    assert summary["chains_identical"], summary["ledger_heights"]
    assert set(summary["exit_codes"].values()) == {0}, summary["exit_codes"]
