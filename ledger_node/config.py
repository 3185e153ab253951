"""A ledger node's settings: one typed object, from flags, then environment, then defaults."""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from micromine.common.mqtt import (
    LoginMode,
    TlsFiles,
    add_link_arguments,
    link_settings_from,
    parse_broker_url,
)
from micromine.ledger_node.core.ledger import DEFAULT_AUDIT_RATE, DEFAULT_COMMIT_AUDIT_RATE

ENV = {
    "broker": "MICROMINE_BROKER",
    "key": "MICROMINE_LEDGER_KEY",
    "genesis": "MICROMINE_GENESIS",
    "db": "MICROMINE_DB",
}


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    broker_url: str
    key_path: Path
    genesis_path: Path
    db_path: Path
    tick_ms: int = 50
    status_interval_s: float = 2.0
    log_level: str = "info"
    log_json: bool | None = None
    login: LoginMode = LoginMode.TOKEN
    tls: TlsFiles | None = None  # CA, client certificate and key for mqtts:// / wss://
    # The share of quorum-accepted transactions this node checks itself before it
    # proposes them, for devices with a perfect record; more for devices whose judgements
    # disagreed with decided outcomes (devices.audit_probability).  A local setting: each
    # node audits on its own, so nodes may differ, and block validity never depends on it.
    audit_rate: float = DEFAULT_AUDIT_RATE
    # The share of committed transactions this node checks itself after the commit, off
    # the block's path, besides every one whose verdicts never reached its tally: a
    # forgery found there cannot be undone, but its judges are banned (commit.py).
    commit_audit_rate: float = DEFAULT_COMMIT_AUDIT_RATE

    def __post_init__(self) -> None:
        address = parse_broker_url(self.broker_url)  # raises ValueError with the reason
        if self.tls is not None and not address.tls:
            raise ValueError(f"--tls-* files need a TLS broker URL (mqtts://), not {address.url}")
        if not 5 <= self.tick_ms <= 1000:
            raise ValueError("tick_ms must be 5..1000")
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError("audit_rate must be 0..1")
        if not 0.0 <= self.commit_audit_rate <= 1.0:
            raise ValueError("commit_audit_rate must be 0..1")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LedgerConfig":
        def pick(name: str, default: str | None = None) -> str:
            value = getattr(args, name, None) or os.environ.get(ENV[name]) or default
            if value is None:
                raise ValueError(f"--{name} is required (or set {ENV[name]})")
            return value

        login, tls = link_settings_from(args, os.environ)
        return cls(
            broker_url=pick("broker", "mqtt://127.0.0.1:1883"),
            key_path=Path(pick("key")),
            genesis_path=Path(pick("genesis")),
            db_path=Path(pick("db")),
            tick_ms=args.tick_ms,
            log_level=args.log_level,
            log_json=True if args.log_json else None,
            login=login,
            tls=tls,
            audit_rate=args.audit_rate,
            commit_audit_rate=args.commit_audit_rate,
        )


def add_ledger_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help=f"broker URL (env {ENV['broker']}; default local)")
    parser.add_argument("--key", help=f"this node's key file (env {ENV['key']})")
    parser.add_argument("--genesis", help=f"genesis JSON (env {ENV['genesis']})")
    parser.add_argument("--db", help=f"SQLite file (env {ENV['db']})")
    parser.add_argument("--tick-ms", type=int, default=50, help="core clock period")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--log-json", action="store_true", help="JSON logs even on a terminal")
    parser.add_argument(
        "--audit-rate",
        type=float,
        default=DEFAULT_AUDIT_RATE,
        help="share of quorum-accepted transactions this node checks itself (0..1; more "
        f"for devices with a poor record; default {DEFAULT_AUDIT_RATE})",
    )
    parser.add_argument(
        "--commit-audit-rate",
        type=float,
        default=DEFAULT_COMMIT_AUDIT_RATE,
        help="share of committed transactions this node checks after the commit, to ban "
        f"the judges of a forgery that got through (0..1; default {DEFAULT_COMMIT_AUDIT_RATE})",
    )
    add_link_arguments(parser)
