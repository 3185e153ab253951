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
        recipient = public_key_from_hex(args.to, "--to")
        expiry_ms = time.time_ns() // 1_000_000 + int(args.expires_in * 1000)

        def signed(nonce: int) -> Transaction:
            return sign(Transaction(
                args.chain, key.public, recipient, args.amount, args.fee, nonce, expiry_ms,
                args.memo,
            ), key)  # fmt: skip

        first = signed(nonce)  # a bad field fails here, before any connection
    except (KeyFileError, ValueError, DecodeError) as exc:
        print(f"micromine tx send: {exc}", file=sys.stderr)
        return 2
    print(f"tx {first.id.hex()} nonce {nonce}", flush=True)
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
