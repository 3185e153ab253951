"""``micromine tx send``: sign a transfer, submit it and follow its receipt."""

import argparse
import os
import sys
import time
from pathlib import Path

from micromine.cli.keys import public_key_from_hex


def add_to(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    tx = commands.add_parser("tx", help="transactions")
    tx_commands = tx.add_subparsers(metavar="ACTION", required=True)
    send = tx_commands.add_parser("send", help="sign and submit a transfer")
    add_send_arguments(send)
    send.set_defaults(run=cmd_tx_send)


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
    from micromine.client import LedgerClient
    from micromine.common.keyfile import KeyFileError, load_key
    from micromine.common.logs import configure_logging
    from micromine.common.mqtt import Login, link_settings_from
    from micromine.protocol.codec import encode, sign
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
        recipient = public_key_from_hex(args.to, "--to")
        tx = sign(Transaction(
            args.chain, key.public, recipient, args.amount, args.fee, nonce,
            time.time_ns() // 1_000_000 + int(args.expires_in * 1000), args.memo,
        ), key)  # fmt: skip
    except (KeyFileError, ValueError, DecodeError) as exc:
        print(f"micromine tx send: {exc}", file=sys.stderr)
        return 2
    item = encode(tx)
    print(f"tx {tx.id.hex()} nonce {nonce}")
    login = Login(key, args.chain, login_mode)
    with LedgerClient(args.broker, args.chain, login=login, tls=tls) as client:
        try:
            client.connect(timeout=min(args.timeout, 30))
        except TimeoutError as exc:
            print(f"micromine tx send: {exc} ({args.broker})", file=sys.stderr)
            return 1
        client.submit([item])
        if not args.wait:  # wait only for the acknowledgement (PENDING or a rejection)
            deadline = time.monotonic() + min(args.timeout, 10.0)
            while tx.id not in client.fates and time.monotonic() < deadline:
                client.poll(0.2)
            fate = client.fates.get(tx.id)
            print(fate.describe() if fate else "submitted; no acknowledgement yet")
            if fate is not None and fate.status is ReceiptStatus.REJECTED:
                return 1
        else:
            client.wait_final([tx.id], timeout=args.timeout, resend=[item])
            fate = client.fates.get(tx.id)
            if fate is None or not fate.final:
                said = fate.describe() if fate else "not acknowledged"
                print(f"no decision within {args.timeout:g} s ({said})")
                return 1
            print(fate.describe())
            if fate.status is ReceiptStatus.REJECTED:
                return 1
    if args.nonce is None:
        nonce_file.write_text(f"{nonce + 1}\n")
    return 0
