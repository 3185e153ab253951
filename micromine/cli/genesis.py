"""``micromine genesis``: write a genesis file from key files, balances and parameters."""

import argparse
import sys
import time
from pathlib import Path

from micromine.cli.keys import public_key_from_hex

MAX_LOAD_SENDERS = 10_000


def add_to(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    genesis = commands.add_parser("genesis", help="write a genesis file")
    add_genesis_arguments(genesis)
    genesis.set_defaults(run=cmd_genesis)


def add_genesis_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    parser.add_argument("--chain", default="devnet", help="chain id ([a-z0-9-], <= 32)")
    parser.add_argument("--ledger-key", action="append", default=[], type=Path,
                        help="a ledger node's key file (repeat for each node)")  # fmt: skip
    parser.add_argument("--ledger-pub", action="append", default=[],
                        help="a ledger node's public key, hex (instead of its file)")  # fmt: skip
    parser.add_argument("--operator-key", action="append", default=[], type=Path,
                        help="an operator's key file (broker ACL: reads everything)")  # fmt: skip
    parser.add_argument("--operator-pub", action="append", default=[],
                        help="an operator's public key, hex (instead of its file)")  # fmt: skip
    parser.add_argument("--enrollment", choices=("open", "approved"), default="open",
                        help="open: any device registers with its hello; approved: only "
                             "devices an operator approved (devices approve)")  # fmt: skip
    parser.add_argument("--fund", action="append", default=[], metavar="PUBHEX=AMOUNT",
                        help="an initial balance (repeatable)")  # fmt: skip
    parser.add_argument("--fund-load-senders", type=int, default=0, metavar="N",
                        help="fund the load generator's first N senders (`micromine load`; "
                             "their keys are public: test clusters only)")  # fmt: skip
    parser.add_argument("--device", action="append", default=[], metavar="PUBHEX",
                        help="a device registered from genesis (repeatable; others "
                             "register with their hello)")  # fmt: skip
    for name, default in (("k", 3), ("q", 2), ("batch-size", 64), ("block-interval-ms", 1000),
                          ("block-reward", 50), ("min-fee", 0),
                          ("assignment-window", 64),
                          ("reward-vesting-blocks", 64)):  # fmt: skip
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--recheck-tx-signatures", type=int, choices=(0, 1), default=1,
                        help="1 (default): validators re-verify every transaction's "
                             "signature in a block; 0: leave it to the devices "
                             "(docs/CONSENSUS.md, 'Device assignment')")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def cmd_genesis(args: argparse.Namespace) -> int:
    from micromine.common.keyfile import KeyFileError, load_key
    from micromine.protocol.genesis import ChainParams, Genesis, GenesisError

    try:
        if args.out.exists() and not args.force:
            raise ValueError(f"{args.out} exists (use --force to overwrite)")
        nodes = [load_key(path).public for path in args.ledger_key]
        nodes += [public_key_from_hex(text, "--ledger-pub") for text in args.ledger_pub]
        operators = [load_key(path).public for path in args.operator_key]
        operators += [public_key_from_hex(text, "--operator-pub") for text in args.operator_pub]
        if not 0 <= args.fund_load_senders <= MAX_LOAD_SENDERS:
            raise ValueError(f"--fund-load-senders must be 0..{MAX_LOAD_SENDERS}")
        balances: dict[bytes, int] = {}
        if args.fund_load_senders:
            from micromine.loadgen import load_balances

            balances.update(load_balances(args.fund_load_senders))
        for entry in args.fund:
            key_hex, _, amount = entry.partition("=")
            balances[public_key_from_hex(key_hex, "--fund")] = int(amount)
        genesis = Genesis(
            chain_id=args.chain,
            timestamp_ms=time.time_ns() // 1_000_000,
            ledger_nodes=tuple(nodes),
            balances=tuple(sorted(balances.items())),
            params=ChainParams(
                k=args.k,
                q=args.q,
                batch_size=args.batch_size,
                block_interval_ms=args.block_interval_ms,
                block_reward=args.block_reward,
                min_fee=args.min_fee,
                assignment_window=args.assignment_window,
                recheck_tx_signatures=args.recheck_tx_signatures,
                reward_vesting_blocks=args.reward_vesting_blocks,
            ),
            devices=tuple(sorted({public_key_from_hex(text, "--device") for text in args.device})),
            operators=tuple(operators),
            enrollment=args.enrollment,
        )
    except (ValueError, KeyFileError, GenesisError) as exc:
        print(f"micromine genesis: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(genesis.to_json())
    print(f"wrote {args.out}: chain {genesis.chain_id}, genesis hash {genesis.hash.hex()}")
    return 0
