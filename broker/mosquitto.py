"""``micromine broker mosquitto-config``: the access policy of protocol/acl.py for Mosquitto.

Mosquitto (2.x, without a plugin) authenticates against a password file of salted hashes
and authorises with an ACL file; it cannot check a signed, short-lived token.  So each key
logs in with its *static password* (``protocol.auth.compute_static_password``): its own
signature, which the key holder can compute at any time and anyone can check against the
public key, so an operator enrols a device's password only after verifying it.  The
password file stores PBKDF2-SHA512 hashes in the format ``mosquitto_passwd`` writes
(``$7$<iterations>$<salt>$<hash>``).  What this loses against the embedded broker (no
expiry, no replay protection) is in docs/DEPLOY.md.

The ACL file is generated from ``acl.TABLE`` so both brokers enforce one policy:

* the lines before any ``user`` line are what anonymous clients get (Mosquitto's rule);
* each key in the password file gets a ``user`` section with the grants of its role that
  do not name its own key (an ANY or ALL scope becomes ``+``);
* a key's own topics (OWN scope) are ``pattern`` lines with ``%u`` (username = key hex).

Verified against mosquitto 2.0.11: a ``pattern`` line applies to every client, anonymous
ones included, unless it contains ``%u`` (then never to a client without a username), so
only OWN grants are patterns.  The device patterns therefore also apply to ledger and
operator keys (a ledger node could publish a verdict under its own key): a superset of
the embedded broker's policy, stated in docs/DEPLOY.md.  Mosquitto grants any SUBSCRIBE
and filters each delivery by the ``read`` rules instead of refusing the filter.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from micromine.broker.config import add_homeassistant_argument
from micromine.common.genesis_file import load_genesis
from micromine.protocol import topics
from micromine.protocol.acl import (
    HOMEASSISTANT_COMPONENTS,
    HOMEASSISTANT_LEAVES,
    TABLE,
    Access,
    Policy,
    Role,
    Scope,
)
from micromine.protocol.auth import compute_static_password, is_static_password_valid
from micromine.protocol.limits import MAX_ANY_MESSAGE_BYTES
from micromine.protocol.quota import MQTT_OVERHEAD
from micromine.protocol.topics import Channel

__all__ = [
    "acl_text",
    "add_mosquitto_arguments",
    "conf_text",
    "password_line",
    "run_mosquitto_config",
]

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 uses
MAX_QUEUED_MESSAGES = 10_000  # per client, waiting for a slow subscriber; then dropped
MAX_QUEUED_BYTES = 256 * 1024 * 1024
SALT_BYTES = 12


def password_line(username: str, password: str, salt: bytes | None = None) -> str:
    """One password-file line, as ``mosquitto_passwd -b`` would write it."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    encoded = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"{username}:$7${PBKDF2_ITERATIONS}${encoded[0]}${encoded[1]}"


def _topic(chain_id: str, channel: Channel, key_level: str) -> str:
    return f"{topics.ROOT}/{chain_id}/" + channel.value.pattern.replace("+", key_level)


def _lines(chain_id: str, role: Role, own: str | None) -> Iterable[str]:
    """``topic`` (own is a key hex: that key's section) or ``pattern`` (own is None) lines."""
    for channel, rule in TABLE.items():
        for access, grants in ((Access.PUBLISH, rule.publish), (Access.SUBSCRIBE, rule.subscribe)):
            scope = grants.get(role)
            if scope is None:
                continue
            mode = "write" if access is Access.PUBLISH else "read"
            keyed = "+" in channel.value.pattern
            if own is None:  # the %u patterns: only a key's own topics
                if keyed and scope is Scope.OWN:
                    yield f"pattern {mode} {_topic(chain_id, channel, '%u')}"
            elif not keyed or scope is not Scope.OWN:
                yield f"topic {mode} {_topic(chain_id, channel, '+')}"
            elif role is not Role.DEVICE:  # a ledger's own topics; devices' are patterns
                yield f"topic {mode} {_topic(chain_id, channel, own)}"


def acl_text(policy: Policy, users: Iterable[bytes], *, allow_anonymous: bool) -> str:
    chain = policy.chain_id
    out = [f"# micromine ACL for chain {chain}: generated from protocol/acl.py TABLE", ""]
    out.append("# anonymous clients (no username): the lines before the first user line")
    ha = policy.homeassistant_prefix
    ha_read = [] if ha is None else [f"topic read {ha}/#"]
    if allow_anonymous:
        out += sorted(set(_lines(chain, Role.ANONYMOUS, own="-"))) + ha_read
    out += ["", "# every key's own topics (%u is the username: the key in lowercase hex)"]
    out += sorted(set(_lines(chain, Role.DEVICE, own=None)))
    if ha is not None:  # Home Assistant discovery (protocol/acl.py)
        out += [f"pattern write {ha}/{component}/micromine_%u/+/config"
                for component in HOMEASSISTANT_COMPONENTS]  # fmt: skip
        out += [f"pattern write {ha}/micromine/%u/{leaf}" for leaf in HOMEASSISTANT_LEAVES]
    for key in sorted(users):
        role = policy.role_of(key)
        out += ["", f"# {role.value}", f"user {key.hex()}"]
        out += sorted(set(_lines(chain, role, own=key.hex()))) + ha_read
    return "\n".join(out) + "\n"


