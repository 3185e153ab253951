"""Watching an agent, in memory: account summaries, the status document and file, the
``micromine agent status`` command, Home Assistant payloads, Prometheus text, logs."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import structlog
from framework.protocol_samples import CHAIN, DEVICE, LEDGER, OTHER_DEVICE, block

from micromine.cli import main as micromine_main
from micromine.common.logs import configure_logging
from micromine.device_agent import homeassistant as ha
from micromine.device_agent.config import AgentConfig, ConfigError
from micromine.device_agent.core import AgentCore
from micromine.device_agent.idle import Activity, Reason, State
from micromine.device_agent.metrics import MetricsServer, render_metrics
from micromine.device_agent.status import (
    AccountSummary,
    Earnings,
    Identity,
    RateWindow,
    SummaryError,
    build_status,
    parse_account_summary,
)
from micromine.device_agent.status_file import (
    STALE_AFTER_S,
    read_status,
    render_status,
    write_status,
)
from micromine.ledger_node.chain.state import Account
from micromine.ledger_node.core.account_feed import get_account_summaries
from micromine.ledger_node.core.devices import DeviceRecord
from micromine.protocol import topics
from micromine.protocol.acl import Policy, check_publish, check_subscribe

NOW = 1_800_000_000_000
ME = DEVICE.public


# --- the ledger's account summaries -----------------------------------------------------------


def test_ledger_publishes_one_retained_summary_per_rewarded_device() -> None:
    b = block()  # rewards DEVICE and OTHER_DEVICE 3 each
    record = DeviceRecord(ME, agreed=9, disagreed=1)
    out = get_account_summaries(
        b, {ME: Account(40, 2)}, {ME: ((1, 5), (2, 3))}, {ME: record}, LEDGER.public
    )
    assert [p.topic for p in out] == sorted(
        topics.accounts(CHAIN, d.public) for d in (DEVICE, OTHER_DEVICE)
    )
    assert all(p.qos == 1 and p.retain for p in out)
    mine = next(p for p in out if p.topic == topics.accounts(CHAIN, ME))
    doc = json.loads(mine.payload)
    assert doc["height"] == b.height and doc["reward"] == 3
    assert (doc["balance"], doc["unvested"], doc["nonce"]) == (40, 8, 2)
    assert (doc["agreed"], doc["disagreed"], doc["node"]) == (9, 1, LEDGER.public.hex())
    summary = parse_account_summary(mine.payload, ME)
    assert summary.agreement == 0.9
    other = parse_account_summary(out[0 if out[0] is not mine else 1].payload, OTHER_DEVICE.public)
    assert other.agreement is None and other.balance == 0  # no record: agreement unknown


def test_account_topic_acl_ledger_publishes_anyone_reads() -> None:
    policy = Policy(CHAIN, frozenset({LEDGER.public}))
    topic = topics.accounts(CHAIN, ME)
    assert check_publish(policy, LEDGER.public, topic).allowed
    assert not check_publish(policy, ME, topic).allowed  # a device cannot forge its own
    assert check_subscribe(policy, ME, topic).allowed
    assert check_subscribe(policy, None, topic).allowed  # public, like blocks/json


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"[]", b"{}", b'{"device": "00"}', b"x" * 5000,
     json.dumps({"device": ME.hex(), "height": -1, "reward": 1, "balance": 1, "unvested": 0,
                 "nonce": 0}).encode(),
     json.dumps({"device": ME.hex(), "height": 1, "reward": "1", "balance": 1, "unvested": 0,
                 "nonce": 0}).encode()],
)  # fmt: skip
def test_bad_summaries_are_refused(payload: bytes) -> None:
    with pytest.raises(SummaryError):
        parse_account_summary(payload, ME)


def summary(height: int, reward: int = 5, **kw: Any) -> AccountSummary:
    return AccountSummary(height, reward, kw.get("balance", 100), kw.get("unvested", 7), 0, 3, 1)


def test_earnings_count_each_height_once() -> None:
    earnings = Earnings()
    assert earnings.on_summary(summary(3))
    assert not earnings.on_summary(summary(3))  # a redelivery
    assert not earnings.on_summary(summary(2))  # an older one
    assert earnings.on_summary(summary(5, reward=2))
    assert earnings.as_dict() == {
        "earned": 7, "balance": 100, "unvested": 7, "height": 5, "summaries": 2,
    }  # fmt: skip


def test_rate_window_covers_the_trailing_hour_only() -> None:
    window = RateWindow()
    window.add(0.0, 5)
    window.add(1800.0, 2)
    assert window.last_hour(1800.0) == 7
    assert window.last_hour(3650.0) == 2  # the first minute fell out
    assert window.last_hour(9000.0) == 0


# --- the status document and file -------------------------------------------------------------

IDENTITY = Identity(ME, CHAIN, "mqtt://b:1883", "micromine-agent/test", NOW - 60_000)


WORKING = Activity(State.WORKING, None, 2, None, 0.0, 0)


def status_doc(**changes: Any) -> dict[str, Any]:
    earnings = Earnings()
    earnings.on_summary(summary(4))
    args: dict[str, Any] = {
        "now_ms": NOW, "uptime_s": 60.0, "activity": WORKING, "connected": True,
        "ever_connected": True, "stats": {"batches": 2, "txs_judged": 9, "valid": 8,
        "invalid": 1, "dropped": {"duplicate": 1}}, "link": {"connects": 1},
        "earnings": earnings, "txs_last_hour": 9, "last_verdict_ms": NOW - 1000,
    }  # fmt: skip
    args.update(changes)
    return build_status(IDENTITY, **args)


def test_status_states_and_figures() -> None:
    doc = status_doc()
    assert (doc["state"], doc["connected"], doc["txs_judged"]) == ("working", True, 9)
    assert doc["agreement"] == 0.75 and doc["rewards"]["balance"] == 100
    assert doc["dropped"] == {"duplicate": 1, "account_summary": 0}
    paused = status_doc(activity=Activity(State.PAUSED, Reason.SCHEDULE, 0, 25.0, 20.0, 0))
    assert (paused["state"], paused["pause_reason"], paused["budget_used_pct"]) == (
        "paused", "schedule", 80.0,
    )  # fmt: skip
    assert status_doc(connected=False)["state"] == "offline"
    assert status_doc(connected=False, ever_connected=False)["state"] == "connecting"
    assert status_doc(earnings=Earnings())["agreement"] is None  # unknown, not guessed


def test_status_file_round_trip_and_staleness(tmp_path: Path) -> None:
    path = tmp_path / "state" / "status.json"
    write_status(path, status_doc())
    write_status(path, status_doc(txs_last_hour=10))  # replaced, no temp file left behind
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]
    fresh = read_status(path, NOW + 1000)
    assert fresh.problem is None and fresh.status is not None
    assert fresh.status["verdicts_last_hour"] == 10
    text = render_status(fresh)
    assert "working" in text and "75.0 %" in text and "balance 100" in text
    stale = read_status(path, NOW + int(STALE_AFTER_S * 1000) + 1000)
    assert stale.problem is not None and "not running" in stale.problem
    assert "STALE" in render_status(stale)


@pytest.mark.parametrize("content", [None, b"not json", b"[1]", b'{"updated_ms": "x"}'])
def test_unusable_status_files_are_explained(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "status.json"
    if content is not None:
        path.write_bytes(content)
    read = read_status(path, NOW)
    assert read.status is None and read.problem and str(path) in read.problem


def test_status_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none"
    assert micromine_main(["agent", "status", "--state-dir", str(missing)]) == 1
    assert "no status file" in capsys.readouterr().out
    doc = status_doc()
    doc["updated_ms"] = 0  # long ago
    write_status(tmp_path / "status.json", doc)
    assert micromine_main(["agent", "status", "--json", "--state-dir", str(tmp_path)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["stale"] is True and out["device"] == ME.hex()


def test_status_command_fresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = status_doc(now_ms=time.time_ns() // 1_000_000)
    write_status(tmp_path / "s.json", doc)
    assert micromine_main(["agent", "status", "--status-file", str(tmp_path / "s.json")]) == 0
    assert "state:        working" in capsys.readouterr().out


def test_watch_settings_validate() -> None:
    config = AgentConfig("mqtt://h:1", Path("/k/device.key"))
    assert config.status_file == Path("/k/status.json")
    assert AgentConfig("mqtt://h:1", Path("/k/key"), state_dir=Path("/s")).status_file == Path(
        "/s/status.json"
    )
    for bad in ({"homeassistant_prefix": "ha/#"}, {"homeassistant_prefix": "/ha"},
                {"metrics_port": 0}, {"metrics_host": ""}):  # fmt: skip
        with pytest.raises(ConfigError):
            AgentConfig("mqtt://h:1", Path("/k"), **bad)


# --- Home Assistant ---------------------------------------------------------------------------


def test_homeassistant_discovery_payloads() -> None:
    t = ha.HaTopics("homeassistant", ME)
    messages = ha.discovery_messages(t, version="v1", chain_id=CHAIN)
    configs = {m.topic: json.loads(m.payload) for m in messages if m.topic.endswith("/config")}
    node = f"micromine_{ME.hex()}"
    assert f"homeassistant/sensor/{node}/verdicts_per_hour/config" in configs
    assert f"homeassistant/binary_sensor/{node}/working/config" in configs
    assert len(configs) == len(ha.SENSORS) + 1
    assert all(m.retain and m.qos == 1 for m in messages)
    assert messages[-1].topic == t.availability and messages[-1].payload == b"online"
    unique_ids = set()
    state = ha.compute_state(status_doc())
    for topic, config in configs.items():
        assert topic.split("/")[2] == node
        assert config["state_topic"] == t.state
        assert config["availability_topic"] == t.availability
        assert config["expire_after"] == ha.EXPIRE_AFTER_S
        assert config["device"]["identifiers"] == [node]
        assert config["device"]["manufacturer"] == "micromine"
        assert config["value_template"].startswith("{{")
        unique_ids.add(config["unique_id"])
        key = config["value_template"].split("value_json.")[1].split()[0]
        assert key in state, key
    assert len(unique_ids) == len(configs)
    assert configs[f"homeassistant/sensor/{node}/budget_used/config"]["unit_of_measurement"] == "%"
    assert state["agreement_pct"] == 75.0 and state["verdicts_per_hour"] == 9


# --- Prometheus -------------------------------------------------------------------------------


def test_metrics_text_format() -> None:
    text = render_metrics(status_doc(activity=Activity(State.WORKING, None, 2, 20.0, 2.5, 0)))
    lines = text.splitlines()
    assert text.endswith("\n")
    assert "# TYPE micromine_agent_batches_total counter" in lines
    assert "micromine_agent_batches_total 2" in lines
    assert 'micromine_agent_judgements_total{verdict="invalid"} 1' in lines
    assert 'micromine_agent_state{state="working"} 1' in lines
    assert "micromine_agent_budget_used_percent 12.5" in lines
    assert "micromine_agent_agreement_ratio 0.75" in lines
    for line in lines:  # every sample belongs to a family declared just before it
        if not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            assert f"# TYPE {name} " in text, name
    unknown = render_metrics(status_doc(earnings=Earnings()))
    assert "agreement_ratio" not in unknown and "micromine_agent_balance" not in unknown


def test_metrics_server_serves_and_survives_bad_requests() -> None:
    server = MetricsServer("127.0.0.1", 0).start()
    try:
        server.update(render_metrics(status_doc()))
        url = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert b"micromine_agent_batches_total 2" in response.read()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{url}/other", timeout=10)
        assert error.value.code == 404
        error.value.close()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"\x00\xffgarbage\r\n\r\n")
            assert b"Error resp" in sock.recv(200)  # http.server answers, then closes
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            assert response.status == 200  # still serving
    finally:
        server.close()


# --- logs ------------------------------------------------------------------------------------


class FakeStderr(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_logs_are_json_off_a_terminal_and_readable_on_one(
    tty: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = FakeStderr(tty)
    monkeypatch.setattr("sys.stderr", stream)
    try:
        configure_logging("info")
        structlog.get_logger("t").info("hello there", answer=42)
        line = stream.getvalue().strip()
        if tty:
            assert "hello there" in line and "answer" in line and not line.startswith("{")
        else:
            record = json.loads(line)
            assert (record["event"], record["answer"], record["level"]) == (
                "hello there", 42, "info",
            )  # fmt: skip
            assert "timestamp" in record
    finally:
        configure_logging("info", json=True)
        logging.getLogger().handlers.clear()


# --- the broker's ACL for Home Assistant topics ------------------------------------------------


def test_homeassistant_acl() -> None:
    t = ha.HaTopics("homeassistant", ME)
    theirs = ha.HaTopics("homeassistant", OTHER_DEVICE.public)
    off = Policy(CHAIN, frozenset({LEDGER.public}))
    on = Policy(CHAIN, frozenset({LEDGER.public}), homeassistant_prefix="homeassistant")
    mine = [m.topic for m in ha.discovery_messages(t, version="v", chain_id=CHAIN)] + [t.state]
    assert all(check_publish(on, ME, topic).allowed for topic in mine)
    assert not any(check_publish(off, ME, topic).allowed for topic in mine)
    assert not check_publish(on, ME, theirs.state).allowed  # only its own
    assert not check_publish(on, ME, theirs.config("sensor", "balance")).allowed
    assert not check_publish(on, ME, "homeassistant/light/x/y/config").allowed
    assert not check_publish(on, None, t.state).allowed
    assert not check_publish(on, LEDGER.public, t.state).allowed
    assert check_subscribe(on, None, "homeassistant/#").allowed
    assert not check_subscribe(off, None, "homeassistant/#").allowed
    assert not check_subscribe(on, None, "#").allowed
    assert not check_subscribe(on, None, f"micromine/{CHAIN}/work/+").allowed
    for bad in ("micromine", "ha/#", "", "a//b"):
        with pytest.raises(ValueError):
            Policy(CHAIN, frozenset(), homeassistant_prefix=bad)


def test_bare_agent_command_still_runs_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("micromine.device_agent.cli.run_agent", lambda a: seen.append(a) or 7)
    assert micromine_main(["agent", "--broker", "mqtt://h:1", "--metrics-port", "9464"]) == 7
    assert seen[0].metrics_port == "9464"


# --- clock jumps ----------------------------------------------------------------------------


def test_heartbeats_survive_wall_clock_jumps() -> None:
    """Stepped back an hour, the agent keeps beating (core.on_tick re-arms); stepped forward
    a day, it sends one heartbeat, not a day's backlog."""
    core = AgentCore(DEVICE, CHAIN, heartbeat_ms=2000)
    assert len(core.on_tick(NOW)) == 1
    back = NOW - 3_600_000
    assert len(core.on_tick(back)) == 1  # re-armed at once, not an hour of silence
    assert core.on_tick(back + 1000) == []
    assert len(core.on_tick(back + 2000)) == 1
    ahead = NOW + 86_400_000
    assert len(core.on_tick(ahead)) == 1
    assert core.on_tick(ahead + 1) == []
