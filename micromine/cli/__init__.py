"""``micromine``: one command, a subcommand per role.

| module | commands |
| --- | --- |
| ``keys`` | ``keys new``, ``keys show``, ``keys broker-password`` |
| ``genesis`` | ``genesis`` |
| ``broker`` | ``broker``, ``broker mosquitto-config`` |
| (``micromine.device_agent.cli``) | ``agent``, ``agent config``, ``agent install-service``, ... |
| ``ledger`` | ``ledger`` |
| ``tx`` | ``tx send`` |
| ``load`` | ``load`` |
| ``blocks`` | ``blocks watch`` |
| ``devices`` | ``devices approve``, ``devices revoke``, ``devices list`` |
| ``devnet`` | ``devnet`` |

Each module's ``add_to(commands)`` registers its group and holds its ``cmd_*``
functions.  Heavy imports happen inside each command, so ``micromine agent`` on a Pi
loads neither the broker nor the ledger when it runs, and ``micromine --help`` is quick.
"""

import argparse
from collections.abc import Sequence

from micromine import __version__
from micromine.cli import blocks, broker, devices, devnet, genesis, keys, ledger, load, tx
from micromine.common.signals import EXIT_INTERRUPTED, sigterm_as_sigint


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    from micromine.common.logs import configure_logging

    configure_logging("warning")  # to stderr; roles that log more reconfigure it
    # SIGTERM (timeout, systemd, docker stop) means what Ctrl-C means.  A command that
    # runs until stopped is marked @until_stopped and exits 0 once stopped; a one-shot
    # command cut short exits 130 (common/signals.py).
    with sigterm_as_sigint():
        try:
            return int(args.run(args))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="micromine",
        description="Micro mining over MQTT: idle devices validate transactions for a ledger.",
    )
    parser.add_argument("--version", action="version", version=f"micromine {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    keys.add_to(commands)
    genesis.add_to(commands)
    broker.add_to(commands)

    from micromine.device_agent.cli import add_agent_commands

    # `micromine agent [SETTINGS]` runs it; `micromine agent ACTION` (config, install-service).
    add_agent_commands(commands.add_parser("agent", help="run a device agent"))
    ledger.add_to(commands)
    tx.add_to(commands)
    load.add_to(commands)
    blocks.add_to(commands)
    devices.add_to(commands)
    devnet.add_to(commands)
    return parser
