"""Agent settings: flag > environment > default, and clear errors for bad values."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from micromine.device_agent import add_agent_arguments
from micromine.device_agent.config import AgentConfig, ConfigError
from micromine.device_agent.core import Lie
from micromine.mqtt import LoginMode, TlsFiles


def parse(*argv: str, env: dict[str, str] | None = None) -> AgentConfig:
    parser = argparse.ArgumentParser()
    add_agent_arguments(parser)
    return AgentConfig.from_args(parser.parse_args(argv), env or {})


def test_defaults() -> None:
    config = parse(env={"XDG_CONFIG_HOME": "/cfg"})
    assert config.broker_url == "mqtt://127.0.0.1:1883"
    assert config.key_path == Path("/cfg/micromine/device.key")
    assert (config.chain_id, config.capacity, config.heartbeat_ms) == ("devnet", 64, 2000)
    assert (config.log_level, config.log_json, config.known_issuers) == ("info", None, None)


def test_flag_beats_environment_beats_default() -> None:
    env = {
        "MICROMINE_BROKER": "mqtt://env-host:1",
        "MICROMINE_KEY": "/env/key",
        "MICROMINE_CHAIN": "envchain",
    }
    from_env = parse(env=env)
    assert (from_env.broker_url, from_env.key_path, from_env.chain_id) == (
        "mqtt://env-host:1",
        Path("/env/key"),
        "envchain",
    )
    from_flags = parse(
        *("--broker", "ws://flag-host/mqtt", "--key", "/flag/key", "--chain", "flagchain"),
        env=env,
    )
    assert (from_flags.broker_url, from_flags.key_path, from_flags.chain_id) == (
        "ws://flag-host/mqtt",
        Path("/flag/key"),
        "flagchain",
    )


def test_other_flags() -> None:
    issuer = "ab" * 32
    config = parse(
        *("--capacity", "8", "--heartbeat", "0.5", "--log-level", "DEBUG", "--log-json"),
        *("--issuer", issuer),
    )
    assert (config.capacity, config.heartbeat_ms, config.log_level) == (8, 500, "debug")
    assert config.log_json is True
    assert config.known_issuers == frozenset({bytes.fromhex(issuer)})
    assert parse("--no-log-json").log_json is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--broker", "tls://h"], "mqtts://"),
        (["--tls-ca", "ca.pem"], "TLS broker URL"),
        (["--broker", "h:1883"], "no scheme"),
        (["--chain", "Bad_Chain"], "chain id"),
        (["--chain=-x"], "chain id"),
        (["--capacity", "0"], "capacity"),
        (["--capacity", "257"], "capacity"),
        (["--heartbeat", "0"], "heartbeat"),
        (["--issuer", "xyz"], "issuer"),
        (["--issuer", "abcd"], "issuer"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(*argv)


def test_login_and_tls_from_flags_or_environment() -> None:
    config = parse("--broker", "mqtts://h", "--tls-ca", "ca.pem", "--login", "password")
    assert config.login is LoginMode.PASSWORD
    assert config.tls == TlsFiles(Path("ca.pem"))
    env = {"MICROMINE_LOGIN": "none", "MICROMINE_TLS_CA": "/etc/ca.pem"}
    config = parse("--broker", "mqtts://h", env=env)
    assert (config.login, config.tls) == (LoginMode.NONE, TlsFiles(Path("/etc/ca.pem")))
    assert parse().login is LoginMode.TOKEN and parse().tls is None
    with pytest.raises(ConfigError, match="token, password or none"):
        parse(env={"MICROMINE_LOGIN": "secret"})


def test_client_id_is_short_stable_and_alphanumeric() -> None:
    config = parse()
    client_id = config.client_id(bytes(range(32)))
    assert client_id == config.client_id(bytes(range(32)))
    assert len(client_id) <= 23
    assert client_id.isalnum()


def test_agent_imports_no_broker_code() -> None:
    """The agent runs on a Raspberry Pi without the ``broker`` extra installed."""
    code = (
        "import sys, micromine.device_agent.service, micromine.device_agent.cli, "
        "micromine.mqtt, micromine.logs; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('amqtt', 'websockets')); "
        "print(heavy, file=sys.stderr); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_bad_configuration_exits_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "micromine.device_agent", "--broker", "tls://h"),
            *("--key", str(tmp_path / "k")),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("micromine agent: error:")
    assert "mqtts://" in result.stderr
    assert not (tmp_path / "k").exists()


def test_lying_is_refused_unless_explicitly_allowed() -> None:
    """--lie (tests only) needs MICROMINE_ALLOW_LYING=1, and is not in --help."""
    with pytest.raises(ConfigError, match="MICROMINE_ALLOW_LYING=1"):
        parse("--lie", "always-valid")
    with pytest.raises(ConfigError, match="MICROMINE_ALLOW_LYING"):
        parse("--lie", "always-valid", env={"MICROMINE_ALLOW_LYING": "yes"})
    config = parse("--lie", "always-valid", env={"MICROMINE_ALLOW_LYING": "1"})
    assert config.lie is Lie.ALWAYS_VALID
    assert parse(env={"MICROMINE_ALLOW_LYING": "1"}).lie is None
    parser = argparse.ArgumentParser()
    add_agent_arguments(parser)
    assert "--lie" not in parser.format_help()


def test_idle_time_settings_defaults_flags_and_environment() -> None:
    config = parse("--key", "/k/device.key")
    assert (config.cpu_budget, config.max_host_cpu, config.max_load, config.schedule) == (
        25.0,
        None,
        None,
        None,
    )
    assert (config.nice, config.idle_priority, config.window) == (10, True, 2)
    assert config.pause_path == Path("/k/paused")
    env = {
        "MICROMINE_CPU_BUDGET": "none",
        "MICROMINE_MAX_HOST_CPU": "60",
        "MICROMINE_MAX_LOAD": "0.8",
        "MICROMINE_SCHEDULE": "22:00-07:00",
        "MICROMINE_PAUSE_FILE": "/run/mm-paused",
        "MICROMINE_NICE": "19",
        "MICROMINE_IDLE_PRIORITY": "no",
        "MICROMINE_WINDOW": "4",
    }
    from_env = parse(env=env)
    assert from_env.cpu_budget is None and from_env.max_host_cpu == 60.0
    assert from_env.max_load == 0.8 and from_env.pause_path == Path("/run/mm-paused")
    assert from_env.schedule is not None and from_env.schedule[0].contains(23 * 60)
    assert (from_env.nice, from_env.idle_priority, from_env.window) == (19, False, 4)
    from_flags = parse(
        *("--cpu-budget", "20", "--nice", "0", "--idle-priority", "--window", "1"),
        *("--max-host-cpu", "none", "--schedule", "off"),
        env=env,
    )
    assert (from_flags.cpu_budget, from_flags.nice, from_flags.idle_priority) == (20.0, 0, True)
    assert (from_flags.window, from_flags.max_host_cpu, from_flags.schedule) == (1, None, None)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (("--cpu-budget", "0"), {}, "--cpu-budget must be above 0"),
        (("--cpu-budget", "lots"), {}, "--cpu-budget: 'lots' is not a number"),
        (("--max-host-cpu", "101"), {}, "--max-host-cpu must be in"),
        (("--max-load", "-1"), {}, "--max-load must be above 0"),
        (("--schedule", "9-17"), {}, "--schedule: schedule '9-17'"),
        (("--nice", "20"), {}, "--nice must be in 0..19"),
        (("--window", "0"), {}, "--window must be in 1..16"),
        ((), {"MICROMINE_WINDOW": "two"}, "--window: 'two' is not a whole number"),
        ((), {"MICROMINE_IDLE_PRIORITY": "maybe"}, "MICROMINE_IDLE_PRIORITY"),
    ],
)
def test_bad_idle_time_settings_are_named(
    argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(*argv, env=env)
