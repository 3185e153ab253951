"""Agent settings: flag > environment > TOML file > default, and clear errors for bad values."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from micromine.common.keyfile import load_or_create_key
from micromine.common.mqtt import LoginMode, TlsFiles
from micromine.device_agent import add_agent_arguments
from micromine.device_agent.config import AgentConfig, ConfigError, load, render_toml
from micromine.device_agent.core import Lie
from micromine.device_agent.idle import TimeWindow
from micromine.device_agent.settings import SETTINGS


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
        (["--key", "~no-such-user-0/k"], "no such user"),
        (["--config", "~no-such-user-0/agent.toml"], "--config: cannot expand"),
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
        "micromine.common.mqtt, micromine.common.logs; "
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


# --- one table of settings: file, environment and flags -----------------------------------

# Every setting of /work/prompts/names.md (issue 5), plus the older ones.
SETTING_NAMES = [
    "broker",
    "chain",
    "state_dir",
    "key",
    "capacity",
    "window",
    "heartbeat",
    "issuer",
    "login",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "cpu_budget",
    "max_host_cpu",
    "max_load",
    "schedule",
    "pause_file",
    "nice",
    "idle_priority",
    "status_file",
    "homeassistant",
    "homeassistant_prefix",
    "metrics_port",
    "metrics_host",
    "log_level",
    "log_json",
]


def test_one_name_per_setting_for_flag_environment_and_file() -> None:
    assert [s.name for s in SETTINGS if not s.hidden] == SETTING_NAMES
    parser = argparse.ArgumentParser()
    add_agent_arguments(parser)
    help_text = parser.format_help()
    for s in SETTINGS:
        if not s.hidden:
            assert s.flag == "--" + s.name.replace("_", "-") and s.flag in help_text
            assert s.env == "MICROMINE_" + s.name.upper() and s.env in help_text


def test_file_then_environment_then_flag(tmp_path: Path) -> None:
    file = tmp_path / "agent.toml"
    file.write_text(
        'broker = "mqtts://pi-broker:8883"\ntls_ca = "ca.pem"\ncapacity = 8\n'
        'cpu_budget = "none"\nschedule = "22:00-07:00,12:00-13:30"\nwindow = 4\n'
        f'issuer = ["{"ab" * 32}"]\nidle_priority = false\n'
    )
    env = {"MICROMINE_CONFIG": str(file), "MICROMINE_CAPACITY": "16", "XDG_CONFIG_HOME": "/x"}
    config = parse("--window", "3", env=env)
    assert (config.broker_url, config.capacity, config.window) == ("mqtts://pi-broker:8883", 16, 3)
    assert config.tls == TlsFiles(tmp_path / "ca.pem")  # relative to the file
    assert (config.cpu_budget, config.idle_priority) == (None, False)
    assert config.schedule == (TimeWindow(22 * 60, 7 * 60), TimeWindow(12 * 60, 13 * 60 + 30))
    assert config.known_issuers == frozenset({bytes.fromhex("ab" * 32)})
    assert (config.state_dir, config.pause_file) == (
        Path("/x/micromine"),
        Path("/x/micromine/paused"),
    )
    assert (config.nice, config.max_load, config.metrics_port) == (10, None, None)


def test_the_state_directory_holds_the_key_status_pause_and_default_file(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text("heartbeat = 5\n")
    config = parse("--state-dir", str(tmp_path))
    assert config.key_path == tmp_path / "device.key" and config.heartbeat_s == 5.0
    assert (config.status_file, config.pause_file) == (
        tmp_path / "status.json",
        tmp_path / "paused",
    )
    assert parse("--key", "/k/dev.key").state_dir == Path("/k")  # default: the key's directory


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "cpu_budgt = 3\n",
            r"agent.toml:1 \(file\): unknown setting 'cpu_budgt' \(did you mean cpu_budget\?\)",
        ),
        (
            "\n\nwindow = 17\n",
            r"agent.toml:3 \(file\): window: must be an integer in 1..16, got 17",
        ),
        ('capacity = "8"\n', None),  # a string of digits is fine, as in the environment
        ("nice = 2.5\n", r":1 \(file\): nice: must be an integer in 0..19"),
        ("idle_priority = 1.0\n", "idle_priority: must be true or false"),
        ('schedule = "25:00-01:00"\n', "schedule: .*is not a time of day"),
        ("[agent]\nbroker = 1\n", "unknown setting 'agent'"),
        ("broker = \n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_setting_the_line_and_what_is_accepted(
    tmp_path: Path, text: str, message: str | None
) -> None:
    (tmp_path / "agent.toml").write_text(text)
    if message is None:
        parse("--state-dir", str(tmp_path))
        return
    with pytest.raises(ConfigError, match=message):
        parse("--state-dir", str(tmp_path))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MICROMINE_CPU_BUDGET": "0"},
            r"MICROMINE_CPU_BUDGET \(env\): cpu_budget: must be a number in \(0, ",
        ),
        ({"MICROMINE_MAX_HOST_CPU": "101"}, r"max_host_cpu: must be a number in \(0, 100\]"),
        ({"MICROMINE_MAX_LOAD": "-1"}, "max_load: must be a number"),
        ({"MICROMINE_SCHEDULE": "08:00"}, "is not HH:MM-HH:MM"),
        ({"MICROMINE_NICE": "20"}, "nice: must be an integer in 0..19"),
        ({"MICROMINE_METRICS_PORT": "70000"}, "metrics_port: must be an integer in 1..65535"),
        ({"MICROMINE_HOMEASSISTANT": "maybe"}, "homeassistant: must be true or false"),
        (
            {"MICROMINE_CONFIG": "/no/such/agent.toml"},
            "MICROMINE_CONFIG: '/no/such/agent.toml' is not",
        ),
    ],
)
def test_environment_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(env=env)


def test_show_prints_each_origin_and_reads_back_as_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('chain = "pichain"\n')
    key = load_or_create_key(tmp_path / "device.key")
    args = ["--state-dir", str(tmp_path), "--cpu-budget", "none", "--metrics-port", "9100"]
    parser = argparse.ArgumentParser()
    add_agent_arguments(parser)
    config, resolved = load(parser.parse_args(args), {"MICROMINE_NICE": "5"})
    shown = render_toml(resolved)
    assert f'chain = "pichain"  # file: {tmp_path / "agent.toml"}:1' in shown
    assert 'cpu_budget = "none"  # flag: --cpu-budget' in shown
    assert "nice = 5  # env: MICROMINE_NICE" in shown
    assert key.seed.hex() not in shown and f"{tmp_path / 'device.key'}" in shown  # a path only
    assert "capacity = 64  # default" in shown and "\nlie" not in shown
    (tmp_path / "shown.toml").write_text(shown)
    assert parse("--config", str(tmp_path / "shown.toml")) == config


def test_idle_time_settings_defaults_flags_and_environment() -> None:
    config = parse("--key", "/k/device.key")
    assert (config.cpu_budget, config.max_host_cpu, config.max_load, config.schedule) == (
        25.0,
        None,
        None,
        None,
    )
    assert (config.nice, config.idle_priority, config.window) == (10, True, 2)
    assert config.pause_file == Path("/k/paused")
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
    assert from_env.max_load == 0.8 and from_env.pause_file == Path("/run/mm-paused")
    assert from_env.schedule is not None and from_env.schedule[0].contains(23 * 60)
    assert (from_env.nice, from_env.idle_priority, from_env.window) == (19, False, 4)
    from_flags = parse(
        *("--cpu-budget", "20", "--nice", "0", "--idle-priority", "--window", "1"),
        *("--max-host-cpu", "none", "--schedule", "none"),
        env=env,
    )
    assert (from_flags.cpu_budget, from_flags.nice, from_flags.idle_priority) == (20.0, 0, True)
    assert (from_flags.window, from_flags.max_host_cpu, from_flags.schedule) == (1, None, None)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ("--cpu-budget", "0"),
            {},
            r"--cpu-budget \(flag\): cpu_budget: must be a number in \(0, ",
        ),
        (("--cpu-budget", "lots"), {}, "cpu_budget: must be a number .* got 'lots'"),
        (
            ("--max-host-cpu", "101"),
            {},
            r"--max-host-cpu \(flag\): max_host_cpu: must be a number in \(0, 100\]",
        ),
        (("--max-load", "-1"), {}, r"--max-load \(flag\): max_load: must be a number in \(0, "),
        (("--schedule", "9-17"), {}, "--schedule \\(flag\\): schedule: .*'9' is not HH:MM"),
        (("--nice", "20"), {}, r"--nice \(flag\): nice: must be an integer in 0..19"),
        (("--window", "0"), {}, r"--window \(flag\): window: must be an integer in 1..16"),
        (
            (),
            {"MICROMINE_WINDOW": "two"},
            r"MICROMINE_WINDOW \(env\): window: must be an integer in 1..16, got 'two'",
        ),
        ((), {"MICROMINE_IDLE_PRIORITY": "maybe"}, "MICROMINE_IDLE_PRIORITY"),
    ],
)
def test_bad_idle_time_settings_are_named(
    argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(*argv, env=env)
