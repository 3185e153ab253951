"""``micromine keys new|show|broker-password``: Ed25519 key files."""

import argparse
import sys
from pathlib import Path


def add_to(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    keys = commands.add_parser("keys", help="create or show Ed25519 key files")
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


def public_key_from_hex(text: str, flag: str) -> bytes:
    """A public key given on the command line as hex; ValueError names ``flag``."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not hex") from None
    if len(key) != 32:
        raise ValueError(f"{flag}: a public key is 32 bytes (64 hex characters)")
    return key
