"""Command-line surface of the agent, shared by ``micromine agent`` and ``python -m``.

``micromine agent [SETTINGS]`` runs the agent; ``micromine agent ACTION`` runs one of
the actions registered by :func:`add_agent_commands` (``config``, ``install-service``;
others add theirs to the same sub-parser object).  The setting flags come from the
settings table and default to "absent", so that a flag given before the action is not
overwritten by the action's parser, and so that flag > environment > file > default can
tell "not given" from "given the default value".
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from micromine.common.keyfile import KeyFileError, load_or_create_key
from micromine.common.logs import configure_logging
from micromine.common.signals import until_stopped
from micromine.device_agent import systemd
from micromine.device_agent.config import AgentConfig, load, render_toml
from micromine.device_agent.service import AgentService
from micromine.device_agent.settings import Resolved, add_setting_flags
from micromine.device_agent.status_file import run_status_command

__all__ = ["add_agent_arguments", "add_agent_commands", "main", "run_agent"]

EXIT_USAGE = 2  # argparse's own code for bad arguments
EXIT_KEY = 1
EXIT_INSTALL = 1


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the agent's setting flags to ``parser`` (a sub-command parser or a standalone one)."""
    add_setting_flags(parser)


def add_agent_commands(parser: argparse.ArgumentParser) -> Any:
    """The agent's flags and its actions; returns the sub-parsers for more actions."""
    add_agent_arguments(parser)
    parser.set_defaults(run=run_agent)
    actions = parser.add_subparsers(title="actions", metavar="ACTION")
    show = actions.add_parser(
        "config", help="print the effective configuration (TOML, with each value's origin)"
    )
    add_agent_arguments(show)  # flags may come after the action too
    show.add_argument("--show", action="store_true", help="print it (the default)")
    show.set_defaults(run=cmd_config)
    service = actions.add_parser(
        "install-service", help="write a systemd unit for the agent (run as root)"
    )
    service.add_argument("--dry-run", action="store_true", help="print the unit, write nothing")
    service.add_argument("--user", metavar="NAME",
                         help="run as this account (default: DynamicUser=yes)")  # fmt: skip
    service.add_argument("--config", dest="service_config", metavar="FILE",
                         default="/etc/micromine/agent.toml",
                         help="settings file the service reads (written if missing)")  # fmt: skip
    service.add_argument("--executable", metavar="PATH",
                         help="the micromine command to run (default: this one)")  # fmt: skip
    service.add_argument("--unit", metavar="FILE",
                         default="/etc/systemd/system/micromine-agent.service")  # fmt: skip
    service.set_defaults(run=cmd_install_service)
    status = actions.add_parser(
        "status", help="show what the agent on this machine is doing (from its status file)"
    )
    add_agent_arguments(status)  # --state-dir, --status-file, --config locate the file
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(run=cmd_status)
    for action, text in (("pause", "pause the agent on this host"), ("resume", "resume it")):
        switch = actions.add_parser(action, help=f"{text} (creates or removes the pause file)")
        add_agent_arguments(switch)  # --state-dir, --pause-file, --config locate the file
        switch.set_defaults(run=cmd_pause if action == "pause" else cmd_resume)
    return actions


@until_stopped
def run_agent(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the process exit code."""
    try:
        config = AgentConfig.from_args(args)
    except ValueError as exc:  # ConfigError, or a file that cannot be read
        print(f"micromine agent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_level, config.log_json)
    try:
        key = load_or_create_key(config.key_path)
    except KeyFileError as exc:
        structlog.get_logger("micromine.device_agent").error("cannot use key", error=str(exc))
        return EXIT_KEY
    return AgentService(config, key).run()


def _load_or_say(args: argparse.Namespace, action: str) -> tuple[AgentConfig, Resolved] | None:
    """The settings for an action, or None once the error is printed (exit EXIT_USAGE)."""
    try:
        return load(args)
    except ValueError as exc:
        print(f"micromine agent {action}: error: {exc}", file=sys.stderr)
        return None


def cmd_config(args: argparse.Namespace) -> int:
    if (loaded := _load_or_say(args, "config")) is None:
        return EXIT_USAGE
    sys.stdout.write(render_toml(loaded[1]))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if (loaded := _load_or_say(args, "status")) is None:
        return EXIT_USAGE
    return run_status_command(
        loaded[0].status_file, as_json=args.json, now_ms=time.time_ns() // 1_000_000
    )


def cmd_pause(args: argparse.Namespace) -> int:
    return _switch_pause(args, paused=True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _switch_pause(args, paused=False)


def _switch_pause(args: argparse.Namespace, *, paused: bool) -> int:
    """Create (pause) or remove (resume) the pause file a running agent watches."""
    if (loaded := _load_or_say(args, "pause" if paused else "resume")) is None:
        return EXIT_USAGE
    path = loaded[0].pause_file
    try:
        if paused:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        print(f"micromine agent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{'paused' if paused else 'resumed'} ({path})")
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    try:
        executable = Path(args.executable) if args.executable else systemd.find_executable()
        options = systemd.ServiceOptions(
            executable=executable, config=Path(args.service_config), user=args.user
        )
        warning = systemd.home_warning(executable)
        if warning:
            print(f"micromine agent install-service: warning: {warning}", file=sys.stderr)
        if args.dry_run:
            sys.stdout.write(systemd.render_unit(options))
            return 0
        for line in systemd.install(options, Path(args.unit)):
            print(line)
    except systemd.InstallError as exc:
        print(f"micromine agent install-service: error: {exc}", file=sys.stderr)
        return EXIT_INSTALL
    print("next: sudo systemctl daemon-reload && sudo systemctl enable --now micromine-agent")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m micromine.device_agent",
        description="micromine device agent: judges signed transactions for ledger nodes.",
    )
    add_agent_commands(parser)
    args = parser.parse_args(argv)
    return int(args.run(args))
