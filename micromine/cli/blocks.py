"""``micromine blocks watch``: a line (or a JSON object) per committed block, its
certificate checked against the genesis validators with ``--verify``.

``--verify`` also checks the signature of every transaction in a block whose certificate
holds: a forgery the devices let through (and no node's sample caught) is printed, and,
when the watcher logged in (``--key``), each lying verdict is reported to the ledger
nodes as a FraudReport on ``frauds``, so that their next block bans the device."""

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from micromine.common.genesis_file import load_genesis
from micromine.common.signals import StopSignals, until_stopped

if TYPE_CHECKING:
    from micromine.common.mqtt import Login, MqttLink, TlsFiles
    from micromine.protocol.block import Block


def add_to(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    blocks = commands.add_parser("blocks", help="follow committed blocks")
    block_commands = blocks.add_subparsers(metavar="ACTION", required=True)
    watch = block_commands.add_parser("watch", help="print a line per committed block")
    add_watch_arguments(watch)
    watch.set_defaults(run=cmd_blocks_watch)


def add_watch_arguments(watch: argparse.ArgumentParser) -> None:
    from micromine.common.mqtt import add_link_arguments

    watch.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    watch.add_argument("--chain", default="devnet")
    watch.add_argument("--json", action="store_true", help="one JSON object per block")
    watch.add_argument("--count", type=int, default=0, help="stop after this many blocks")
    watch.add_argument(
        "--verify",
        action="store_true",
        help="check each certificate against the genesis validators, and "
        "every transaction's signature (reports forgeries with --key)",
    )
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
    counts = {"blocks": 0, "undecodable": 0, "reported": 0}
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
                    if args.verify:
                        counts["reported"] += _report_forgeries(
                            block, args.chain, validators, link if login else None
                        )
            finally:
                stop.disarm()
        except KeyboardInterrupt:  # SIGINT or SIGTERM: a watcher's normal end
            pass
    print(f"blocks watch: {counts['blocks']} blocks, {counts['undecodable']} undecodable"
          + (f", {counts['reported']} fraud proofs reported" if args.verify else ""),
          file=sys.stderr, flush=True)  # fmt: skip
    return 0


def _report_forgeries(
    block: "Block", chain_id: str, validators: Sequence[bytes], link: "MqttLink | None"
) -> int:
    """Check every transaction of a certified block; say what was forged and, logged
    in, report each lying verdict to the ledger nodes.  The proofs reported."""
    from micromine.ledger_node.chain.verdicts import fraud_proofs_in
    from micromine.ledger_node.consensus.certificate import check_certificate
    from micromine.protocol import topics
    from micromine.protocol.block import FraudReport
    from micromine.protocol.codec import encode
    from micromine.protocol.topics import Channel

    if block.header.chain_id != chain_id or not check_certificate(block, validators).ok:
        return 0  # anyone may publish on an open broker: only the chain's blocks count
    proofs = fraud_proofs_in(block, chain_id)
    for proof in proofs:
        print(f"FORGED transaction {proof.tx.id.hex()[:16]} in block {block.header.height},"
              f" judged valid by device {proof.device.hex()[:16]}", file=sys.stderr)  # fmt: skip
    if not proofs:
        return 0
    if link is None:
        print("not reported: log in (--key) to report fraud proofs to the ledger nodes",
              file=sys.stderr)  # fmt: skip
        return 0
    for proof in proofs:
        payload = encode(FraudReport(chain_id, proof))
        link.publish(topics.frauds(chain_id), payload, Channel.FRAUDS.qos)
    return len(proofs)


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
