"""``micromine``: one command, a subcommand per role.

Heavy imports happen inside each subcommand, so ``micromine agent`` on a Pi loads neither
the broker nor the ledger, and ``micromine --help`` is instant.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from micromine import __version__
from micromine.common.genesis_file import load_genesis
from micromine.common.signals import EXIT_INTERRUPTED, StopSignals, sigterm_as_sigint, until_stopped

MAX_LOAD_SENDERS = 10_000

if TYPE_CHECKING:
    from micromine.common.mqtt import Login, TlsFiles
    from micromine.protocol.block import Block


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

    add_keys_commands(commands.add_parser("keys", help="create or show Ed25519 key files"))

    genesis = commands.add_parser("genesis", help="write a genesis file")
    add_genesis_arguments(genesis)
    genesis.set_defaults(run=cmd_genesis)

    from micromine.broker.config import add_broker_arguments

    broker = commands.add_parser("broker", help="run the embedded MQTT broker (amqtt)")
    add_broker_arguments(broker)
    broker.set_defaults(run=cmd_broker)
    broker_commands = broker.add_subparsers(metavar="ACTION")
    mosquitto = broker_commands.add_parser(
        "mosquitto-config", help="write a Mosquitto configuration for the same access policy"
    )
    from micromine.broker.mosquitto import add_mosquitto_arguments

    add_mosquitto_arguments(mosquitto)
    mosquitto.set_defaults(run=cmd_mosquitto_config)

    from micromine.device_agent.cli import add_agent_commands

    # `micromine agent [SETTINGS]` runs it; `micromine agent ACTION` (config, install-service).
    add_agent_commands(commands.add_parser("agent", help="run a device agent"))

    from micromine.ledger_node.config import add_ledger_arguments

    ledger = commands.add_parser("ledger", help="run a ledger node")
    add_ledger_arguments(ledger)
    ledger.set_defaults(run=cmd_ledger)

    tx = commands.add_parser("tx", help="transactions")
    tx_commands = tx.add_subparsers(metavar="ACTION", required=True)
    send = tx_commands.add_parser("send", help="sign and submit a transfer")
    add_send_arguments(send)
    send.set_defaults(run=cmd_tx_send)

    from micromine.loadgen import add_loadgen_arguments

    load = commands.add_parser("load", help="submit a steady stream of test transactions")
    add_loadgen_arguments(load)
    load.set_defaults(run=cmd_load)

    blocks = commands.add_parser("blocks", help="follow committed blocks")
    block_commands = blocks.add_subparsers(metavar="ACTION", required=True)
    watch = block_commands.add_parser("watch", help="print a line per committed block")
    add_watch_arguments(watch)
    watch.set_defaults(run=cmd_blocks_watch)

    from micromine.devices_cli import add_devices_commands

    add_devices_commands(
        commands.add_parser("devices", help="approve, revoke or list devices (operators)")
    )

    from micromine.devnet import add_devnet_arguments

    devnet = commands.add_parser("devnet", help="run a local cluster and report on it")
    add_devnet_arguments(devnet)
    devnet.set_defaults(run=cmd_devnet)
    return parser


# ---- keys ---------------------------------------------------------------------------


def add_keys_commands(keys: argparse.ArgumentParser) -> None:
    key_commands = keys.add_subparsers(metavar="ACTION", required=True)
    new = key_commands.add_parser("new", help="create key files (mode 0600)")
    new.add_argument("path", type=Path, nargs="+")
    new.add_argument("--exist-ok", action="store_true",
                     help="keep a key that exists (and print its public key)")  # fmt: skip
    new.set_defaults(run=cmd_keys_new)
    show = key_commands.add_parser("show", help="print a key file's public key")
    show.add_argument("path", type=Path)
    show.set_defaults(run=cmd_keys_show)
    password = key_commands.add_parser(
        "broker-password", help="print the key's static broker password (for Mosquitto)"
    )
    password.add_argument("path", type=Path)
    password.add_argument("--chain", default="devnet")
    password.add_argument("--epoch", type=int, default=0, help="password generation")
    password.set_defaults(run=cmd_keys_broker_password)


def cmd_keys_new(args: argparse.Namespace) -> int:
    from micromine.common.keyfile import KeyFileError, load_or_create_key

    existing = [str(path) for path in args.path if path.exists()]
    if existing and not args.exist_ok:
        print(f"micromine keys new: {', '.join(existing)} exists; not overwriting it "
              "(--exist-ok keeps it)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        for path in args.path:
            print(load_or_create_key(path).public.hex())
    except (KeyFileError, OSError) as exc:
        print(f"micromine keys new: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    from micromine.common.keyfile import KeyFileError, load_key

    try:
        print(load_key(args.path).public.hex())
    except KeyFileError as exc:
        print(f"micromine keys show: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_keys_broker_password(args: argparse.Namespace) -> int:
    from micromine.common.keyfile import KeyFileError, load_key
    from micromine.protocol.auth import compute_static_password

    try:
        key = load_key(args.path)
    except KeyFileError as exc:
        print(f"micromine keys broker-password: {exc}", file=sys.stderr)
        return 2
    print(f"{key.public.hex()} {compute_static_password(key, args.chain, args.epoch)}")
    return 0


# ---- genesis ------------------------------------------------------------------------


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
        nodes += [_hex_key(text, "--ledger-pub") for text in args.ledger_pub]
        operators = [load_key(path).public for path in args.operator_key]
        operators += [_hex_key(text, "--operator-pub") for text in args.operator_pub]
        if not 0 <= args.fund_load_senders <= MAX_LOAD_SENDERS:
            raise ValueError(f"--fund-load-senders must be 0..{MAX_LOAD_SENDERS}")
        balances: dict[bytes, int] = {}
        if args.fund_load_senders:
            from micromine.loadgen import load_balances

            balances.update(load_balances(args.fund_load_senders))
        for entry in args.fund:
            key_hex, _, amount = entry.partition("=")
            balances[_hex_key(key_hex, "--fund")] = int(amount)
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
            devices=tuple(sorted({_hex_key(text, "--device") for text in args.device})),
            operators=tuple(operators),
            enrollment=args.enrollment,
        )
    except (ValueError, KeyFileError, GenesisError) as exc:
        print(f"micromine genesis: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(genesis.to_json())
    print(f"wrote {args.out}: chain {genesis.chain_id}, genesis hash {genesis.hash.hex()}")
    return 0


def _hex_key(text: str, flag: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not hex") from None
    if len(key) != 32:
        raise ValueError(f"{flag}: a public key is 32 bytes (64 hex characters)")
    return key


# ---- roles --------------------------------------------------------------------------


@until_stopped
def cmd_broker(args: argparse.Namespace) -> int:
    from micromine.broker.config import config_from_args
    from micromine.protocol.genesis import GenesisError

    try:
        config = config_from_args(args)
    except (ValueError, GenesisError) as exc:
        print(f"micromine broker: {exc}", file=sys.stderr)
        return 2
    try:
        from micromine.broker.embedded import main_run
    except ImportError:
        print("micromine broker: needs the broker extra: pip install 'micromine[broker]'",
              file=sys.stderr)  # fmt: skip
        return 2
    return main_run(config)


def cmd_mosquitto_config(args: argparse.Namespace) -> int:
    from micromine.broker.mosquitto import run_mosquitto_config

    return run_mosquitto_config(args)


@until_stopped
def cmd_ledger(args: argparse.Namespace) -> int:
    from micromine.ledger_node.__main__ import run_from_args

    return run_from_args(args)


@until_stopped
def cmd_load(args: argparse.Namespace) -> int:
    from micromine.loadgen import run_main

    return run_main(args)


@until_stopped
def cmd_devnet(args: argparse.Namespace) -> int:
    from micromine.common.logs import configure_logging
    from micromine.devnet import run_devnet

    configure_logging("warning")
    return run_devnet(args)


# ---- transactions and blocks ----------------------------------------------------------


def add_send_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--chain", default="devnet")
    parser.add_argument("--key", type=Path, required=True, help="the sender's key file")
    parser.add_argument("--to", required=True, help="recipient public key, hex")
    parser.add_argument("--amount", type=int, required=True)
    parser.add_argument("--fee", type=int, default=1)
    parser.add_argument("--nonce", type=int,
                        help="the sender's next nonce (default: counted in KEY.nonce)")  # fmt: skip
    parser.add_argument("--memo", default="")
    parser.add_argument("--expires-in", type=float, default=600.0, help="seconds")
    parser.add_argument("--wait", action="store_true", help="wait for commit or rejection")
    parser.add_argument("--timeout", type=float, default=60.0)
    from micromine.common.mqtt import add_link_arguments

    add_link_arguments(parser)


def cmd_tx_send(args: argparse.Namespace) -> int:
    """Sign, submit and report.  With the nonce counted in KEY.nonce (no --nonce), a
    final answer that names the sender's next nonce (REJECTED BAD_NONCE: used before;
    NONCE_GAP: an earlier one never came) has the transfer signed again with that nonce
    and sent (three times at most): the old one can no longer commit, so the transfer
    is made once.  A HELD answer is waited on (--wait) or reported."""
    from micromine.client import LedgerClient, send_transaction
    from micromine.common.keyfile import KeyFileError, load_key
    from micromine.common.logs import configure_logging
    from micromine.common.mqtt import Login, link_settings_from
    from micromine.protocol.codec import sign
    from micromine.protocol.errors import DecodeError
    from micromine.protocol.kinds import ReceiptStatus
    from micromine.protocol.messages import Transaction

    configure_logging("warning")
    nonce_file = args.key.with_name(args.key.name + ".nonce")
    try:
        login_mode, tls = link_settings_from(args, os.environ)
        key = load_key(args.key)
        nonce = args.nonce
        if nonce is None:
            nonce = int(nonce_file.read_text()) if nonce_file.exists() else 0
        recipient = _hex_key(args.to, "--to")
        expiry_ms = time.time_ns() // 1_000_000 + int(args.expires_in * 1000)

        def signed(nonce: int) -> Transaction:
            return sign(Transaction(
                args.chain, key.public, recipient, args.amount, args.fee, nonce, expiry_ms,
                args.memo,
            ), key)  # fmt: skip

        signed(nonce)  # a bad field fails here, before any connection
    except (KeyFileError, ValueError, DecodeError) as exc:
        print(f"micromine tx send: {exc}", file=sys.stderr)
        return 2
    login = Login(key, args.chain, login_mode)
    with LedgerClient(args.broker, args.chain, login=login, tls=tls) as client:
        try:
            client.connect(timeout=min(args.timeout, 30))
        except TimeoutError as exc:
            print(f"micromine tx send: {exc} ({args.broker})", file=sys.stderr)
            return 1
        tx, fate = send_transaction(
            client, signed, nonce, wait=args.wait, timeout=args.timeout,
            renumber=args.nonce is None, say=print,
        )  # fmt: skip
        nonce = tx.nonce
        if fate is None or (args.wait and not fate.final):
            said = fate.describe() if fate else "not acknowledged"
            if args.wait:
                print(f"no decision within {args.timeout:g} s ({said})")
                return 1
            print("submitted; no acknowledgement yet")
        else:
            print(fate.describe())
            if fate.status is ReceiptStatus.REJECTED:
                if args.nonce is None and fate.missing_nonce is not None:
                    nonce_file.write_text(f"{fate.missing_nonce}\n")  # the chain's count
                return 1
    if args.nonce is None:
        nonce_file.write_text(f"{nonce + 1}\n")
    return 0


def add_watch_arguments(watch: argparse.ArgumentParser) -> None:
    from micromine.common.mqtt import add_link_arguments

    watch.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    watch.add_argument("--chain", default="devnet")
    watch.add_argument("--json", action="store_true", help="one JSON object per block")
    watch.add_argument("--count", type=int, default=0, help="stop after this many blocks")
    watch.add_argument("--verify", action="store_true",
                       help="check each certificate against the genesis validators")  # fmt: skip
    watch.add_argument("--genesis", type=Path, help="genesis file, for --verify")
    watch.add_argument("--key", type=Path, help="log in with this key (default: anonymous)")

    add_link_arguments(watch, login_default="none")


def _watch_link_settings(args: argparse.Namespace) -> "tuple[Login | None, TlsFiles | None]":
    """Anonymous unless --key (or --login) says otherwise; ValueError says what is wrong."""
    from micromine.common.keyfile import KeyFileError, load_key
    from micromine.common.mqtt import Login, LoginMode, link_settings_from

    mode, tls = link_settings_from(args, os.environ, login_default="none")
    if args.key is not None and mode is LoginMode.NONE and not args.login:
        mode = LoginMode.TOKEN  # a key given means: log in with it
    if mode is LoginMode.NONE:
        return None, tls
    if args.key is None:
        raise ValueError(f"--login {mode.value} needs --key")
    try:
        return Login(load_key(args.key), args.chain, mode), tls
    except KeyFileError as exc:
        raise ValueError(str(exc)) from None


@until_stopped
def cmd_blocks_watch(args: argparse.Namespace) -> int:
    from micromine.common.mqtt import Incoming, LinkConfig, MqttLink
    from micromine.protocol import topics
    from micromine.protocol.block import Block
    from micromine.protocol.codec import decode
    from micromine.protocol.errors import DecodeError
    from micromine.protocol.genesis import GenesisError

    validators: tuple[bytes, ...] = ()
    try:  # GenesisError is a ValueError
        if args.verify:
            if args.genesis is None:
                raise GenesisError("--verify needs --genesis FILE (the validator set)")
            validators = load_genesis(args.genesis).ledger_nodes
        login, tls = _watch_link_settings(args)
    except ValueError as exc:
        print(f"micromine blocks watch: {exc}", file=sys.stderr)
        return 2
    link = MqttLink(LinkConfig(
        client_id=f"watch-{time.time_ns() % 10**9}", broker_url=args.broker,
        subscriptions=((topics.blocks(args.chain), 1),), login=login, tls=tls,
    ))  # fmt: skip
    counts = {"blocks": 0, "undecodable": 0}
    last_complaint = -1.0
    with StopSignals() as stop, link:
        try:
            try:
                if not link.wait_connected(30):
                    print(f"micromine blocks watch: cannot reach {args.broker}", file=sys.stderr)
                    return 1
                print(f"watching {topics.blocks(args.chain)} on {args.broker}", file=sys.stderr,
                      flush=True)  # fmt: skip
                while not args.count or counts["blocks"] < args.count:
                    item = link.get(1.0)
                    if not isinstance(item, Incoming):
                        continue
                    try:
                        block = decode(item.payload, Block)
                    except DecodeError as exc:
                        # anyone may publish here on an open broker: one line a second
                        counts["undecodable"] += 1
                        if time.monotonic() - last_complaint >= 1.0:
                            last_complaint = time.monotonic()
                            print(f"undecodable block message ({counts['undecodable']} in "
                                  f"all): {exc}", file=sys.stderr)  # fmt: skip
                        continue
                    counts["blocks"] += 1
                    print(describe_block(block, args.chain, validators if args.verify else None,
                                         as_json=args.json), flush=True)  # fmt: skip
            finally:
                stop.disarm()
        except KeyboardInterrupt:  # SIGINT or SIGTERM: a watcher's normal end
            pass
    print(f"blocks watch: {counts['blocks']} blocks, {counts['undecodable']} undecodable",
          file=sys.stderr, flush=True)  # fmt: skip
    return 0


def _clock_time(timestamp_ms: int) -> str:
    """HH:MM:SS of a block's time; a time no calendar holds (up to 2^53 ms is a valid
    field) must not end the watcher."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(timestamp_ms / 1000))
    except (OverflowError, OSError, ValueError):
        return "--:--:--"


def describe_block(
    block: "Block", chain_id: str, validators: Sequence[bytes] | None, *, as_json: bool
) -> str:
    """The line ``blocks watch`` prints for a block; with ``validators``, its certificate
    checked against them (``--verify``)."""
    from micromine.ledger_node.consensus.certificate import check_certificate
    from micromine.ledger_node.core.render import block_to_dict

    document = block_to_dict(block)
    verdict = ""
    if validators is not None:
        check = check_certificate(block, validators)
        if block.header.chain_id != chain_id:
            check = replace(check, ok=False, problems=("wrong chain", *check.problems))
        document["certificate"] = {
            "ok": check.ok,
            "round": check.round,
            "signers": check.signers,
            "needed": check.needed,
            "problems": check.problems,
        }
        verdict = "  " + check.describe()
    if as_json:
        return json.dumps(document)
    header = block.header
    stamp = _clock_time(header.timestamp_ms)
    return (f"height {header.height:6d}  {stamp}  txs {len(block.txs):5d}  "
            f"hash {block.hash.hex()[:16]}  round {block.commit_round}  "
            f"signers {len(block.certificate)}{verdict}")  # fmt: skip
