"""Agent settings: command-line flag, else environment variable, else default.

Environment fallbacks exist because agents usually run under systemd or in a container,
where an ``Environment=`` line is easier to manage than a long command line.  Everything
is validated here, once, so the service never discovers a bad setting mid-run.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micromine.device_agent.core import Lie
from micromine.device_agent.idle import PausePolicy, TimeWindow, parse_schedule
from micromine.logs import LEVELS
from micromine.mqtt import LoginMode, TlsFiles, link_settings_from, parse_broker_url
from micromine.protocol.errors import DecodeError
from micromine.protocol.fields import check_chain_id
from micromine.protocol.limits import MAX_BATCH_TXS, MAX_DEVICE_WINDOW, PUBLIC_KEY_LEN

__all__ = [
    "ENV_ALLOW_LYING",
    "ENV_BROKER",
    "ENV_CHAIN",
    "ENV_KEY",
    "AgentConfig",
    "ConfigError",
    "default_key_path",
]

ENV_BROKER = "MICROMINE_BROKER"
ENV_KEY = "MICROMINE_KEY"
ENV_CHAIN = "MICROMINE_CHAIN"
# --lie is refused unless this is "1": a lying agent is for tests of the ledger's
# defences only, and must never run by accident (it gets banned and loses its rewards).
ENV_ALLOW_LYING = "MICROMINE_ALLOW_LYING"

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_CHAIN = "devnet"
DEFAULT_CAPACITY = 64
DEFAULT_HEARTBEAT_S = 2.0
DEFAULT_CPU_BUDGET = 25.0
DEFAULT_NICE = 10
DEFAULT_WINDOW = 2
MIN_HEARTBEAT_S = 0.1
MAX_HEARTBEAT_S = 300.0
_CLIENT_ID_HEX = 20  # "mmd" + 20 hex = 23 chars: the longest id every 3.1.1 broker must accept


class ConfigError(ValueError):
    """A setting is invalid; the message names the flag/variable and the accepted values."""


def default_key_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/micromine/device.key`` (``~/.config`` when unset), per XDG."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "micromine" / "device.key"


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
    # --- idle-time settings (idle.py; names as in the shared list: flag, MICROMINE_*) ---
    cpu_budget: float | None = DEFAULT_CPU_BUDGET  # % of one core; None: unlimited
    max_host_cpu: float | None = None  # % of all cores busy with others; None: off
    max_load: float | None = None  # 1-minute load average per core; None: off
    schedule: tuple[TimeWindow, ...] | None = None  # local-time windows; None: always
    pause_file: Path | None = None  # None: "paused" next to the key (pause_path)
    nice: int = DEFAULT_NICE
    idle_priority: bool = True  # SCHED_IDLE where the OS allows it
    window: int = DEFAULT_WINDOW  # batches wanted at once from each ledger node

    def __post_init__(self) -> None:
        _check_idle_settings(self)
        try:
            address = parse_broker_url(self.broker_url)
        except ValueError as exc:
            raise ConfigError(f"--broker / {ENV_BROKER}: {exc}") from None
        if self.tls is not None and not address.tls:
            raise ConfigError(f"--tls-* files need a TLS broker URL (mqtts://), not {address.url}")
        if not _is_chain_id(self.chain_id):
            raise ConfigError(
                f"--chain / {ENV_CHAIN}: {self.chain_id!r} is not a chain id "
                "(1..32 characters of a-z, 0-9 and '-', not starting with '-')"
            )
        if not 1 <= self.capacity <= MAX_BATCH_TXS:
            raise ConfigError(f"--capacity must be in 1..{MAX_BATCH_TXS}, got {self.capacity}")
        if not MIN_HEARTBEAT_S <= self.heartbeat_s <= MAX_HEARTBEAT_S:
            raise ConfigError(
                f"--heartbeat must be in {MIN_HEARTBEAT_S}..{MAX_HEARTBEAT_S} s, "
                f"got {self.heartbeat_s}"
            )
        if self.log_level not in LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LEVELS)}")
        if self.known_issuers is not None and any(
            len(k) != PUBLIC_KEY_LEN for k in self.known_issuers
        ):
            raise ConfigError("--issuer keys must be 32-byte public keys (64 hex characters)")

    @property
    def pause_path(self) -> Path:
        """While this file exists the agent is paused (``micromine agent pause``)."""
        return self.pause_file or self.key_path.parent / "paused"

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
        """Build from :func:`~micromine.device_agent.cli.add_agent_arguments` flags."""
        env = os.environ if environ is None else environ

        def pick(name: str, env_name: str | None, default: Any) -> Any:
            value = getattr(args, name, None)
            if value is not None:
                return value
            if env_name is not None and env.get(env_name):
                return env[env_name]
            return default

        issuers = getattr(args, "issuer", None)
        lie = getattr(args, "lie", None)
        if lie is not None and env.get(ENV_ALLOW_LYING) != "1":
            raise ConfigError(
                f"--lie is for testing the ledger's defences only; set {ENV_ALLOW_LYING}=1 "
                "to run a lying agent (it will be banned and lose its rewards)"
            )
        try:
            login, tls = link_settings_from(args, env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            broker_url=str(pick("broker", ENV_BROKER, DEFAULT_BROKER)),
            key_path=Path(pick("key", ENV_KEY, default_key_path(env))).expanduser(),
            chain_id=str(pick("chain", ENV_CHAIN, DEFAULT_CHAIN)),
            capacity=int(pick("capacity", None, DEFAULT_CAPACITY)),
            heartbeat_s=float(pick("heartbeat", None, DEFAULT_HEARTBEAT_S)),
            log_level=str(pick("log_level", None, "info")).lower(),
            log_json=getattr(args, "log_json", None),
            known_issuers=_parse_issuers(issuers) if issuers else None,
            login=login,
            tls=tls,
            lie=Lie(lie) if lie is not None else None,
            **_idle_settings(args, env),
        )


def _is_chain_id(value: str) -> bool:
    try:
        check_chain_id(value)
    except DecodeError:
        return False
    return True


def _parse_issuers(values: list[str]) -> frozenset[bytes]:
    keys = set()
    for value in values:
        try:
            key = bytes.fromhex(value.strip())
        except ValueError:
            raise ConfigError(f"--issuer {value!r} is not hex") from None
        if len(key) != PUBLIC_KEY_LEN:
            raise ConfigError(f"--issuer {value!r} is not a 32-byte public key (64 hex chars)")
        keys.add(key)
    return frozenset(keys)


# --- idle-time settings -----------------------------------------------------------------

_OFF = ("none", "off", "")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _check_idle_settings(config: AgentConfig) -> None:
    cores = os.cpu_count() or 1
    budget = config.cpu_budget
    if budget is not None and not 0 < budget <= 100 * cores:
        raise ConfigError(
            f"--cpu-budget must be above 0 and at most {100 * cores} (% of one core, "
            f"{cores} cores) or 'none', got {budget:g}"
        )
    if config.max_host_cpu is not None and not 0 < config.max_host_cpu <= 100:
        raise ConfigError(
            f"--max-host-cpu must be in (0, 100] or 'none', got {config.max_host_cpu:g}"
        )
    if config.max_load is not None and not config.max_load > 0:
        raise ConfigError(f"--max-load must be above 0 or 'none', got {config.max_load:g}")
    if not 0 <= config.nice <= 19:
        raise ConfigError(f"--nice must be in 0..19, got {config.nice}")
    if not 1 <= config.window <= MAX_DEVICE_WINDOW:
        raise ConfigError(f"--window must be in 1..{MAX_DEVICE_WINDOW}, got {config.window}")


def _idle_settings(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """The idle-time settings from flags, else ``MICROMINE_<NAME>``, else defaults."""

    def raw(name: str) -> str | None:
        value = getattr(args, name, None)
        if value is not None:
            return str(value)
        return env.get("MICROMINE_" + name.upper())

    def number(name: str, default: float | None) -> float | None:
        text = raw(name)
        if text is None:
            return default
        if text.strip().lower() in _OFF:
            return None
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--{_flag(name)}: {text!r} is not a number or 'none'") from None

    def integer(name: str, default: int) -> int:
        text = raw(name)
        try:
            return default if text is None else int(text)
        except ValueError:
            raise ConfigError(f"--{_flag(name)}: {text!r} is not a whole number") from None

    schedule, pause_file, idle = raw("schedule"), raw("pause_file"), raw("idle_priority")
    if idle is not None and idle.strip().lower() not in _TRUE + _FALSE:
        raise ConfigError(f"MICROMINE_IDLE_PRIORITY: {idle!r} is not a yes/no value")
    try:
        windows = (
            None
            if schedule is None or schedule.strip().lower() in _OFF
            else parse_schedule(schedule)
        )
    except ValueError as exc:
        raise ConfigError(f"--schedule: {exc}") from None
    return {
        "cpu_budget": number("cpu_budget", DEFAULT_CPU_BUDGET),
        "max_host_cpu": number("max_host_cpu", None),
        "max_load": number("max_load", None),
        "schedule": windows,
        "pause_file": Path(pause_file).expanduser() if pause_file else None,
        "nice": integer("nice", DEFAULT_NICE),
        "idle_priority": idle is None or idle.strip().lower() in _TRUE,
        "window": integer("window", DEFAULT_WINDOW),
    }


def _flag(name: str) -> str:
    return name.replace("_", "-")
