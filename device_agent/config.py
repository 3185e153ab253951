"""The agent's configuration: one frozen object built from the settings table.

:mod:`~micromine.device_agent.settings` says what each setting is called and accepts, and
applies flag > environment > TOML file > default; this module adds the defaults that
depend on other settings (the state directory and the files in it), the checks that
involve two settings, and :func:`render_toml`, the effective configuration as a file
(``micromine agent config --show``).  No setting can hold a secret: the device key and
the TLS key are files and only their paths are shown, and broker URLs with credentials
are refused.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micromine.common.mqtt import LoginMode, TlsFiles, parse_broker_url
from micromine.device_agent.core import Lie
from micromine.device_agent.idle import PausePolicy, TimeWindow
from micromine.device_agent.settings import (
    BY_NAME,
    CONFIG_ENV,
    SETTINGS,
    ConfigError,
    Origin,
    Resolved,
    Source,
    resolve,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_ALLOW_LYING",
    "ENV_BROKER",
    "ENV_CHAIN",
    "ENV_KEY",
    "AgentConfig",
    "ConfigError",
    "default_key_path",
    "default_state_dir",
    "load",
    "render_toml",
    "toml_value",
]

ENV_BROKER = BY_NAME["broker"].env
ENV_KEY = BY_NAME["key"].env
ENV_CHAIN = BY_NAME["chain"].env
# --lie is refused unless this is "1": a lying agent is for tests of the ledger's
# defences only, and must never run by accident (it gets banned and loses its rewards).
ENV_ALLOW_LYING = "MICROMINE_ALLOW_LYING"
KEY_FILE_NAME = "device.key"

DEFAULT_BROKER: str = BY_NAME["broker"].default
DEFAULT_CHAIN: str = BY_NAME["chain"].default
DEFAULT_CAPACITY: int = BY_NAME["capacity"].default
DEFAULT_HEARTBEAT_S: float = BY_NAME["heartbeat"].default
# A path field left at DERIVED is filled in from the others on construction.
DERIVED = Path()
_CLIENT_ID_HEX = 20  # "mmd" + 20 hex = 23 chars: the longest id every 3.1.1 broker must accept


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/micromine`` (``~/.config`` when unset), per XDG."""
    try:
        base = environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    except RuntimeError:  # no $HOME and no home in the user database (a service's user)
        raise ConfigError(
            f"no home directory to keep the key in: set state_dir ({BY_NAME['state_dir'].flag} "
            f"or {BY_NAME['state_dir'].env})"
        ) from None
    return Path(base) / "micromine"


def default_key_path(environ: Mapping[str, str]) -> Path:
    return default_state_dir(environ) / KEY_FILE_NAME


@dataclass(frozen=True, slots=True)
class AgentConfig:
    broker_url: str
    key_path: Path
    chain_id: str = DEFAULT_CHAIN
    capacity: int = DEFAULT_CAPACITY
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    log_level: str = "info"
    log_json: bool | None = None  # None: JSON unless stderr is a terminal
    # When set, work from any other ledger node is dropped unjudged: without it, anyone who
    # can publish on the broker can make the device burn CPU on signature checks.
    known_issuers: frozenset[bytes] | None = None
    login: LoginMode = LoginMode.TOKEN
    tls: TlsFiles | None = None  # CA, client certificate and key for mqtts:// / wss://
    lie: Lie | None = None  # FOR TESTS ONLY (core.Lie); from_args demands ENV_ALLOW_LYING
    # Where the agent keeps its files; DERIVED: the key's directory.
    state_dir: Path = DERIVED
    window: int = 2
    # Staying out of the owner's way (None: no limit / always allowed).
    cpu_budget: float | None = 25.0
    max_host_cpu: float | None = None
    max_load: float | None = None
    schedule: tuple[TimeWindow, ...] | None = None  # None: always
    pause_file: Path = DERIVED  # <state_dir>/paused
    nice: int = 10
    idle_priority: bool = True
    # Reporting.
    status_file: Path = DERIVED  # <state_dir>/status.json
    homeassistant: bool = False
    homeassistant_prefix: str = "homeassistant"
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.state_dir == DERIVED:
            object.__setattr__(self, "state_dir", self.key_path.parent)
        for name, file_name in (("pause_file", "paused"), ("status_file", "status.json")):
            if getattr(self, name) == DERIVED:
                object.__setattr__(self, name, self.state_dir / file_name)
        # The same checks as from the command line or a file, for objects built in code.
        for name, value in (("broker", self.broker_url), ("chain", self.chain_id),
                            ("capacity", self.capacity), ("heartbeat", self.heartbeat_s),
                            ("log_level", self.log_level), ("window", self.window),
                            ("cpu_budget", self.cpu_budget), ("nice", self.nice),
                            ("max_host_cpu", self.max_host_cpu), ("max_load", self.max_load),
                            ("metrics_port", self.metrics_port),
                            ("homeassistant_prefix", self.homeassistant_prefix),
                            ("metrics_host", self.metrics_host)):  # fmt: skip
            if value is not None:
                try:
                    BY_NAME[name].parse(value if name != "log_level" else str(value))
                except ValueError as exc:
                    raise ConfigError(f"{name}: {exc}") from None
        if self.known_issuers is not None:
            for key in self.known_issuers:
                BY_NAME["issuer"].parse(key.hex())
        if self.tls is not None and not parse_broker_url(self.broker_url).tls:
            raise ConfigError(
                f"tls_ca/tls_cert/tls_key need a TLS broker URL (mqtts:// or wss://), "
                f"not {self.broker_url}"
            )

    @property
    def pause_policy(self) -> PausePolicy:
        return PausePolicy(self.max_host_cpu, self.max_load, self.schedule)

    @property
    def heartbeat_ms(self) -> int:
        return round(self.heartbeat_s * 1000)

    def client_id(self, device: bytes) -> str:
        """Stable per device, so a restarted agent takes over its own stale session."""
        return "mmd" + device.hex()[:_CLIENT_ID_HEX]

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> AgentConfig:
        """Build from the flags of :func:`~micromine.device_agent.cli.add_agent_arguments`."""
        return load(args, environ)[0]


