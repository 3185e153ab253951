"""``micromine devnet``: a local cluster, run and reported on (micromine/devnet.py)."""

import argparse

from micromine.common.signals import until_stopped


def add_to(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from micromine.devnet import add_devnet_arguments

    devnet = commands.add_parser("devnet", help="run a local cluster and report on it")
    add_devnet_arguments(devnet)
    devnet.set_defaults(run=cmd_devnet)


@until_stopped
def cmd_devnet(args: argparse.Namespace) -> int:
    from micromine.common.logs import configure_logging
    from micromine.devnet import run_devnet

    configure_logging("warning")
    return run_devnet(args)
