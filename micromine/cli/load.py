"""``micromine load``: a steady stream of test transactions (micromine/loadgen.py)."""

import argparse

from micromine.common.signals import until_stopped


def add_to(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from micromine.loadgen import add_loadgen_arguments

    load = commands.add_parser("load", help="submit a steady stream of test transactions")
    add_loadgen_arguments(load)
    load.set_defaults(run=cmd_load)


@until_stopped
def cmd_load(args: argparse.Namespace) -> int:
    from micromine.loadgen import run_main

    return run_main(args)
