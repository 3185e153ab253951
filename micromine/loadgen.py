"""Load generator: a steady stream of signed transactions, some deliberately invalid.

Valid transactions come from funded sender accounts whose nonces it tracks itself.
Invalid ones cover every rule a device or the ledger checks; they are built so that
none can disturb a valid sender's nonce sequence (bad signatures come from separate
funded accounts; the rest are refused at admission, which leaves no trace).

It reports, as JSON, what it submitted and what became of it: committed counts come
from the blocks themselves, latencies from submission to the COMMITTED receipt.
"""

import argparse
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from micromine.client import LedgerClient
from micromine.logs import configure_logging
from micromine.mqtt import Login, add_link_arguments, link_settings_from
from micromine.protocol.block import Block
from micromine.protocol.codec import encode, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.kinds import ReceiptStatus
from micromine.protocol.messages import Transaction
from micromine.protocol.validation import decode_transaction

log = structlog.get_logger("micromine.loadgen")

INVALID_KINDS = (
    "bad_signature", "wrong_chain", "expired", "bad_amount",
    "overspend", "reused_nonce", "malformed", "oversized",
)  # fmt: skip
BUNDLE_INTERVAL_S = 0.1
RESEND_AFTER_S = 5.0  # an item no ledger has answered (lost on the way) is sent again
# An item a ledger holds as PENDING is in its mempool (and in SQLite): sending it again
# only adds work.  Resending every PENDING item after 5 s turned a latency above 5 s
# into twice the offered load, and the pipeline collapsed.
RESEND_PENDING_AFTER_S = 30.0
RESEND_SCAN_S = 1.0
EXPIRY_MS = 600_000


def sender_key(index: int) -> KeyPair:
    """The devnet's funded senders: derived, so genesis and load agree without files."""
    return KeyPair(sha256(b"micromine devnet sender %d" % index))


def bad_sender_key(index: int) -> KeyPair:
    return KeyPair(sha256(b"micromine devnet bad sender %d" % index))


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class LoadState:
    chain_id: str
    senders: list[KeyPair]
    bad_senders: list[KeyPair]
    rng: random.Random
    nonces: dict[bytes, int] = field(default_factory=dict)
    submitted_at: dict[bytes, float] = field(default_factory=dict)
    unsettled: dict[bytes, bytes] = field(default_factory=dict)  # id -> item, until final
    last_sent: dict[bytes, float] = field(default_factory=dict)  # of unsettled items
    valid: set[bytes] = field(default_factory=set)
    invalid: set[bytes] = field(default_factory=set)
    invalid_kinds: Counter[str] = field(default_factory=Counter)
    committed_in_blocks: dict[bytes, int] = field(default_factory=dict)
    blocks: int = 0
    _next_sender: int = 0
    _next_bad: int = 0
    next_resend_scan: float = 0.0  # monotonic time of the next resend_unsettled scan

    def transaction(self, sender: KeyPair, nonce: int, now_ms: int, **changes: Any) -> Transaction:
        recipient = self.senders[self.rng.randrange(len(self.senders))].public
        if recipient == sender.public:
            recipient = sha256(b"sink" + sender.public)
        tx = Transaction(
            self.chain_id, sender.public, recipient, self.rng.randint(1, 100), 1, nonce,
            now_ms + EXPIRY_MS, "load",
        )  # fmt: skip
        return sign(replace(tx, **changes), sender) if changes else sign(tx, sender)

    def next_valid(self, now_ms: int) -> bytes:
        sender = self.senders[self._next_sender % len(self.senders)]
        self._next_sender += 1
        nonce = self.nonces.get(sender.public, 0)
        self.nonces[sender.public] = nonce + 1
        return encode(self.transaction(sender, nonce, now_ms))

    def next_invalid(self, kind: str, now_ms: int) -> bytes:
        sender = self.senders[self.rng.randrange(len(self.senders))]
        nonce = self.nonces.get(sender.public, 0)
        if kind == "bad_signature":
            bad = self.bad_senders[self._next_bad % len(self.bad_senders)]
            self._next_bad += 1
            tx = self.transaction(bad, 0, now_ms)
            return encode(replace(tx, signature=sha256(tx.signature) * 2))
        if kind == "wrong_chain":
            return encode(self.transaction(sender, nonce, now_ms, chain_id="wrong-chain"))
        if kind == "expired":
            return encode(self.transaction(sender, nonce, now_ms, expiry_ms=now_ms - 60_000))
        if kind == "bad_amount":
            return encode(self.transaction(sender, nonce, now_ms, amount=0))
        if kind == "overspend":
            return encode(self.transaction(sender, nonce, now_ms, amount=10**15))
        if kind == "reused_nonce" and nonce > 0:
            return encode(self.transaction(sender, nonce - 1, now_ms, memo="replay"))
        if kind == "oversized":
            return encode(self.transaction(sender, nonce, now_ms)) + bytes(600)
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 80)))

    def on_block(self, block: Block) -> None:
        self.blocks += 1
        for tx in block.txs:
            self.committed_in_blocks[tx.id] = block.height


def run_load(args: argparse.Namespace) -> dict[str, Any]:
    state = LoadState(
        chain_id=args.chain,
        senders=[sender_key(i) for i in range(args.senders)],
        bad_senders=[bad_sender_key(i) for i in range(args.bad_senders)],
        rng=random.Random(args.seed),
    )
    mode, tls = link_settings_from(args, os.environ)
    login = Login(state.senders[0], args.chain, mode)  # any funded sender's key will do
    client = LedgerClient(
        args.broker, args.chain, watch_blocks=True, on_block=state.on_block, login=login, tls=tls
    )
    with client:
        client.connect(timeout=30)
        started = time.monotonic()
        try:
            submit_for(args, state, client, started)
            log.info("submission finished; settling", submitted=len(state.submitted_at))
            settle_deadline = time.monotonic() + args.settle
            while time.monotonic() < settle_deadline:
                if all(i in client.fates and client.fates[i].final for i in state.submitted_at):
                    break
                resend_unsettled(state, client)
                client.poll(0.2)
        except KeyboardInterrupt:  # SIGINT, or SIGTERM from devnet: report what we have
            log.info("interrupted; reporting so far", submitted=len(state.submitted_at))
        return summarise(state, client, started)


