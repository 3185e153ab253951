"""Enrollment by an operator, with real processes: under the ``approved`` policy a
device's hello is refused until `micromine devices approve` has a block record the
operator's approval; `micromine devices revoke` takes it out again, and `micromine
devices list` shows both from the ledger's database."""

import json
from pathlib import Path
from typing import Any

import pytest
from framework.cluster import CHAIN, Cluster, Watcher
from test_cli import micromine

from micromine.cli.devices import read_devices
from micromine.common.keyfile import load_or_create_key
from micromine.processes import wait_until

pytestmark = pytest.mark.integration


def device_row(db: Path, device: bytes) -> dict[str, Any]:
    return next((r for r in read_devices(db) if r["device"] == device.hex()), {})


def drops(watcher: Watcher, reason: str) -> int:
    return sum(int(s.get("dropped", {}).get(reason, 0)) for s in watcher.statuses.values())


def test_an_operator_approves_then_revokes_a_device(tmp_path: Path, embedded_broker: Any) -> None:
    operator_path = tmp_path / "operator.key"
    operator = load_or_create_key(operator_path)
    cluster = Cluster(
        tmp_path, embedded_broker.url, agents=1, operators=(operator.public,), enrollment="approved"
    )
    device = cluster.agent_public_key(0)
    watcher = Watcher(embedded_broker.url).start()
    decide = ["--key", str(operator_path), "--broker", embedded_broker.url, "--chain", CHAIN]
    decide += ["--login", "none", "--timeout", "60"]
    try:
        cluster.start_ledger(0)
        cluster.start_agent(0)
        # Not approved: its hello is refused with a counted reason, and it is not registered.
        wait_until(lambda: drops(watcher, "hello.not_approved") >= 1, 60, message="a refused hello")
        assert device_row(cluster.db_path, device).get("registered_at") is None

        approved = micromine("devices", "approve", device.hex(), *decide)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert "recorded in block" in approved.stdout
        # Its refused hello was kept: once the approval is recorded, a block registers
        # the device without it having to connect again.
        wait_until(
            lambda: device_row(cluster.db_path, device).get("registered_at") is not None,
            60,
            message="the approved device to be registered",
        )
        assert device_row(cluster.db_path, device)["status"] == "approved"

        revoked = micromine("devices", "revoke", device.hex(), *decide)
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        wait_until(
            lambda: device_row(cluster.db_path, device).get("status") == "revoked",
            30,
            message="the revocation in the ledger's database",
        )
    finally:
        watcher.stop()
        cluster.stop()
    listing = micromine("devices", "list", "--db", str(cluster.db_path), "--json")
    assert listing.returncode == 0, listing.stderr
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [(r["device"], r["status"]) for r in rows] == [(device.hex(), "revoked")]


def test_devices_list_says_what_is_wrong_with_its_database(tmp_path: Path) -> None:
    missing = micromine("devices", "list", "--db", str(tmp_path / "nothing.sqlite"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    not_a_db = tmp_path / "genesis.json"
    not_a_db.write_text("{}")
    wrong = micromine("devices", "list", "--db", str(not_a_db))
    assert wrong.returncode == 2 and "not a ledger database" in wrong.stderr
    bad_key = micromine("devices", "approve", "abcd", "--key", str(not_a_db))
    assert bad_key.returncode == 2 and "64 hex digits" in bad_key.stderr
