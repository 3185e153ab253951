"""`micromine devices approve|revoke|list`: an operator's enrollment decisions.

approve / revoke sign a DeviceApproval with an operator key (one listed in genesis
``operators``), publish it on ``approvals/<operator hex>`` and wait until a committed
block records it, which is when it takes effect (docs/CONSENSUS.md, "Device
assignment").  The approval is re-published every few seconds until then: MQTT may
drop it, and the ledger nodes ignore copies they already hold.

list reads a ledger node's SQLite database (read-only, safe while the node runs): every
registered device with the height that registered it, and each device's latest
approval or revocation.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPUBLISH_S = 3.0


def add_to(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from micromine.common.mqtt import add_link_arguments

    devices = commands.add_parser("devices", help="approve, revoke or list devices (operators)")
    actions = devices.add_subparsers(title="devices commands", metavar="ACTION", required=True)
    for name, approve, what in (
        ("approve", True, "approve a device key (enrollment policy 'approved')"),
        ("revoke", False, "revoke a device key: no more work, verdicts or rewards"),
    ):
        command = actions.add_parser(name, help=what)
        command.add_argument("device", metavar="PUBHEX", help="the device's public key, hex")
        command.add_argument("--key", type=Path, required=True,
                             help="the operator's key file (in genesis operators)")  # fmt: skip
        command.add_argument("--broker", default="mqtt://127.0.0.1:1883")
        command.add_argument("--chain", default="devnet")
        command.add_argument("--timeout", type=float, default=60.0,
                             help="seconds to wait for a block that records it")  # fmt: skip
        command.add_argument("--no-wait", dest="wait", action="store_false",
                             help="publish once and return")  # fmt: skip
        add_link_arguments(command)
        command.set_defaults(run=cmd_devices_decide, approve=approve)
    listing = actions.add_parser("list", help="registered devices and approvals (from a db)")
    listing.add_argument("--db", type=Path, required=True, help="a ledger node's SQLite file")
    listing.add_argument("--json", action="store_true", help="one JSON object per device")
    listing.set_defaults(run=cmd_devices_list)


def cmd_devices_decide(args: argparse.Namespace) -> int:
    from micromine.common.keyfile import KeyFileError, load_key
    from micromine.common.mqtt import Incoming, LinkConfig, Login, MqttLink, link_settings_from
    from micromine.protocol import topics
    from micromine.protocol.block import Block
    from micromine.protocol.codec import decode, encode, sign
    from micromine.protocol.enrollment import DeviceApproval
    from micromine.protocol.errors import DecodeError

    verb = "approve" if args.approve else "revoke"
    try:
        device = bytes.fromhex(args.device)
        if len(device) != 32:
            raise ValueError("PUBHEX must be 64 hex digits (a 32-byte public key)")
        login_mode, tls = link_settings_from(args, os.environ)
        key = load_key(args.key)
        approval = sign(
            DeviceApproval(args.chain, key.public, device, args.approve, time.time_ns() // 10**6),
            key,
        )
    except (KeyFileError, ValueError, DecodeError) as exc:
        print(f"micromine devices {verb}: {exc}", file=sys.stderr)
        return 2
    payload = encode(approval)
    topic = topics.approvals(args.chain, key.public)
    link = MqttLink(LinkConfig(
        client_id=f"operator-{time.time_ns() % 10**9}", broker_url=args.broker,
        subscriptions=((topics.blocks(args.chain), 1),),
        login=Login(key, args.chain, login_mode), tls=tls,
    ))  # fmt: skip
    with link:
        if not link.wait_connected(min(args.timeout, 30)):
            print(f"micromine devices {verb}: cannot reach {args.broker}", file=sys.stderr)
            return 1
        link.publish(topic, payload, 1, False)
        print(f"{verb} {args.device[:16]}…: approval {approval.id.hex()[:16]} published")
        if not args.wait:
            return 0
        deadline = time.monotonic() + args.timeout
        next_publish = time.monotonic() + REPUBLISH_S
        while time.monotonic() < deadline:
            if time.monotonic() >= next_publish:
                link.publish(topic, payload, 1, False)
                next_publish = time.monotonic() + REPUBLISH_S
            item = link.get(0.5)
            if not isinstance(item, Incoming):
                continue
            try:
                block = decode(item.payload, Block)
            except DecodeError:
                continue  # anyone may publish on an open broker's block topic
            if any(recorded.id == approval.id for recorded in block.approvals):
                print(f"recorded in block {block.height} ({block.hash.hex()[:16]})")
                return 0
    print(
        f"micromine devices {verb}: no block recorded it within {args.timeout:g} s (is "
        f"{key.public.hex()[:16]}… an operator in genesis, and its timestamp after the "
        "device's last decision?)",
        file=sys.stderr,
    )
    return 1


def read_devices(db_path: Path) -> list[dict[str, Any]]:
    """Every device the database knows, with its registration height, its latest
    approval or revocation (either may be missing) and its ban (fraud proofs), if any."""
    from micromine.ledger_node.storage import ChainReader, StorageError

    try:
        with ChainReader.open(db_path) as chain:
            registered = chain.registry()
            decisions = {
                device: (height, int(approved), stamp, operator)
                for device, height, approved, stamp, operator in chain.approval_decisions()
            }
            bans = chain.bans()
    except StorageError as exc:
        raise ValueError(str(exc)) from None
    rows = []
    for device in sorted({bytes(d) for d in registered} | set(decisions) | set(bans)):
        row: dict[str, Any] = {"device": device.hex(), "registered_at": registered.get(device)}
        if device in decisions:
            height, approved, stamp, operator = decisions[device]
            row.update(
                status="approved" if approved else "revoked",
                decided_at=height,
                decided_ms=stamp,
                operator=operator.hex(),
            )
        else:
            row["status"] = "registered"
        if device in bans:  # for good, whatever the operators decide
            row.update(status="banned", banned_at=bans[device])
        rows.append(row)
    return rows


def cmd_devices_list(args: argparse.Namespace) -> int:
    try:
        rows = read_devices(args.db)
    except ValueError as exc:
        print(f"micromine devices list: {exc}", file=sys.stderr)
        return 2
    for row in rows:
        if args.json:
            print(json.dumps(row))
            continue
        registered = row["registered_at"]
        where = f"registered at {registered}" if registered is not None else "not registered"
        at = row.get("banned_at", row.get("decided_at"))
        decided = f" (at {at})" if at is not None else ""
        print(f"{row['device']}  {row['status']}{decided}  {where}")
    if not args.json:
        print(f"{len(rows)} devices", file=sys.stderr)
    return 0
