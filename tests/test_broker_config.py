"""Broker settings with access control and TLS, and the Mosquitto files, without a broker."""

from __future__ import annotations

import argparse
import base64
import hashlib
from pathlib import Path

import pytest
from framework.access_helpers import OPERATOR, write_genesis
from framework.protocol_samples import CHAIN, DEVICE, LEDGER

from micromine.broker.access import policy_from_genesis
from micromine.broker.amqtt_fixes import Broadcast, SubscriptionTable
from micromine.broker.config import BrokerConfig, add_broker_arguments, config_from_args
from micromine.broker.embedded import ACCESS_PLUGIN, ANONYMOUS_AUTH_PLUGIN, amqtt_config
from micromine.broker.mosquitto import acl_text, password_line
from micromine.common.genesis_file import load_genesis
from micromine.protocol.auth import compute_static_password
from micromine.protocol.limits import MAX_ANY_MESSAGE_BYTES
from micromine.protocol.quota import MQTT_OVERHEAD


def parse(*argv: str) -> BrokerConfig:
    parser = argparse.ArgumentParser()
    add_broker_arguments(parser)
    return config_from_args(parser.parse_args(argv))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"port": None}, "no listener"),
        ({"tls_port": 8883}, "TLS needs"),
        ({"tls_port": 8883, "tls_cert": Path("c")}, "TLS needs"),
        ({"tls_ca": Path("ca")}, "TLS needs|CA file"),
        ({"allow_anonymous": False}, "needs --genesis"),
        ({"tls_port": 1883, "tls_cert": Path("c"), "tls_key": Path("k")}, "must differ"),
    ],
)
def test_config_rejects_bad_access_and_tls_settings(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        BrokerConfig(**kwargs)  # type: ignore[arg-type]


def test_without_genesis_the_broker_is_open(tmp_path: Path) -> None:
    config = parse("--port", "1884")
    assert config.genesis is None
    assert list(amqtt_config(config)["plugins"]) == [ANONYMOUS_AUTH_PLUGIN]


def test_with_genesis_the_access_plugin_replaces_the_anonymous_one(tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path)
    config = parse("--genesis", str(genesis), "--no-anonymous", "--login-window", "60",
                   "--publish-rate", "device=20/100",
                   "--enrollment-state", str(tmp_path / "state.json"),
                   "--homeassistant-prefix", "homeassistant")  # fmt: skip
    plugins = amqtt_config(config)["plugins"]
    expected = {"genesis": str(genesis), "allow_anonymous": False, "window_ms": 60_000}
    assert plugins == {ACCESS_PLUGIN: {
        **expected, "publish_rates": ["device=20/100"],
        "enrollment_state": str(tmp_path / "state.json"),
        "homeassistant_prefix": "homeassistant",
    }}  # fmt: skip
    with pytest.raises(ValueError, match="enrollment-state needs --genesis"):
        parse("--enrollment-state", str(tmp_path / "state.json"))


def test_publish_rates_need_a_genesis_and_a_known_role(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs --genesis"):
        parse("--publish-rate", "device=5")
    with pytest.raises(ValueError, match="role must be"):
        parse("--genesis", str(write_genesis(tmp_path)), "--publish-rate", "robot=5")


def test_a_bad_genesis_fails_before_amqtt(tmp_path: Path) -> None:
    (tmp_path / "g.json").write_text("{}")
    with pytest.raises(ValueError, match="missing field"):
        parse("--genesis", str(tmp_path / "g.json"))


def test_tls_listener_and_urls() -> None:
    config = parse("--tls-cert", "c.pem", "--tls-key", "k.pem", "--ws-port", "0")
    listeners = amqtt_config(config)["listeners"]
    assert listeners["tls"]["ssl"] is True and listeners["tls"]["bind"].endswith(":8883")
    assert config.tls_url == "mqtts://127.0.0.1:8883"
    only_tls = parse("--port", "0", "--tls-cert", "c.pem", "--tls-key", "k.pem")
    assert list(amqtt_config(only_tls)["listeners"]) == ["default", "ws"]
    assert only_tls.url == "mqtts://127.0.0.1:8883" and only_tls.ws_url == "wss://127.0.0.1:9001"


def test_password_lines_are_what_mosquitto_passwd_writes() -> None:
    salt = bytes(range(12))
    line = password_line("alice", "secret", salt)
    user, _, rest = line.partition(":")
    _, seven, iterations, salt_b64, digest_b64 = rest.split("$")
    assert (user, seven, iterations) == ("alice", "7", "101")
    assert base64.b64decode(salt_b64) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)
    assert base64.b64decode(digest_b64) == expected


def test_mosquitto_acl_sections(tmp_path: Path) -> None:
    policy = policy_from_genesis(load_genesis(write_genesis(tmp_path)))
    users = [LEDGER.public, OPERATOR.public, DEVICE.public]
    text = acl_text(policy, users, allow_anonymous=True)
    head = text.split("\nuser ")[0]
    anonymous = [line for line in head.splitlines() if line.startswith("topic ")]
    assert anonymous == [f"topic read micromine/{CHAIN}/accounts/+",
                         f"topic read micromine/{CHAIN}/blocks",
                         f"topic read micromine/{CHAIN}/blocks/json"]  # fmt: skip
    patterns = [line for line in head.splitlines() if line.startswith("pattern ")]
    assert all("%u" in line for line in patterns)  # a pattern without %u is anonymous's too
    assert f"pattern write micromine/{CHAIN}/verdicts/%u" in patterns
    assert f"pattern read micromine/{CHAIN}/work/%u" in patterns
    ledger = text.split(f"user {LEDGER.public.hex()}\n")[1].split("\n\n")[0]
    assert f"topic write micromine/{CHAIN}/consensus/{LEDGER.public.hex()}" in ledger
    assert f"topic write micromine/{CHAIN}/blocks" in ledger
    device = text.split(f"user {DEVICE.public.hex()}\n")[1].split("\n\n")[0]
    assert "write" in device and "blocks" in device
    assert not any(line.startswith("topic write") and not line.endswith(("/tx/submit", "/frauds"))
                   for line in device.splitlines())  # fmt: skip
    assert f"topic write micromine/{CHAIN}/frauds" in device
    closed = acl_text(policy, users, allow_anonymous=False)
    assert "topic read" not in closed.split("\nuser ")[0]


def test_mosquitto_config_refuses_a_password_that_is_not_the_keys(tmp_path: Path) -> None:
    from micromine.cli import main  # noqa: PLC0415

    genesis = write_genesis(tmp_path)
    wrong = compute_static_password(LEDGER, CHAIN)  # the ledger's, claimed for the device
    argv = ["broker", "mosquitto-config", "--genesis", str(genesis), "--out", str(tmp_path / "o"),
            "--password", f"{DEVICE.public.hex()}={wrong}"]  # fmt: skip
    assert main(argv) == 2
    good = compute_static_password(DEVICE, CHAIN)
    argv[-1] = f"{DEVICE.public.hex()}={good}"
    assert main(argv) == 0
    passwd = (tmp_path / "o" / "passwd").read_text()
    assert passwd.startswith(DEVICE.public.hex() + ":$7$101$")
    assert (tmp_path / "o" / "passwd").stat().st_mode & 0o077 == 0
    conf = (tmp_path / "o" / "mosquitto.conf").read_text().splitlines()
    assert f"message_size_limit {MAX_ANY_MESSAGE_BYTES}" in conf
    assert f"max_packet_size {MAX_ANY_MESSAGE_BYTES + MQTT_OVERHEAD}" in conf


def test_the_subscription_table_iterates_a_copy() -> None:
    """amqtt_fixes 9: a subscription added while a broadcast walks the table."""
    table = SubscriptionTable({"a": [], "b": []})
    for name, _subscribers in table.items():
        table[name + "x"] = []
    for name in table:
        del table[name]
    assert table == {}


def test_a_broadcast_formats_without_its_payload() -> None:
    """amqtt_fixes 10: amqtt formats each broadcast for a debug line, level or not."""
    broadcast = Broadcast(session=None, topic="t/x", data=b"\x00" * 100_000)
    assert f"{broadcast}" == "<broadcast on 't/x', 100000 bytes>"
    assert broadcast["data"] == b"\x00" * 100_000
