"""Command-line surface of the agent, shared by ``micromine agent`` and ``python -m``.

Flags default to None so that :meth:`AgentConfig.from_args` can tell "not given" from
"given the default value" and fall back to the environment in between.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import structlog

from micromine.device_agent.config import (
    DEFAULT_BROKER,
    DEFAULT_CAPACITY,
    DEFAULT_CHAIN,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_HOMEASSISTANT_PREFIX,
    DEFAULT_METRICS_HOST,
    ENV_BROKER,
    ENV_CHAIN,
    ENV_KEY,
    AgentConfig,
)
from micromine.device_agent.core import Lie
from micromine.device_agent.keyfile import KeyFileError, load_or_create_key
from micromine.device_agent.service import AgentService
from micromine.logs import LEVELS, configure_logging
from micromine.mqtt import add_link_arguments

__all__ = ["add_agent_arguments", "main", "run_agent"]

EXIT_USAGE = 2  # argparse's own code for bad arguments
EXIT_KEY = 1  # also: a resource the settings name cannot be used


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the agent's flags to ``parser`` (a sub-command parser or a standalone one)."""
    parser.add_argument(
        "--broker",
        metavar="URL",
        help=f"mqtt[s]://HOST[:PORT] or ws[s]://HOST[:PORT][/PATH] (env {ENV_BROKER}; "
        f"default {DEFAULT_BROKER})",
    )
    parser.add_argument(
        "--key",
        metavar="FILE",
        help=f"device key file, created (mode 0600) if missing (env {ENV_KEY}; "
        "default $XDG_CONFIG_HOME/micromine/device.key)",
    )
    parser.add_argument(
        "--chain", metavar="ID", help=f"chain id (env {ENV_CHAIN}; default {DEFAULT_CHAIN})"
    )
    parser.add_argument(
        "--capacity",
        type=int,
        metavar="N",
        help=f"most transactions wanted per batch (default {DEFAULT_CAPACITY})",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        metavar="S",
        help=f"seconds between heartbeats (default {DEFAULT_HEARTBEAT_S})",
    )
    parser.add_argument(
        "--issuer",
        action="append",
        metavar="HEX",
        help="accept work only from this ledger node key (repeatable; default: any)",
    )
    add_link_arguments(parser)
    add_watch_arguments(parser)
    # Hidden, for tests only: a lying agent (core.Lie), refused without
    # MICROMINE_ALLOW_LYING=1 (config.py).  Not in --help on purpose.
    parser.add_argument("--lie", choices=[lie.value for lie in Lie], help=argparse.SUPPRESS)
    parser.add_argument("--log-level", choices=list(LEVELS), type=str.lower, help="default info")
    parser.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="JSON log lines (default: only when stderr is not a terminal)",
    )


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """The status file, Home Assistant and Prometheus settings (docs/AGENT_STATUS.md)."""
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory of the status file (env MICROMINE_STATE_DIR; default: the key's)",
    )
    parser.add_argument(
        "--status-file",
        metavar="FILE",
        help="JSON status, rewritten every 5 s (env MICROMINE_STATUS_FILE; "
        "default <state-dir>/status.json)",
    )
    parser.add_argument(
        "--homeassistant",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="announce the agent to Home Assistant by MQTT discovery (env "
        "MICROMINE_HOMEASSISTANT; default off)",
    )
    parser.add_argument(
        "--homeassistant-prefix",
        metavar="PREFIX",
        help=f"Home Assistant discovery prefix (env MICROMINE_HOMEASSISTANT_PREFIX; "
        f"default {DEFAULT_HOMEASSISTANT_PREFIX})",
    )
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (env "
        "MICROMINE_METRICS_PORT; default none: off)",
    )
    parser.add_argument(
        "--metrics-host",
        metavar="HOST",
        help=f"address of the metrics endpoint (env MICROMINE_METRICS_HOST; "
        f"default {DEFAULT_METRICS_HOST})",
    )


def run_agent(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the process exit code."""
    try:
        config = AgentConfig.from_args(args)
    except ValueError as exc:  # ConfigError, or a non-numeric env value
        print(f"micromine agent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_level, config.log_json)
    try:
        key = load_or_create_key(config.key_path)
    except KeyFileError as exc:
        structlog.get_logger("micromine.device_agent").error("cannot use key", error=str(exc))
        return EXIT_KEY
    try:
        service = AgentService(config, key)
    except OSError as exc:  # the metrics port is taken, say
        structlog.get_logger("micromine.device_agent").error(
            "cannot start the metrics endpoint",
            host=config.metrics_host,
            port=config.metrics_port,
            error=str(exc),
        )
        return EXIT_KEY
    return service.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m micromine.device_agent",
        description="micromine device agent: judges signed transactions for ledger nodes.",
    )
    add_agent_arguments(parser)
    return run_agent(parser.parse_args(argv))
