"""docker-compose.yml's services as local processes, so compose cannot drift from the code.

Docker does not run where micromine is built and tested, so this module reads the
compose file, and only the compose file, and does what Compose would do with it, on
loopback:

* interpolation as Compose does it (``$$``, ``${VAR}``, ``${VAR:-default}``,
  ``${VAR-default}``, ``${VAR:?error}``, ``${VAR:+alt}``, ``$VAR``), after YAML anchors
  and merge keys;
* each service's ``command`` (a list, or a string split like a shell would) and
  ``environment`` (a mapping or a list), run with the test's Python environment's
  ``micromine`` and ``python`` first on PATH (the image's are the same package);
* each volume a directory under the run's root: named volumes shared by every service
  that mounts them, anonymous ones (``- /path``) one per replica; the container path is
  replaced by the directory in the command, the environment and the healthcheck;
* each port a service declares (``ports``, ``expose``) a free loopback port: ``NAME:PORT``
  in any service's strings becomes ``127.0.0.1:FREE``, the bare port in the service's
  own strings becomes ``FREE``, and ``0.0.0.0`` becomes ``127.0.0.1``;
* ``depends_on`` conditions honoured in order: ``service_completed_successfully`` waits
  for exit 0, ``service_healthy`` runs the service's own healthcheck ``test`` until it
  passes, ``service_started`` starts;
* ``deploy.replicas`` (or ``scale``) replicas, unless the caller overrides the count;
  services in a profile only when the profile is active.

What it does not do: images, users (see ``before_start``), restart policies, networks,
resource limits.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from micromine.processes import ManagedProcess, WaitTimeoutError, free_port, wait_until

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[_a-zA-Z][_a-zA-Z0-9]*))"
)
_BRACED = re.compile(r"^(?P<name>[_a-zA-Z][_a-zA-Z0-9]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)


class ComposeError(ValueError):
    """The compose file says something this runner (or Compose) cannot do."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution in one string."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.match(match["braced"])
        if braced is None:
            raise ComposeError(f"invalid interpolation {match[0]!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        value = env.get(name)
        unset_or_empty = value is None or (op is not None and op.startswith(":") and not value)
        if op is None:
            return value or ""
        if op.endswith("-"):
            return interpolate(arg, env) if unset_or_empty else str(value)
        if op.endswith("+"):
            return "" if unset_or_empty else interpolate(arg, env)
        if unset_or_empty:  # ? and :?
            raise ComposeError(f"{name} must be set: {arg}")
        return str(value)

    return _VARIABLE.sub(substitute, text)


def _interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


def load_compose(path: Path = COMPOSE_FILE, env: Mapping[str, str] | None = None) -> Any:
    """The compose file as Compose sees it: YAML (anchors, merge keys), then interpolated."""
    return _interpolated(yaml.safe_load(path.read_text()), {} if env is None else env)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """``environment`` as a mapping, from either of its two forms."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.partition("=") for item in raw)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        raise ComposeError("every service needs a command here (the image's CMD is --help)")
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def container_ports(service: Mapping[str, Any]) -> list[int]:
    """The container side of ``ports`` (short or long syntax) and ``expose``."""
    found = []
    for entry in service.get("ports") or ():
        if isinstance(entry, dict):
            found.append(int(entry["target"]))
        else:
            found.append(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    found += [int(str(entry).split("/")[0]) for entry in service.get("expose") or ()]
    return found


def replicas_of(service: Mapping[str, Any]) -> int:
    deploy = service.get("deploy") or {}
    return int(deploy.get("replicas", service.get("scale", 1)))


def depends_of(service: Mapping[str, Any]) -> dict[str, str]:
    """``depends_on`` as ``{service: condition}``, from either of its two forms."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in raw.items()}


def start_order(services: Mapping[str, Any]) -> list[str]:
    """Services so that each comes after what it depends on (a cycle is an error)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ComposeError(f"depends_on cycle through {name}")
        if name not in services:
            raise ComposeError(f"depends_on names {name!r}, which is not a service")
        visiting.add(name)
        for dependency in depends_of(services[name]):
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    return order


@dataclass
class ComposeProcesses:
    """One ``docker compose up``, as processes under ``root`` (start with :meth:`up`)."""

    root: Path
    compose: Any = None  # the loaded file; default: docker-compose.yml, no variables set
    replicas: dict[str, int] = field(default_factory=dict)  # overrides, e.g. {"agent": 2}
    profiles: frozenset[str] = frozenset()
    timeout: float = 60.0  # for each dependency condition
    # (service, container port) -> loopback port; given ones are kept, the rest found free
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    path: tuple[Path, ...] = ()  # more directories to find programs in (e.g. mosquitto)
    # called with a service's name just before it starts (what `user:` would change, say)
    before_start: Callable[[str], None] | None = None
    processes: dict[str, list[ManagedProcess]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.compose is None:
            self.compose = load_compose()
        self.services: dict[str, Any] = {
            name: spec
            for name, spec in self.compose["services"].items()
            if not spec.get("profiles") or set(spec["profiles"]) & self.profiles
        }
        for name, spec in self.services.items():
            for port in container_ports(spec):
                self.ports.setdefault((name, port), free_port())

    def url(self, service: str, port: int, scheme: str = "mqtt") -> str:
        """Where the host reaches ``service``'s container ``port``."""
        return f"{scheme}://127.0.0.1:{self.ports[service, port]}"

    def volume_dir(self, name: str) -> Path:
        return self.root / "volumes" / name

    def _mounts(self, service: str, replica: int) -> list[tuple[str, Path]]:
        mounts = []
        for entry in self.services[service].get("volumes") or ():
            if isinstance(entry, dict):
                source, target = entry.get("source"), entry["target"]
            else:
                parts = str(entry).split(":")
                source, target = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
            if source is None:  # anonymous: each replica its own
                host = self.root / "anonymous" / f"{service}-{replica}" / target.strip("/")
            elif source.startswith((".", "/")):
                raise ComposeError(f"{service}: bind mount {source} (use a named volume)")
            else:
                host = self.volume_dir(source)
            host.mkdir(parents=True, exist_ok=True)
            mounts.append((target.rstrip("/"), host))
        return sorted(mounts, key=lambda m: -len(m[0]))  # the longest path first

    def localise(self, service: str, replica: int, text: str) -> str:
        """A string of ``service``'s as it must read outside a container."""
        for (owner, port), free in self.ports.items():  # ports first: paths may hold digits
            text = re.sub(rf"\b{re.escape(owner)}:{port}\b", f"127.0.0.1:{free}", text)
            if owner == service:
                text = re.sub(rf"(?<![\d.:]){port}(?!\d)", str(free), text)
        text = text.replace("0.0.0.0", "127.0.0.1")
        for target, host in self._mounts(service, replica):
            text = re.sub(rf"(?<![\w/.-]){re.escape(target)}(?![\w.-])", str(host), text)
        return text

    def _environment(self, service: str, replica: int) -> dict[str, str]:
        env = {
            key: self.localise(service, replica, value)
            for key, value in environment_of(self.services[service]).items()
        }
        # a container has only its own environment: blank what ours has and it does not
        env |= {k: "" for k in os.environ if k.startswith("MICROMINE_") and k not in env}
        directories = [str(Path(sys.executable).parent), *map(str, self.path)]
        env["PATH"] = os.pathsep.join([*directories, os.environ.get("PATH", "")])
        return env

    def start(self, service: str) -> list[ManagedProcess]:
        if self.before_start is not None:
            self.before_start(service)
        spec = self.services[service]
        count = self.replicas.get(service, replicas_of(spec))
        started = []
        for replica in range(1, count + 1):
            argv = [self.localise(service, replica, arg) for arg in command_of(spec)]
            name = service if count == 1 else f"{service}-{replica}"
            log = self.root / "logs" / f"{name}.log"
            started.append(ManagedProcess(name, argv, log, self._environment(service, replica)))
        for process in self.processes.get(service, ()):  # a one shot run again
            process.stop()
        for process in started:
            process.start()
        self.processes[service] = started
        return started

    def healthy(self, service: str) -> bool:
        """The service's own healthcheck, run here (every replica must pass)."""
        test = (self.services[service].get("healthcheck") or {}).get("test")
        if test is None:
            raise ComposeError(f"service_healthy on {service}, which has no healthcheck")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        for replica in range(1, len(self.processes.get(service, ())) + 1):
            argv = [self.localise(service, replica, arg) for arg in test[1:]]
            if test[0] == "CMD-SHELL":
                argv = ["sh", "-c", " ".join(argv)]
            try:
                result = subprocess.run(
                    argv, env={**os.environ, **self._environment(service, replica)},
                    capture_output=True, timeout=30, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                return False
            if result.returncode != 0:
                return False
        return True

    def wait_for(self, service: str, condition: str) -> None:
        """Until ``service`` meets a ``depends_on`` condition; ComposeError if it cannot."""
        processes = self.processes[service]

        def met() -> bool:
            if condition == "service_completed_successfully":
                if any(p.running() for p in processes):
                    return False
                codes = [p.returncode() for p in processes]
                if codes != [0] * len(processes):
                    raise ComposeError(f"{service} exited {codes}:\n{self.tail(service)}")
                return True
            if any(not p.running() for p in processes):
                raise ComposeError(f"{service} exited early:\n{self.tail(service)}")
            return condition != "service_healthy" or self.healthy(service)

        try:
            wait_until(met, self.timeout, interval=0.2, message=f"{service} {condition}")
        except WaitTimeoutError:
            tail = self.tail(service)
            raise ComposeError(
                f"{service}: not {condition} in {self.timeout:g} s\n{tail}"
            ) from None

    def up(self) -> None:
        """Start every service, each once what it depends on is ready."""
        waited: set[tuple[str, str]] = set()
        for service in start_order(self.services):
            for dependency, condition in depends_of(self.services[service]).items():
                if (dependency, condition) not in waited:
                    self.wait_for(dependency, condition)
                    waited.add((dependency, condition))
            self.start(service)

    def run_once(self, service: str) -> int | None:
        """Start a one-shot service again (as a second ``up`` does) and wait for it."""
        self.start(service)
        self.wait_for(service, "service_completed_successfully")
        return self.processes[service][0].returncode()

    def tail(self, service: str) -> str:
        return "\n".join(p.log_tail(30) for p in self.processes.get(service, ()))

    def all_processes(self) -> Iterator[ManagedProcess]:
        for processes in self.processes.values():
            yield from processes

    def down(self) -> None:
        """Stop everything: SIGTERM to all, dependants first, then wait for each."""
        stopping = [p for ps in reversed(list(self.processes.values())) for p in ps]
        for process in stopping:
            process.kill(signal.SIGTERM)
        for process in stopping:
            process.stop()

    def __enter__(self) -> "ComposeProcesses":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.down()
