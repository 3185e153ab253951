"""The agent's settings as one table, and where each value comes from.

Each :class:`Setting` has ONE name, from which the three ways to give it are derived: the
TOML key ``cpu_budget``, the flag ``--cpu-budget`` and the environment variable
``MICROMINE_CPU_BUDGET``.  Precedence: flag > environment > file > default.  A value is
checked by the setting's parser wherever it comes from, and a bad one is reported once,
naming the setting, where the value came from (flag, variable, or file and line) and what
is accepted: a service must not discover a bad setting mid-run.

The file is TOML (stdlib ``tomllib``), flat: ``key = value`` lines, no tables.  It is the
one given by ``--config FILE`` / ``MICROMINE_CONFIG``, else ``<state_dir>/agent.toml`` if
that exists (``state_dir`` from flag or environment, or its default: the file cannot move
itself).  Relative paths in the file are relative to the file's directory.  A setting
that can be off takes the string ``"none"`` (TOML has no null), or is left out.  A list
(``issuer``) is a repeated flag, a TOML array, or comma-separated in the environment.
The values' parsers are in :mod:`~micromine.device_agent.parsers`.

This module knows nothing of argparse beyond building the flags, and nothing of what the
settings mean beyond their ranges: :mod:`micromine.device_agent.config` turns the
resolved values into an :class:`~micromine.device_agent.config.AgentConfig`.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micromine.common.logs import LEVELS
from micromine.common.mqtt import LoginMode
from micromine.device_agent.core import Lie
from micromine.device_agent.parsers import (
    Parser,
    boolean,
    broker_url,
    chain_id,
    cpu_budget,
    integer,
    nonempty,
    one_of,
    optional,
    path,
    public_key,
    real,
    schedule,
    topic_prefix,
)
from micromine.protocol.limits import MAX_BATCH_TXS

__all__ = [
    "CONFIG_ENV",
    "CONFIG_FILE_NAME",
    "ENV_PREFIX",
    "SETTINGS",
    "ConfigError",
    "Origin",
    "Resolved",
    "Setting",
    "Source",
    "add_setting_flags",
    "resolve",
]

ENV_PREFIX = "MICROMINE_"
CONFIG_ENV = "MICROMINE_CONFIG"
CONFIG_FILE_NAME = "agent.toml"
MIN_HEARTBEAT_S = 0.1
MAX_HEARTBEAT_S = 300.0
MAX_WINDOW = 16
MAX_NICE = 19


class ConfigError(ValueError):
    """A setting is invalid; the message names it, its source and the accepted values."""


class Source(enum.Enum):
    DEFAULT = "default"
    FILE = "file"
    ENV = "env"
    FLAG = "flag"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value came from: ``where`` is the flag, the variable, or ``file:line``."""

    source: Source
    where: str = ""

    def describe(self) -> str:
        return self.source.value if not self.where else f"{self.where} ({self.source.value})"


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    parse: Parser
    default: Any  # None also means "off"; derived defaults are filled in by config.py
    help: str
    metavar: str = "VALUE"
    boolean: bool = False  # --name / --no-name
    repeated: bool = False  # flag repeated, TOML list, comma-separated in the environment
    hidden: bool = False  # not in --help, not in `config --show` unless set

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


# --- the table ---------------------------------------------------------------------------

_S = Setting
SETTINGS: tuple[Setting, ...] = (
    _S("broker", broker_url, "mqtt://127.0.0.1:1883", "mqtt[s]://HOST[:PORT] or "
       "ws[s]://HOST[:PORT][/PATH]", "URL"),
    _S("chain", chain_id, "devnet", "chain id", "ID"),
    _S("state_dir", path, None, "directory for the key, status and pause files "
       "(default: the key's directory, else $XDG_CONFIG_HOME/micromine)", "DIR"),
    _S("key", path, None, "device key file, created (mode 0600) if missing "
       "(default <state_dir>/device.key)", "FILE"),
    _S("capacity", integer(1, MAX_BATCH_TXS), 64, "most transactions wanted per batch", "N"),
    _S("window", integer(1, MAX_WINDOW), 2, "batches wanted at once from each ledger node",
       "N"),
    _S("heartbeat", real(MIN_HEARTBEAT_S, MAX_HEARTBEAT_S, unit=" s"), 2.0,
       "seconds between heartbeats", "S"),
    _S("issuer", public_key, None, "accept work only from this ledger node key, hex "
       "(repeatable; default: any)", "HEX", repeated=True),
    _S("login", one_of(*(m.value for m in LoginMode)), LoginMode.TOKEN.value,
       "token = a fresh signed token per connection (embedded broker), password = the "
       "key's static password (Mosquitto), none = anonymous", "MODE"),
    _S("tls_ca", path, None, "PEM CA to verify the broker by (mqtts://)", "FILE"),
    _S("tls_cert", path, None, "PEM client certificate (mqtts://)", "FILE"),
    _S("tls_key", path, None, "PEM key of --tls-cert (mqtts://)", "FILE"),
    _S("cpu_budget", optional(cpu_budget), 25.0, "percent of ONE core the agent may use, "
       "averaged over a minute; none = unlimited", "PCT"),
    _S("max_host_cpu", optional(real(0, 100, low_open=True, unit=" %")), None,
       "pause while other processes keep more than this percent of all cores busy", "PCT"),
    _S("max_load", optional(real(0, 1e6, low_open=True)), None,
       "pause while the 1-minute load average per core is above this", "LOAD"),
    _S("schedule", optional(schedule), None, "local-time windows in which work is allowed, "
       "HH:MM-HH:MM[,...] (default: always)", "WINDOWS"),
    _S("pause_file", path, None, "paused while this file exists (default <state_dir>/paused)",
       "FILE"),
    _S("nice", integer(0, MAX_NICE), 10, "scheduling niceness, 0..19", "N"),
    _S("idle_priority", boolean, True, "SCHED_IDLE scheduling where available",
       boolean=True),
    _S("status_file", path, None, "status JSON (default <state_dir>/status.json)", "FILE"),
    _S("homeassistant", boolean, False, "publish Home Assistant MQTT discovery",
       boolean=True),
    _S("homeassistant_prefix", topic_prefix, "homeassistant", "Home Assistant discovery prefix",
       "PREFIX"),
    _S("metrics_port", optional(integer(1, 65535)), None, "serve Prometheus metrics on "
       "this port (default: off)", "PORT"),
    _S("metrics_host", nonempty, "127.0.0.1", "address the metrics server listens on", "HOST"),
    _S("log_level", one_of(*LEVELS), "info", f"log level: {', '.join(LEVELS)}", "LEVEL"),
    _S("log_json", optional(boolean), None, "JSON log lines (default: only when stderr is "
       "not a terminal)", boolean=True),
    # FOR TESTS ONLY (core.Lie), refused unless MICROMINE_ALLOW_LYING=1 (config.py).
    _S("lie", one_of(*(lie.value for lie in Lie)), None, "", hidden=True),
)  # fmt: skip
BY_NAME = {setting.name: setting for setting in SETTINGS}


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """``--config`` and one flag per setting; all default to "not given" (absent)."""
    parser.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS,
        help=f"TOML settings file (env {CONFIG_ENV}; default <state_dir>/{CONFIG_FILE_NAME} "
        "if it exists); every flag below is also a key there and a MICROMINE_* variable",
    )  # fmt: skip
    for s in SETTINGS:
        default = "" if s.default is None else f"; default {str(s.default).lower()}"
        text = argparse.SUPPRESS if s.hidden else f"{s.help} (env {s.env}{default})"
        if s.boolean:
            parser.add_argument(s.flag, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text)  # fmt: skip
        else:
            parser.add_argument(s.flag, metavar=s.metavar, default=argparse.SUPPRESS, help=text,
                                action="append" if s.repeated else "store")  # fmt: skip


