"""``python -m micromine.ledger_node``: the same as ``micromine ledger``."""

import argparse
import sys
from collections.abc import Sequence

from micromine.common.keyfile import KeyFileError, load_key
from micromine.common.logs import configure_logging
from micromine.common.signals import until_stopped
from micromine.ledger_node.config import LedgerConfig, add_ledger_arguments
from micromine.ledger_node.service import run_ledger
from micromine.ledger_node.storage import StorageError
from micromine.protocol.genesis import GenesisError


def run_from_args(args: argparse.Namespace) -> int:
    try:
        config = LedgerConfig.from_args(args)
        configure_logging(config.log_level, config.log_json)
        return run_ledger(config, load_key(config.key_path))
    except (ValueError, KeyFileError, GenesisError, StorageError) as exc:
        print(f"micromine ledger: {exc}", file=sys.stderr)
        return 2


@until_stopped
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="micromine ledger", description="Run a ledger node.")
    add_ledger_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
