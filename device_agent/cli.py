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
    DEFAULT_CPU_BUDGET,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_NICE,
    DEFAULT_WINDOW,
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

__all__ = ["add_agent_arguments", "add_pause_arguments", "main", "run_agent", "run_pause"]

EXIT_USAGE = 2  # argparse's own code for bad arguments
EXIT_KEY = 1


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
    _add_idle_arguments(parser)
    add_link_arguments(parser)
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


def _add_idle_arguments(parser: argparse.ArgumentParser) -> None:
    """When the agent works (device_agent/idle.py); each flag's env is MICROMINE_<NAME>."""
    group = parser.add_argument_group("idle-time policy")
    group.add_argument(
        "--cpu-budget",
        metavar="PCT|none",
        help=f"CPU use cap, %% of one core averaged over a minute (default {DEFAULT_CPU_BUDGET:g})",
    )
    group.add_argument(
        "--max-host-cpu",
        metavar="PCT|none",
        help="pause while other processes keep more than PCT %% of all cores busy (default none)",
    )
    group.add_argument(
        "--max-load",
        metavar="X|none",
        help="pause while the 1-minute load average per core is above X (default none)",
    )
    group.add_argument(
        "--schedule",
        metavar="HH:MM-HH:MM[,...]",
        help="work only in these local-time windows, e.g. 22:00-07:00 (default always)",
    )
    group.add_argument(
        "--pause-file",
        metavar="FILE",
        help="paused while this file exists (default: 'paused' next to the key)",
    )
    group.add_argument(
        "--nice", type=int, metavar="N", help=f"CPU nice level 0..19 (default {DEFAULT_NICE})"
    )
    group.add_argument(
        "--idle-priority",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="SCHED_IDLE scheduling: run only when a core is otherwise idle (default on)",
    )
    group.add_argument(
        "--window",
        type=int,
        metavar="N",
        help=f"batches wanted at once from each ledger node, 1..16 (default {DEFAULT_WINDOW})",
    )


def add_pause_arguments(parser: argparse.ArgumentParser) -> None:
    """``micromine agent pause|resume``: where the pause file is (as for the agent)."""
    # SUPPRESS: not given here must not hide a value given before the sub-command.
    parser.add_argument("--key", metavar="FILE", default=argparse.SUPPRESS, help="device key file")
    parser.add_argument(
        "--pause-file", metavar="FILE", default=argparse.SUPPRESS, help="the pause file"
    )


def run_pause(args: argparse.Namespace, *, paused: bool) -> int:
    """Create (pause) or remove (resume) the pause file a running agent watches."""
    try:
        path = AgentConfig.from_args(args).pause_path
        if paused:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.unlink(missing_ok=True)
    except (ValueError, OSError) as exc:
        print(f"micromine agent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{'paused' if paused else 'resumed'} ({path})")
    return 0


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
    return AgentService(config, key).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m micromine.device_agent",
        description="micromine device agent: judges signed transactions for ledger nodes.",
    )
    add_agent_arguments(parser)
    return run_agent(parser.parse_args(argv))