# --- resolution --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolved:
    """Every setting's checked value and origin (None: not given and no plain default)."""

    values: Mapping[str, Any]
    origins: Mapping[str, Origin]
    file: Path | None


def resolve(
    flags: Mapping[str, Any], environ: Mapping[str, str], default_state_dir: Callable[[], Path]
) -> Resolved:
    """Check every given value and apply the precedence; raises :class:`ConfigError`."""
    given: dict[str, tuple[Any, Origin]] = {}
    for s in SETTINGS:  # flag and environment first: they may say where the file is
        if flags.get(s.name) is not None:
            given[s.name] = (flags[s.name], Origin(Source.FLAG, s.flag))
        elif environ.get(s.env):
            raw = environ[s.env]
            value = [v for v in raw.split(",") if v.strip()] if s.repeated else raw
            given[s.name] = (value, Origin(Source.ENV, s.env))
    file = _find_file(flags, environ, given, default_state_dir)
    if file is not None:
        for name, (value, origin) in _read_file(file).items():
            given.setdefault(name, (value, origin))
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for s in SETTINGS:
        if s.name not in given:
            values[s.name], origins[s.name] = s.default, Origin(Source.DEFAULT)
            continue
        raw, origin = given[s.name]
        values[s.name] = _check(s, raw, origin, file)
        origins[s.name] = origin
    return Resolved(values, origins, file)


def _check(setting: Setting, raw: Any, origin: Origin, file: Path | None) -> Any:
    try:
        if setting.repeated:
            items = raw if isinstance(raw, list) else [raw]
            value: Any = frozenset(setting.parse(item) for item in items)
        else:
            value = setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{origin.describe()}: {setting.name}: {exc}") from None
    if isinstance(value, Path) and origin.source is Source.FILE and file is not None:
        value = file.parent / value  # relative to the file (absolute paths stay as they are)
    return value


def _find_file(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    given: Mapping[str, tuple[Any, Origin]],
    default_state_dir: Callable[[], Path],
) -> Path | None:
    explicit = flags.get("config") or environ.get(CONFIG_ENV)
    if explicit:
        named = "--config" if flags.get("config") else CONFIG_ENV
        try:
            file = path(str(explicit))
        except ValueError as exc:
            raise ConfigError(f"{named}: {exc}") from None
        if not file.is_file():
            raise ConfigError(f"{named}: {str(file)!r} is not a readable file")
        return file
    for name in ("state_dir", "key"):
        if name in given:
            raw, origin = given[name]
            checked = _check(BY_NAME[name], raw, origin, None)
            state_dir = checked if name == "state_dir" else checked.parent
            break
    else:
        state_dir = default_state_dir()
    candidate = state_dir / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def _read_file(file: Path) -> dict[str, tuple[Any, Origin]]:
    try:
        content = file.read_text(encoding="utf-8")
        data = tomllib.loads(content)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    lines = content.splitlines()
    found = {}
    for key, value in data.items():
        where = f"{file}:{_line_of(lines, key)}"
        if key not in BY_NAME:
            near = difflib.get_close_matches(key, list(BY_NAME), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{where} (file): unknown setting {key!r}{hint}")
        found[key] = (value, Origin(Source.FILE, where))
    return found


def _line_of(lines: list[str], key: str) -> int | str:
    pattern = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*[=.\]]|\s*\[\s*{re.escape(key)}")
    for number, line in enumerate(lines, start=1):
        if pattern.match(line):
            return number
    return "?"
