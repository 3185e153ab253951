"""Installing the agent alone: its systemd unit, and a package set without the broker.

The unit is checked by systemd's own parser (``systemd-analyze verify``) where it is
installed; the package set by pip's resolver against the package index (a dry run: nothing
is installed), which is why that test is marked integration and skips if the index is
unreachable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from framework.brokers import EmbeddedBroker

from micromine.common.keyfile import load_key
from micromine.common.mqtt import Incoming, LinkConfig, MqttLink
from micromine.device_agent.settings import SETTINGS
from micromine.device_agent.systemd import ServiceOptions, render_starter_config, render_unit
from micromine.processes import wait_until
from micromine.protocol import topics
from micromine.protocol.topics import Channel

REPO = Path(__file__).resolve().parent.parent
# Shadows the broker's packages in a child process: `import amqtt` fails there.
BLOCK_BROKER = """
import sys
class NoBroker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("amqtt", "websockets"):
            raise ImportError(f"{name} is blocked: the agent must not need it")
sys.meta_path.insert(0, NoBroker())
from micromine.cli import main
sys.exit(main(sys.argv[1:]))
"""


def micromine(*argv: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_BROKER, *argv],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def unit_keys(unit: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def test_unit_has_restart_user_state_priority_and_hardening() -> None:
    keys = unit_keys(render_unit(ServiceOptions(Path("/usr/local/bin/micromine"))))
    assert keys["ExecStart"] == ["/usr/local/bin/micromine agent"]
    assert (keys["Restart"], keys["DynamicUser"]) == (["on-failure"], ["yes"])
    assert keys["StateDirectory"] == ["micromine"] and "RestartSec" in keys
    assert "MICROMINE_CONFIG=/etc/micromine/agent.toml" in keys["Environment"]
    assert "MICROMINE_STATE_DIR=/var/lib/micromine" in keys["Environment"]
    for key, value in [("Nice", "10"), ("CPUSchedulingPolicy", "idle"),
                       ("IOSchedulingClass", "idle"), ("NoNewPrivileges", "yes"),
                       ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes")]:  # fmt: skip
        assert keys[key] == [value], key
    assert "MemoryMax" in keys
    named = unit_keys(render_unit(ServiceOptions(Path("/opt/m m/micromine"), user="micromine")))
    assert named["User"] == ["micromine"] and "DynamicUser" not in named
    assert named["ExecStart"] == ['"/opt/m m/micromine" agent']


def test_starter_config_shows_every_default_and_the_agent_accepts_it(tmp_path: Path) -> None:
    text = render_starter_config()
    assert tomllib.loads(text) == {}  # every setting is shown, commented out
    shown_defaults = dict(re.findall(r"^# (\w+) = (.+?)$", text, flags=re.MULTILINE))
    for s in SETTINGS:
        if not s.hidden and s.name != "state_dir":
            shown = tomllib.loads(f"v = {shown_defaults[s.name]}")["v"]
            if "# e.g." not in shown_defaults[s.name]:  # the others show an example
                assert s.parse(shown) == s.default, s.name
    (tmp_path / "agent.toml").write_text(text)
    result = micromine("agent", "config", "--config", str(tmp_path / "agent.toml"),
                       tmp_path=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"# file: {tmp_path / 'agent.toml'}" in result.stdout


def test_agent_commands_work_without_the_broker_packages(tmp_path: Path) -> None:
    """``micromine agent --help``, ``config --show`` and the unit need no amqtt."""
    assert micromine("agent", "--help", tmp_path=tmp_path).returncode == 0
    shown = micromine("agent", "config", "--show", tmp_path=tmp_path)
    assert shown.returncode == 0 and "cpu_budget = 25.0  # default" in shown.stdout, shown.stderr
    unit = micromine("agent", "install-service", "--dry-run", "--executable", "/bin/true",
                     tmp_path=tmp_path)  # fmt: skip
    assert unit.returncode == 0 and "ExecStart=/bin/true agent" in unit.stdout, unit.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_the_dry_run_unit(tmp_path: Path) -> None:
    # ExecStart must name an existing executable for verify to pass: use this Python's.
    unit = micromine("agent", "install-service", "--dry-run", "--executable", sys.executable,
                     tmp_path=tmp_path)  # fmt: skip
    assert unit.returncode == 0, unit.stderr
    path = tmp_path / "micromine-agent.service"
    path.write_text(unit.stdout)
    verify = subprocess.run(["systemd-analyze", "verify", str(path)], check=False,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    # verify returns 0 even for unknown keys (it only warns), so its output must be empty too.
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr + verify.stdout


def test_install_without_dry_run_explains_what_is_missing(tmp_path: Path) -> None:
    result = micromine("agent", "install-service", "--executable", "/bin/true",
                       "--unit", str(tmp_path / "u.service"), tmp_path=tmp_path)  # fmt: skip
    if result.returncode == 0:  # root on a machine running systemd: it really installed
        assert (tmp_path / "u.service").exists()
        pytest.skip("running as root under systemd; the unit was written to tmp_path")
    assert "needs root" in result.stderr or "systemd is not running" in result.stderr


@pytest.mark.integration
def test_installing_the_agent_package_brings_no_broker(tmp_path: Path) -> None:
    """A dry run of `pip install <repo>` (no extras), as into a fresh venv: no amqtt."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
         "--quiet", "--report", str(report), str(REPO)],
        check=False, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    if result.returncode != 0:
        unreachable = re.search(
            r"NewConnectionError|Max retries|Temporary failure in name resolution|"
            r"No matching distribution found", result.stderr
        )  # fmt: skip
        if unreachable:
            pytest.skip(f"package index unreachable: {unreachable[0]}")
        pytest.fail(result.stderr)
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"micromine", "paho-mqtt", "pynacl", "cbor2", "structlog"} <= names
    assert not names & {"amqtt", "websockets", "transitions", "passlib"}, names


@pytest.mark.integration
def test_an_agent_configured_by_its_state_directory_file_connects(
    embedded_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """As under the unit: MICROMINE_STATE_DIR only; broker and chain from agent.toml there."""
    (tmp_path / "agent.toml").write_text(
        f'broker = "{embedded_broker.url}"\nchain = "pichain"\ncpu_budget = "none"\n'
        "nice = 0\nidle_priority = false\n"
    )
    devices = ((topics.all_devices("pichain"), 1),)
    observer = MqttLink(LinkConfig("observer", embedded_broker.url, subscriptions=devices))
    observer.start()
    assert observer.wait_connected(30)
    env = {**os.environ, "MICROMINE_STATE_DIR": str(tmp_path), "MICROMINE_CONFIG": ""}
    with (tmp_path / "agent.log").open("wb") as log:
        agent = subprocess.Popen([sys.executable, "-m", "micromine.device_agent"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    try:
        hellos: list[Incoming] = []

        def hello_arrived() -> bool:
            item = observer.get(0.1)
            if isinstance(item, Incoming) and item.topic.endswith("/hello"):
                hellos.append(item)
            return bool(hellos) or agent.poll() is not None

        assert wait_until(hello_arrived, 60), "no hello"
        assert agent.poll() is None, (tmp_path / "agent.log").read_text()
        device = load_key(tmp_path / "device.key").public
        assert hellos[0].topic == topics.device_topic("pichain", device, Channel.HELLO)
    finally:
        agent.terminate()
        agent.wait(20)
        observer.close()
