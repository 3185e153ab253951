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
from micromine.logs import LEVELS
from micromine.mqtt import LoginMode, TlsFiles, link_settings_from, parse_broker_url
from micromine.protocol.errors import DecodeError
from micromine.protocol.fields import check_chain_id
from micromine.protocol.limits import MAX_BATCH_TXS, PUBLIC_KEY_LEN

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
DEFAULT_HOMEASSISTANT_PREFIX = "homeassistant"
DEFAULT_METRICS_HOST = "127.0.0.1"
STATUS_FILE_NAME = "status.json"
DEFAULT_CHAIN = "devnet"
DEFAULT_CAPACITY = 64
DEFAULT_HEARTBEAT_S = 2.0
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
    # --- watching the agent (docs/AGENT_STATUS.md); names as in the shared settings table
    state_dir: Path | None = None  # None: the key's directory
    status_file: Path | None = None  # None: <state_dir>/status.json
    homeassistant: bool = False
    homeassistant_prefix: str = DEFAULT_HOMEASSISTANT_PREFIX
    metrics_port: int | None = None  # None: no Prometheus endpoint
    metrics_host: str = DEFAULT_METRICS_HOST

    def __post_init__(self) -> None:
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
        _check_watch_settings(self)
        if self.known_issuers is not None and any(
            len(k) != PUBLIC_KEY_LEN for k in self.known_issuers
        ):
            raise ConfigError("--issuer keys must be 32-byte public keys (64 hex characters)")

    @property
    def state_directory(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.key_path.parent

    @property
    def status_path(self) -> Path:
        if self.status_file is not None:
            return self.status_file
        return self.state_directory / STATUS_FILE_NAME

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
            **_watch_settings(args, env),
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


# --- watching the agent: status file, Home Assistant, Prometheus -----------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_name(setting: str) -> str:
    return "MICROMINE_" + setting.upper()


def _watch_settings(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """state_dir, status_file, homeassistant(_prefix), metrics_port/host: flag > env."""

    def raw(name: str) -> Any:
        value = getattr(args, name, None)
        if value is not None:
            return value
        return env.get(_env_name(name)) or None

    out: dict[str, Any] = {}
    for name in ("state_dir", "status_file"):
        if (value := raw(name)) is not None:
            out[name] = Path(str(value)).expanduser()
    if (value := raw("homeassistant")) is not None:
        if isinstance(value, bool):
            out["homeassistant"] = value
        elif value.lower() in _TRUE | _FALSE:
            out["homeassistant"] = value.lower() in _TRUE
        else:
            raise ConfigError(f"{_env_name('homeassistant')}: {value!r} is not true or false")
    if (value := raw("homeassistant_prefix")) is not None:
        out["homeassistant_prefix"] = str(value)
    if (value := raw("metrics_port")) is not None:
        out["metrics_port"] = _parse_port(str(value))
    if (value := raw("metrics_host")) is not None:
        out["metrics_host"] = str(value)
    return out


def _parse_port(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--metrics-port: {value!r} is not a port number or none") from None


def _check_watch_settings(config: AgentConfig) -> None:
    prefix = config.homeassistant_prefix
    if (
        not prefix
        or prefix.startswith("/")
        or prefix.endswith("/")
        or any(c in prefix for c in "+#\x00")
    ):
        raise ConfigError(
            f"--homeassistant-prefix: {prefix!r} is not an MQTT topic prefix "
            "(non-empty, no wildcards, no leading or trailing '/')"
        )
    if config.metrics_port is not None and not 1 <= config.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port must be in 1..65535 or none, got {config.metrics_port}")
    if not config.metrics_host:
        raise ConfigError("--metrics-host must not be empty")


def status_path_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Path:
    """Where ``micromine agent status`` looks: the same rules as the agent's own."""
    env = os.environ if environ is None else environ
    watch = _watch_settings(args, env)
    if "status_file" in watch:
        path: Path = watch["status_file"]
        return path
    if "state_dir" in watch:
        state_dir: Path = watch["state_dir"]
        return state_dir / STATUS_FILE_NAME
    key = getattr(args, "key", None) or env.get(ENV_KEY) or default_key_path(env)
    return Path(key).expanduser().parent / STATUS_FILE_NAME
