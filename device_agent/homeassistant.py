"""Home Assistant MQTT discovery: the agent as a device with sensors.  Pure payloads.

Home Assistant creates entities from retained JSON configs published on
``<prefix>/<component>/<node_id>/<object_id>/config``.  We publish one per sensor,
all naming the same ``device`` (so they group as one device), all reading one JSON
state document on one state topic through a ``value_template``:

    <prefix>/sensor/micromine_<device hex>/<object>/config         retained
    <prefix>/binary_sensor/micromine_<device hex>/working/config   retained
    <prefix>/micromine/<device hex>/state         JSON, retained, every 30 s
    <prefix>/micromine/<device hex>/availability  "online" / "offline", retained

Availability.  MQTT gives a connection one Last Will, and the agent's is already its
signed offline DeviceStatus (the ledger relies on it), so Home Assistant cannot get an
"offline" Will of its own.  Instead the agent publishes "online" on every connect and
"offline" on a clean shutdown, and every entity has ``expire_after``: a killed or cut-off
agent stops refreshing its state and Home Assistant shows it unavailable within
:data:`EXPIRE_AFTER_S`.  The state and availability topics are under the discovery
prefix (which Home Assistant only reads for ``.../config``) so that one ACL line per
device covers everything (docs/AGENT_STATUS.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from micromine.device_agent.status import CONNECTING, OFFLINE, PAUSED, WORKING
from micromine.protocol.topics import Publish

__all__ = [
    "EXPIRE_AFTER_S",
    "STATE_INTERVAL_S",
    "HaTopics",
    "availability_message",
    "compute_state",
    "discovery_messages",
    "state_message",
]

STATE_INTERVAL_S = 30.0
EXPIRE_AFTER_S = 95  # three missed state updates, and a little slack
ONLINE, NOT_AVAILABLE = "online", "offline"


@dataclass(frozen=True, slots=True)
class HaTopics:
    prefix: str
    device: bytes

    @property
    def node_id(self) -> str:
        return f"micromine_{self.device.hex()}"

    @property
    def base(self) -> str:
        return f"{self.prefix}/micromine/{self.device.hex()}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    def config(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node_id}/{object_id}/config"


@dataclass(frozen=True, slots=True)
class Sensor:
    object_id: str
    name: str
    key: str  # in the state document
    unit: str | None = None
    state_class: str | None = None
    device_class: str | None = None
    icon: str | None = None


SENSORS = (
    Sensor("verdicts_per_hour", "Verdicts per hour", "verdicts_per_hour", "verdicts/h",
           "measurement", icon="mdi:check-decagram"),
    Sensor("txs_judged", "Transactions judged", "txs_judged", None, "total_increasing",
           icon="mdi:counter"),
    Sensor("rewards_earned", "Rewards earned", "rewards_earned", None, "total_increasing",
           icon="mdi:cash-plus"),
    Sensor("balance", "Balance", "balance", None, "total", icon="mdi:wallet"),
    Sensor("state", "State", "state", device_class="enum", icon="mdi:state-machine"),
    Sensor("budget_used", "CPU budget used", "budget_used_pct", "%", "measurement",
           icon="mdi:cpu-64-bit"),
    Sensor("agreement", "Agreement", "agreement_pct", "%", "measurement",
           icon="mdi:handshake"),
)  # fmt: skip
STATES = [WORKING, PAUSED, OFFLINE, CONNECTING]


def _device_block(device: bytes, version: str, chain_id: str) -> dict[str, Any]:
    return {
        "identifiers": [f"micromine_{device.hex()}"],
        "name": f"micromine agent {device.hex()[:8]}",
        "manufacturer": "micromine",
        "model": f"device agent ({chain_id})",
        "sw_version": version,
    }


def _common(topics: HaTopics, object_id: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "unique_id": f"{topics.node_id}_{object_id}",
        "state_topic": topics.state,
        "availability_topic": topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": NOT_AVAILABLE,
        "expire_after": EXPIRE_AFTER_S,
        "origin": {"name": "micromine"},
    }


def _sensor_config(topics: HaTopics, sensor: Sensor, device: dict[str, Any]) -> dict[str, Any]:
    config = _common(topics, sensor.object_id, sensor.name)
    # A JSON null renders as "None", which Home Assistant shows as "unknown".
    config["value_template"] = f"{{{{ value_json.{sensor.key} }}}}"
    config["device"] = device
    if sensor.unit is not None:
        config["unit_of_measurement"] = sensor.unit
    if sensor.state_class is not None:
        config["state_class"] = sensor.state_class
    if sensor.device_class is not None:
        config["device_class"] = sensor.device_class
    if sensor.device_class == "enum":
        config["options"] = STATES
    if sensor.icon is not None:
        config["icon"] = sensor.icon
    return config


def _publish(topic: str, doc: Any) -> Publish:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()
    return Publish(topic, payload, 1, True)


def discovery_messages(topics: HaTopics, *, version: str, chain_id: str) -> list[Publish]:
    """Every retained config message, then "online" on the availability topic."""
    device = _device_block(topics.device, version, chain_id)
    out = [
        _publish(topics.config("sensor", s.object_id), _sensor_config(topics, s, device))
        for s in SENSORS
    ]
    working = _common(topics, "working", "Working")
    working.update(
        value_template="{{ 'ON' if value_json.state == 'working' else 'OFF' }}",
        payload_on="ON",
        payload_off="OFF",
        device_class="running",
        device=device,
    )
    out.append(_publish(topics.config("binary_sensor", "working"), working))
    out.append(availability_message(topics, online=True))
    return out


def availability_message(topics: HaTopics, *, online: bool) -> Publish:
    return _publish(topics.availability, (ONLINE if online else NOT_AVAILABLE).encode())


def compute_state(status: dict[str, Any]) -> dict[str, Any]:
    """The state document the templates read, from the agent's status document."""
    rewards = status.get("rewards") or {}
    agreement = status.get("agreement")
    budget = status.get("budget_used_pct")
    return {
        "state": status.get("state"),
        "paused": status.get("state") == PAUSED,
        "pause_reason": status.get("pause_reason"),
        "verdicts_per_hour": status.get("verdicts_last_hour", 0),
        "txs_judged": status.get("txs_judged", 0),
        "batches": status.get("batches", 0),
        "rewards_earned": rewards.get("earned", 0),
        "balance": rewards.get("balance"),
        "unvested": rewards.get("unvested"),
        "budget_used_pct": None if budget is None else round(budget, 1),
        "agreement_pct": None if agreement is None else round(agreement * 100, 2),
    }


def state_message(topics: HaTopics, status: dict[str, Any]) -> Publish:
    return _publish(topics.state, compute_state(status))
