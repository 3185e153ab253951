"""``micromine ledger``: a ledger node (its flags: micromine.ledger_node.config)."""

import argparse

from micromine.common.signals import until_stopped


def add_to(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from micromine.ledger_node.config import add_ledger_arguments

    ledger = commands.add_parser("ledger", help="run a ledger node")
    add_ledger_arguments(ledger)
    ledger.set_defaults(run=cmd_ledger)


@until_stopped
def cmd_ledger(args: argparse.Namespace) -> int:
    from micromine.ledger_node.__main__ import run_from_args

    return run_from_args(args)