def load(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[AgentConfig, Resolved]:
    """The configuration and, for ``config --show``, every value's origin."""
    env = os.environ if environ is None else environ
    flags = {name: getattr(args, name, None) for name in (*BY_NAME, "config")}
    resolved = _with_derived_paths(resolve(flags, env, lambda: default_state_dir(env)), env)
    v = resolved.values
    if v["lie"] is not None and env.get(ENV_ALLOW_LYING) != "1":
        raise ConfigError(
            f"--lie is for testing the ledger's defences only; set {ENV_ALLOW_LYING}=1 "
            "to run a lying agent (it will be banned and lose its rewards)"
        )
    tls_paths = [v["tls_ca"], v["tls_cert"], v["tls_key"]]
    try:
        tls = TlsFiles(*tls_paths) if any(tls_paths) else None
        tls_url_ok = tls is None or parse_broker_url(v["broker"]).tls
    except ValueError as exc:
        raise ConfigError(f"{resolved.origins['tls_key'].describe()}: tls_key: {exc}") from None
    if not tls_url_ok:
        named = next(n for n in ("tls_ca", "tls_cert", "tls_key") if v[n] is not None)
        raise ConfigError(
            f"{resolved.origins[named].describe()}: {named} needs a TLS broker URL "
            f"(mqtts:// or wss://), but broker is {v['broker']} "
            f"({resolved.origins['broker'].describe()})"
        )
    config = AgentConfig(
        broker_url=v["broker"],
        key_path=v["key"],
        chain_id=v["chain"],
        capacity=v["capacity"],
        heartbeat_s=v["heartbeat"],
        log_level=v["log_level"],
        log_json=v["log_json"],
        known_issuers=v["issuer"],
        login=LoginMode(v["login"]),
        tls=tls,
        lie=Lie(v["lie"]) if v["lie"] is not None else None,
        state_dir=v["state_dir"],
        window=v["window"],
        cpu_budget=v["cpu_budget"],
        max_host_cpu=v["max_host_cpu"],
        max_load=v["max_load"],
        schedule=v["schedule"],
        pause_file=v["pause_file"],
        nice=v["nice"],
        idle_priority=v["idle_priority"],
        status_file=v["status_file"],
        homeassistant=v["homeassistant"],
        homeassistant_prefix=v["homeassistant_prefix"],
        metrics_port=v["metrics_port"],
        metrics_host=v["metrics_host"],
    )
    return config, resolved


def _with_derived_paths(resolved: Resolved, environ: Mapping[str, str]) -> Resolved:
    """state_dir defaults to the key's directory; the key and the files to state_dir."""
    values, origins = dict(resolved.values), dict(resolved.origins)
    derived = Origin(Source.DEFAULT, "derived")
    if values["state_dir"] is None:
        given_key = values["key"]
        values["state_dir"] = given_key.parent if given_key else default_state_dir(environ)
        origins["state_dir"] = derived if given_key else origins["state_dir"]
    state_dir: Path = values["state_dir"]
    for name, file_name in (("key", KEY_FILE_NAME), ("pause_file", "paused"),
                            ("status_file", "status.json")):  # fmt: skip
        if values[name] is None:
            values[name], origins[name] = state_dir / file_name, derived
    return Resolved(values, origins, resolved.file)


# --- config --show ---------------------------------------------------------------------


def render_toml(resolved: Resolved) -> str:
    """The effective settings as an agent.toml, each value's origin in a comment."""
    lines = ["# micromine agent: effective configuration (micromine agent config --show)"]
    lines.append(f"# file: {resolved.file or 'none'}")
    for s in SETTINGS:
        value, origin = resolved.values[s.name], resolved.origins[s.name]
        if s.hidden and origin.source is Source.DEFAULT:
            continue
        where = origin.source.value + (f": {origin.where}" if origin.where else "")
        if value is None and origin.source is Source.DEFAULT:
            lines.append(f"# {s.name}: not set  # {s.help}")
            continue
        lines.append(f"{s.name} = {toml_value(s.name, value)}  # {where}")
    return "\n".join(lines) + "\n"


def toml_value(name: str, value: Any) -> str:
    """``value`` of setting ``name`` as TOML; off (None) is the string "none"."""
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, frozenset):
        return "[" + ", ".join(f'"{key.hex()}"' for key in sorted(value)) + "]"
    if name == "schedule":
        text = ",".join(f"{_clock(w.start)}-{_clock(w.end)}" for w in value)
        return f'"{text}"'
    return _toml_string(str(value))


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'
