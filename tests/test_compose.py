"""docker-compose.yml and the Dockerfile: valid Compose, the rules we hold them to, and
the very services the compose file declares, run as local processes, committing blocks.

The Compose Specification's JSON schema is not committed (nothing fetched from public
repositories is): the test takes it, once, from the last release of the ``docker-compose``
Python package, which ships it as ``compose/config/compose_spec.json``, and caches it in
pytest's cache directory.  Without a package registry it skips, saying so.
"""

import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from compose_runner import (
    COMPOSE_FILE,
    ComposeError,
    ComposeProcesses,
    command_of,
    depends_of,
    environment_of,
    interpolate,
    load_compose,
    start_order,
)

from micromine.mqtt import Incoming, LinkConfig, MqttLink
from micromine.processes import wait_until

ROOT = COMPOSE_FILE.parent
SCHEMA_PACKAGE = "docker-compose==1.29.2"
SCHEMA_MEMBER = "compose/config/compose_spec.json"
LEDGERS = [f"ledger-{i}" for i in range(1, 5)]


@pytest.fixture(scope="session")
def compose_schema(request: pytest.FixtureRequest) -> dict[str, Any]:
    cache = Path(request.config.cache.mkdir("compose-spec"))
    schema_path = cache / "compose_spec.json"
    if not schema_path.exists():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--disable-pip-version-check", "--dest", str(cache), SCHEMA_PACKAGE],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        wheels = sorted(cache.glob("docker_compose-*.whl"))
        if result.returncode != 0 or not wheels:
            why = result.stderr.strip()[-300:]
            pytest.skip(f"cannot fetch the Compose schema ({SCHEMA_PACKAGE}): {why}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            schema_path.write_bytes(wheel.read(SCHEMA_MEMBER))
    schema: dict[str, Any] = json.loads(schema_path.read_text())
    return schema


@pytest.fixture(scope="module")
def compose() -> Any:
    return load_compose()


def test_compose_file_follows_the_compose_specification(
    compose: Any, compose_schema: dict[str, Any]
) -> None:
    validator = jsonschema.Draft201909Validator(compose_schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # and the check bites: a misspelt key is refused
    broken = json.loads(json.dumps(compose))
    broken["services"]["agent"]["restrat"] = "always"
    assert not validator.is_valid(broken)


def test_every_service_restarts_and_reports_its_health(compose: Any) -> None:
    services = compose["services"]
    assert set(services) >= {"init", "broker", *LEDGERS, "agent", "loadgen", "mosquitto"}
    assert services["init"]["restart"] == "no"  # a one shot
    for name, service in services.items():
        if name != "init":
            assert service["restart"] == "unless-stopped", name
        if name not in ("init", "loadgen"):  # a one shot; a client nothing waits for
            assert service["healthcheck"]["test"][0] == "CMD", name


def test_ledgers_have_their_own_volumes_and_wait_for_keys_and_broker(compose: Any) -> None:
    services = compose["services"]
    own = set()
    for name in LEDGERS:
        ledger = services[name]
        volumes = {v.split(":")[1]: v.split(":")[0] for v in ledger["volumes"]}
        assert volumes["/var/lib/micromine"] == name
        own.add(volumes["/var/lib/micromine"])
        assert environment_of(ledger)["MICROMINE_LEDGER_KEY"].startswith("/var/lib/micromine/")
        assert depends_of(ledger) == {
            "init": "service_completed_successfully",
            "broker": "service_healthy",
        }
        assert f"{name}:/srv/{name}" in services["init"]["volumes"]
        assert f"/srv/{name}/ledger.key" in command_of(services["init"])[-1]
    assert len(own) == 4
    assert set(LEDGERS) <= set(compose["volumes"])


def test_agents_scale_and_run_at_full_speed(compose: Any) -> None:
    agent = compose["services"]["agent"]
    assert "container_name" not in agent and "ports" not in agent  # --scale agent=20
    assert agent["volumes"] == ["/var/lib/micromine"]  # anonymous: a key per replica
    assert environment_of(agent)["MICROMINE_KEY"].startswith("/var/lib/micromine/")
    env = environment_of(agent)
    assert env["MICROMINE_CPU_BUDGET"] == "none"
    assert env["MICROMINE_NICE"] == "0"
    assert env["MICROMINE_IDLE_PRIORITY"] == "false"
    assert "--enrollment open" in command_of(compose["services"]["init"])[-1]


def test_host_ports_are_loopback_only(compose: Any) -> None:
    published = [
        (name, port) for name, s in compose["services"].items() for port in s.get("ports", ())
    ]
    assert {name for name, _ in published} == {"broker", "mosquitto"}
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), (name, port)


def test_mosquitto_profile_uses_the_generated_configuration(compose: Any) -> None:
    mosquitto = compose["services"]["mosquitto"]
    assert mosquitto["profiles"] == ["mosquitto"]
    assert mosquitto["image"].startswith("eclipse-mosquitto:2")
    assert command_of(mosquitto) == ["mosquitto", "-c", "/srv/mosquitto/mosquitto.conf"]
    assert "mosquitto-config:/srv/mosquitto:ro" in mosquitto["volumes"]
    script = command_of(compose["services"]["init"])[-1]
    assert "micromine broker mosquitto-config" in script and "--out /srv/mosquitto" in script
    assert "mosquitto" not in start_order(ComposeProcesses(Path("."), compose).services)


def test_image_is_slim_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    assert len(stages) == 2  # build, then runtime
    runtime = stages[-1]
    assert runtime.startswith("python:3.11-slim")
    users = re.findall(r"^USER (\S+)", runtime, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert "useradd --system --uid 10001" in runtime  # the uid the mosquitto service uses
    assert not re.search(r"apt-get|gcc|build-essential", runtime)
    assert all("--no-cache-dir" in line for line in re.findall(r"pip install.*", runtime))
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*")] == "*"  # everything out, then the sources back in


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$SET ${SET} $SET", env) == "$SET x x"
    assert interpolate("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d d  d"
    assert interpolate("${SET:+alt}${EMPTY:+alt}", env) == "alt"
    with pytest.raises(ComposeError, match="UNSET must be set: why"):
        interpolate("${UNSET:?why}", env)
    with pytest.raises(ComposeError, match="invalid interpolation"):
        interpolate("${1BAD}", env)


def block_watcher(url: str) -> MqttLink:
    """What the issue promises the host: anonymous ``micromine/+/blocks/json``."""
    return MqttLink(LinkConfig(
        client_id=f"compose-watch-{time.monotonic_ns() % 10**9}", broker_url=url,
        subscriptions=(("micromine/+/blocks/json", 1),),
    ))  # fmt: skip


@pytest.mark.integration
def test_compose_services_as_processes_commit_blocks(tmp_path: Path) -> None:
    with ComposeProcesses(tmp_path, replicas={"agent": 3}) as cluster:
        cluster.up()
        genesis = cluster.volume_dir("genesis") / "genesis.json"
        keys = {p: p.read_bytes() for p in cluster.root.glob("volumes/*/*.key")}
        assert len(keys) == 5  # four ledger nodes and the operator
        with block_watcher(cluster.url("broker", 1883)) as watcher:
            assert watcher.wait_connected(30)
            with_txs: list[dict[str, Any]] = []

            def three_blocks_with_transactions() -> bool:
                item = watcher.get(0.5)
                if isinstance(item, Incoming) and not item.retained:
                    block = json.loads(item.payload)
                    if block["tx_count"] > 0:
                        with_txs.append(block)
                crashed = [p.name for p in cluster.all_processes()
                           if p.name != "init" and not p.running()]  # fmt: skip
                assert not crashed, cluster.tail(crashed[0].split("-")[0])
                return len(with_txs) >= 3

            assert wait_until(three_blocks_with_transactions, timeout=120, interval=0), (
                f"blocks with transactions: {len(with_txs)}\n{cluster.tail('ledger-1')}"
            )
        # a second `up` runs init again: it must keep the keys and the genesis
        before = genesis.read_bytes()
        assert cluster.run_once("init") == 0
        assert genesis.read_bytes() == before
        assert {p: p.read_bytes() for p in keys} == keys
        agent_keys = list(cluster.root.glob("anonymous/agent-*/var/lib/micromine/device.key"))
        assert len(agent_keys) == 3  # one key per replica, each in its own volume
