"""A real agent process watched three ways: Home Assistant discovery on a real broker,
its Prometheus endpoint and its status file (no ledger needed: an idle agent)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from framework.access_helpers import start_secured, write_key
from framework.brokers import BrokerProcess, free_port, require_mosquitto
from framework.protocol_samples import CHAIN, DEVICE

from micromine.common.keyfile import load_or_create_key
from micromine.common.mqtt import Incoming, LinkConfig, MqttLink
from micromine.processes import ManagedProcess, python_module, wait_until

pytestmark = pytest.mark.integration

SENSORS = {"verdicts_per_hour", "txs_judged", "rewards_earned", "balance", "state",
           "budget_used", "agreement"}  # fmt: skip


def test_homeassistant_discovery_metrics_and_status_file(
    tmp_path: Path, broker: BrokerProcess
) -> None:
    watch_agent(broker.url, tmp_path / "device.key", "testchain")


@pytest.mark.parametrize("kind", ["amqtt", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def test_homeassistant_discovery_through_the_access_control(tmp_path: Path, kind: str) -> None:
    """A broker with the chain's ACL and ``--homeassistant-prefix``: the device logs in
    (token or static password) and Home Assistant reads anonymously."""
    mosquitto = require_mosquitto() if kind == "mosquitto" else None
    secured = start_secured(kind, tmp_path, mosquitto, "--homeassistant-prefix", "homeassistant")
    try:
        key = write_key(tmp_path / "agent.key", DEVICE)  # enrolled by mosquitto_config
        login = ("--login", "password") if kind == "mosquitto" else ()
        watch_agent(secured.broker.url, key, CHAIN, *login)
    finally:
        secured.broker.stop()


def watch_agent(broker_url: str, key_path: Path, chain: str, *flags: str) -> None:
    """Start an agent with Home Assistant and metrics on; check all three outputs."""
    device = load_or_create_key(key_path).public.hex()
    node = f"micromine_{device}"
    port = free_port()
    seen: dict[str, bytes] = {}
    ha = MqttLink(LinkConfig(client_id="ha-test", broker_url=broker_url,
                             subscriptions=(("homeassistant/#", 1),)))  # fmt: skip
    ha.start()
    assert ha.wait_connected(30)
    agent = ManagedProcess("agent", python_module(
        "micromine.device_agent", "--broker", broker_url, "--chain", chain,
        "--key", str(key_path), "--log-json", "--homeassistant",
        "--metrics-port", str(port), *flags,
    ), key_path.parent / "agent.log").start()  # fmt: skip

    def drain() -> None:
        while (item := ha.get(0.05)) is not None:
            if isinstance(item, Incoming):
                seen[item.topic] = item.payload

    def has(topic: str) -> bool:
        drain()
        return topic in seen

    try:
        base = f"homeassistant/micromine/{device}"
        for topic in [*(f"homeassistant/sensor/{node}/{s}/config" for s in SENSORS),
                      f"homeassistant/binary_sensor/{node}/working/config",
                      f"{base}/availability", f"{base}/state"]:  # fmt: skip
            wait_until(lambda t=topic: has(t), 30, message=lambda t=topic: f"{t} in {list(seen)}")
        assert seen[f"{base}/availability"] == b"online"
        state = json.loads(seen[f"{base}/state"])
        assert state["state"] == "working" and state["txs_judged"] == 0
        config: dict[str, Any] = json.loads(seen[f"homeassistant/sensor/{node}/budget_used/config"])
        for key in ("name", "unique_id", "state_topic", "value_template", "availability_topic",
                    "expire_after", "unit_of_measurement"):  # fmt: skip
            assert key in config, key
        assert config["device"]["identifiers"] == [node]
        assert config["state_topic"] == f"{base}/state"

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'micromine_agent_state{state="working"} 1' in text
        status_path = key_path.parent / "status.json"  # default: next to the key
        wait_until(lambda: json.loads(status_path.read_text())["connected"], 30)

        assert agent.stop() == 0
        wait_until(lambda: has(f"{base}/availability") and
                   seen[f"{base}/availability"] == b"offline", 30)  # fmt: skip
        assert json.loads(status_path.read_text())["state"] == "offline"
    finally:
        agent.stop()
        ha.close()