def conf_text(args: argparse.Namespace, out_dir: Path) -> str:
    lines = [
        "# micromine: Mosquitto 2.x configuration (micromine broker mosquitto-config)",
        "per_listener_settings false",
        f"allow_anonymous {'false' if args.no_anonymous else 'true'}",
        f"password_file {out_dir / 'passwd'}",
        f"acl_file {out_dir / 'acl'}",
        "",
        "# Hostile input (docs/SECURITY.md section 7).  Mosquitto applies one size to every",
        "# client and topic, and has no publish rate limit: the ledger nodes' own caps apply.",
        f"message_size_limit {MAX_ANY_MESSAGE_BYTES}",
        f"max_packet_size {MAX_ANY_MESSAGE_BYTES + MQTT_OVERHEAD}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
    ]
    if args.port:
        lines += ["", f"listener {args.port} {args.host}", "protocol mqtt"]
    if args.tls_cert:
        lines += ["", f"listener {args.tls_port} {args.host}", "protocol mqtt"]
        lines += [f"certfile {args.tls_cert.resolve()}", f"keyfile {args.tls_key.resolve()}"]
        if args.tls_ca:
            lines += [f"cafile {args.tls_ca.resolve()}", "require_certificate false"]
    return "\n".join(lines) + "\n"


def add_mosquitto_arguments(parser: argparse.ArgumentParser) -> None:
    add_homeassistant_argument(parser)
    parser.add_argument("--genesis", type=Path, required=True, help="the chain's genesis file")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--host", default="127.0.0.1", help="listener address")
    parser.add_argument("--port", type=int, default=1883, help="plain MQTT port; 0: none")
    parser.add_argument("--tls-port", type=int, default=8883, help="MQTT over TLS port")
    parser.add_argument("--tls-cert", type=Path, help="PEM server certificate (enables TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM key of --tls-cert")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA for client certificates")
    parser.add_argument("--no-anonymous", action="store_true", help="refuse clients without login")
    parser.add_argument(
        "--key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a key file whose static password to enrol (repeatable)",
    )
    parser.add_argument(
        "--password",
        action="append",
        default=[],
        metavar="PUBHEX=PASSWORD",
        help="an enrolled key's static password (repeatable; checked)",
    )
    parser.add_argument(
        "--passwords",
        type=Path,
        metavar="FILE",
        help="lines of 'PUBHEX PASSWORD', e.g. collected at enrolment",
    )
    parser.add_argument(
        "--epoch",
        type=int,
        default=0,
        help="static password generation (raise it to rotate every password)",
    )


def _collect_passwords(args: argparse.Namespace, chain_id: str) -> dict[bytes, str]:
    from micromine.common.keyfile import load_key  # noqa: PLC0415

    passwords: dict[bytes, str] = {}
    for path in args.key:
        key = load_key(path)
        passwords[key.public] = compute_static_password(key, chain_id, args.epoch)
    entries = [entry.replace("=", " ", 1) for entry in args.password]
    if args.passwords is not None:
        entries += args.passwords.read_text().splitlines()
    for entry in entries:
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        key_hex, _, password = entry.strip().partition(" ")
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            raise ValueError(f"{key_hex[:20]!r} is not a public key in hex") from None
        # [REJECT] Only the key's own signature is enrolled: nobody can enrol a password
        # for a key they do not hold.
        if len(key) != 32 or not is_static_password_valid(
            key, chain_id, password.strip(), args.epoch
        ):
            raise ValueError(f"the password given for {key_hex[:16]}... is not that key's")
        passwords[key] = password.strip()
    return passwords


def run_mosquitto_config(args: argparse.Namespace) -> int:
    from micromine.broker.access import policy_from_genesis  # noqa: PLC0415
    from micromine.common.keyfile import KeyFileError  # noqa: PLC0415
    from micromine.protocol.genesis import GenesisError  # noqa: PLC0415

    try:
        genesis = load_genesis(args.genesis)
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if not args.port and not args.tls_cert:
            raise ValueError("no listener: give --port or --tls-cert/--tls-key")
        passwords = _collect_passwords(args, genesis.chain_id)
    except (GenesisError, KeyFileError, ValueError, OSError) as exc:
        print(f"micromine broker mosquitto-config: {exc}", file=sys.stderr)
        return 2
    policy = policy_from_genesis(genesis, homeassistant_prefix=args.homeassistant_prefix)
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    passwd = out_dir / "passwd"
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(password_line(k.hex(), p) + "\n" for k, p in sorted(passwords.items()))
    (out_dir / "acl").write_text(acl_text(policy, passwords, allow_anonymous=not args.no_anonymous))
    (out_dir / "mosquitto.conf").write_text(conf_text(args, out_dir))
    for key in (*genesis.ledger_nodes, *genesis.operators):
        if key not in passwords:
            role = policy.role_of(key).value
            print(
                f"note: {role} {key.hex()[:16]}... has no password: it cannot log in",
                file=sys.stderr,
            )
    print(
        f"wrote {out_dir}/mosquitto.conf, passwd ({len(passwords)} keys) and acl; "
        f"run: mosquitto -c {out_dir / 'mosquitto.conf'}"
    )
    return 0