def submit_for(
    args: argparse.Namespace, state: LoadState, client: LedgerClient, started: float
) -> None:
    """Submit at ``args.tx_rate`` for ``args.duration`` seconds, in 100 ms bundles.

    One bundle per BUNDLE_INTERVAL_S at most: ``poll`` returns as soon as a receipt
    arrives, and sending whatever was due on every return made, under a stream of
    receipts, hundreds of tiny Submissions a second, past the broker's publish quota
    for a client (whose refusals left nonce gaps that got every later transaction of
    those senders rejected)."""
    sent = 0
    next_bundle = started
    while (now := time.monotonic()) - started < args.duration:
        due = int((now - started) * args.tx_rate) + 1 - sent
        if due > 0 and now >= next_bundle:
            submit_bundle(state, client, due, args.invalid_fraction)
            sent += due
            next_bundle = now + BUNDLE_INTERVAL_S
        resend_unsettled(state, client)
        client.poll(max(0.0, next_bundle - time.monotonic()))


def submit_bundle(state: LoadState, client: LedgerClient, count: int, fraction: float) -> None:
    now_ms = time.time_ns() // 1_000_000
    items = []
    for _ in range(count):
        if state.rng.random() < fraction:
            kind = INVALID_KINDS[state.rng.randrange(len(INVALID_KINDS))]
            item = state.next_invalid(kind, now_ms)
            state.invalid_kinds[kind] += 1
            item_id = _item_id(item)
            state.invalid.add(item_id)
        else:
            item = state.next_valid(now_ms)
            item_id = _item_id(item)
            state.valid.add(item_id)
        state.submitted_at[item_id] = state.last_sent[item_id] = time.monotonic()
        state.unsettled[item_id] = item
        items.append(item)
    client.submit(items)


def _item_id(item: bytes) -> bytes:
    """A transaction's id, or SHA-256 of an item that does not decode (as receipts do)."""
    decoded = decode_transaction(item)
    return sha256(item) if not isinstance(decoded, Transaction) else decoded.id


def resend_unsettled(state: LoadState, client: LedgerClient) -> None:
    """Send again, in one Submission per scan and at most one scan a second, what has no
    final receipt yet.  Scanning on every poll sent a message per item as each one came
    due: beyond the broker's publish quota for a client, which dropped whole bundles
    (and the nonce gaps they left had every later transaction of those senders rejected)."""
    now = time.monotonic()
    if now < state.next_resend_scan:
        return
    state.next_resend_scan = now + RESEND_SCAN_S
    fates = client.fates
    for item_id in [i for i in state.unsettled if i in fates and fates[i].final]:
        del state.unsettled[item_id]
        del state.last_sent[item_id]
    stale = [
        i
        for i in state.unsettled
        if now - state.last_sent[i] > (RESEND_PENDING_AFTER_S if i in fates else RESEND_AFTER_S)
    ]
    if stale:
        log.info("resubmitting transactions without a final receipt", count=len(stale))
        client.submit([state.unsettled[i] for i in stale])
        for item_id in stale:
            state.last_sent[item_id] = now


def summarise(state: LoadState, client: LedgerClient, started: float) -> dict[str, Any]:
    fates = client.fates
    committed = [i for i in state.valid if i in state.committed_in_blocks]
    latencies = [
        fates[i].at - state.submitted_at[i]
        for i in committed
        if i in fates and fates[i].status is ReceiptStatus.COMMITTED
    ]
    rejected = [
        i for i in state.submitted_at if i in fates and fates[i].status is ReceiptStatus.REJECTED
    ]
    last_commit = max((fates[i].at for i in committed if i in fates), default=time.monotonic())
    span = max(1e-9, last_commit - started)
    reasons = Counter(client.fates[i].describe() for i in rejected)
    return {
        "submitted": len(state.valid),
        "committed": len(committed),
        "rejected": len(rejected),
        "valid_rejected": sum(1 for i in rejected if i in state.valid),
        "unresolved": sum(1 for i in state.submitted_at if i not in fates or not fates[i].final),
        "invalid_submitted": len(state.invalid),
        "invalid_committed": sum(1 for i in state.invalid if i in state.committed_in_blocks),
        "invalid_kinds": dict(state.invalid_kinds),
        "rejections": dict(reasons),
        "blocks_seen": state.blocks,
        "tps": round(len(committed) / span, 2),
        "p50_latency_s": round(percentile(latencies, 0.50), 3),
        "p99_latency_s": round(percentile(latencies, 0.99), 3),
    }


def add_loadgen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True)
    parser.add_argument("--chain", default="devnet")
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--bad-senders", type=int, default=64)
    parser.add_argument("--tx-rate", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--invalid-fraction", type=float, default=0.0)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path, help="write the JSON summary here too")
    add_link_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="micromine-loadgen", description=__doc__)
    add_loadgen_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging("info")
    signal.signal(signal.SIGTERM, _interrupt)
    report = run_load(args)
    text = json.dumps(report)
    if args.report:
        args.report.write_text(text + "\n")
    print(text, file=sys.stdout)
    return 0


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
