"""docker-compose.yml and the Dockerfile: valid Compose, the rules we hold them to, and
the very services the compose file declares, run as local processes, committing blocks.

The Compose Specification's JSON schema is not committed (nothing fetched from public
repositories is): the test takes it, once, from the last release of the ``docker-compose``
Python package, which ships it as ``compose/config/compose_spec.json``, and caches it in
pytest's cache directory.  Without a package registry it skips, saying so.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from framework.brokers import require_mosquitto
from framework.compose_runner import (
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

from micromine.common.mqtt import Incoming, LinkConfig, MqttLink
from micromine.processes import free_port, wait_until

ROOT = COMPOSE_FILE.parent
SCHEMA_PACKAGE = "docker-compose==1.29.2"
SCHEMA_MEMBER = "compose/config/compose_spec.json"
LEDGERS = [f"ledger-{i}" for i in range(1, 5)]


@pytest.fixture(scope="session")
def compose_schema(request: pytest.FixtureRequest) -> dict[str, Any]:
    if getattr(request.config, "cache", None) is not None:
        cache = Path(request.config.cache.mkdir("compose-spec"))
    else:  # pytest -p no:cacheprovider
        cache = Path.home() / ".cache" / "micromine-tests" / "compose-spec"
        cache.mkdir(parents=True, exist_ok=True)
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
    assert "/var/lib/micromine" in agent["volumes"]  # anonymous: a key per replica
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


def wait_for_blocks(cluster: ComposeProcesses, url: str, count: int) -> list[dict[str, Any]]:
    """``count`` new blocks with transactions, seen as the issue promises the host sees
    them: an anonymous subscription to ``micromine/+/blocks/json``."""
    link = MqttLink(LinkConfig(
        client_id=f"compose-watch-{time.monotonic_ns() % 10**9}", broker_url=url,
        subscriptions=(("micromine/+/blocks/json", 1),),
    ))  # fmt: skip
    with_txs: list[dict[str, Any]] = []

    def enough() -> bool:
        item = link.get(0.5)
        if isinstance(item, Incoming) and not item.retained:
            block = json.loads(item.payload)
            if block["tx_count"] > 0:
                with_txs.append(block)
        for process in cluster.all_processes():
            if process.name != "init" and not process.running():
                raise AssertionError(f"{process.name} exited:\n{process.log_tail()}")
        return len(with_txs) >= count

    with link:
        assert link.wait_connected(30), f"cannot reach {url}"
        assert wait_until(
            enough,
            120,
            interval=0,
            message=lambda: (
                f"{count} blocks with transactions ({len(with_txs)} so far)\n"
                + cluster.tail("ledger-1")
            ),
        ), f"{len(with_txs)} blocks with transactions\n{cluster.tail('ledger-1')}"
    return with_txs


@pytest.mark.integration
def test_compose_services_as_processes_commit_blocks(tmp_path: Path) -> None:
    with ComposeProcesses(tmp_path) as cluster:
        cluster.up()
        url = cluster.url("broker", 1883)
        keys = {p: p.read_bytes() for p in cluster.root.glob("volumes/*/*.key")}
        assert len(keys) == 4 + 1 + 1 + 24  # ledgers, operator, load client, agent slots
        wait_for_blocks(cluster, url, 3)

        # the load generator restarts (its restart policy) and goes on with its nonces
        loadgen = cluster.volume_dir("loadgen")
        cluster.processes["loadgen"][0].stop()
        first = json.loads((loadgen / "report.json").read_text())
        cluster.start("loadgen")
        wait_for_blocks(cluster, url, 3)
        cluster.processes["loadgen"][0].stop()
        second = json.loads((loadgen / "report.json").read_text())
        assert first["committed"] > 0 and second["committed"] > 0, (first, second)

        # a second `up` runs init again: it must keep every key and the genesis
        genesis = cluster.volume_dir("genesis") / "genesis.json"
        before = genesis.read_bytes()
        assert cluster.run_once("init") == 0
        assert genesis.read_bytes() == before
        assert {p: p.read_bytes() for p in keys} == keys
        agent_keys = list(cluster.root.glob("anonymous/agent-*/var/lib/micromine/device.key"))
        assert len(agent_keys) == 3  # one key per replica, each in its own volume
        assert not list(cluster.volume_dir("agent-keys").glob("*.taken"))  # none taken


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as ``docker compose --env-file`` reads them."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    pairs = (line.partition("=") for line in lines if line and not line.startswith("#"))
    return {key: value for key, _, value in pairs}


@pytest.mark.integration
@pytest.mark.mosquitto
def test_compose_mosquitto_profile_as_processes_commits_blocks(tmp_path: Path) -> None:
    mosquitto = Path(require_mosquitto())
    if shutil.which("mosquitto_pub") is None:  # the service's healthcheck
        pytest.skip("mosquitto_pub not found (Debian: apt install mosquitto-clients)")
    env = read_env_file(ROOT / "mosquitto.env")
    port = free_port()  # Mosquitto's listener is in the configuration init writes
    env |= {"MOSQUITTO_PORT": str(port), "MICROMINE_BROKER_URL": f"mqtt://mosquitto:{port}"}
    compose = load_compose(env=env)
    profiles = frozenset(env["COMPOSE_PROFILES"].split(","))

    def as_its_files_owner(service: str) -> None:
        # Compose runs Mosquitto as the uid that owns its configuration (`user:`); a
        # root Mosquitto would drop to user mosquitto, who cannot read the test's files.
        conf = cluster.volume_dir("mosquitto-config") / "mosquitto.conf"
        if service == "mosquitto" and os.geteuid() == 0:
            conf.write_text(conf.read_text() + "user root\n")

    with ComposeProcesses(tmp_path, compose, profiles=profiles,
                          ports={("mosquitto", port): port},
                          path=(mosquitto.parent,),
                          before_start=as_its_files_owner) as cluster:  # fmt: skip
        cluster.up()
        wait_for_blocks(cluster, cluster.url("mosquitto", port), 2)
        taken = list(cluster.volume_dir("agent-keys").glob("agent-*.key.taken"))
        assert len(taken) == 3  # each agent took its own enrolled key
