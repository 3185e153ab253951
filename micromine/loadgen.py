"""Load generator: a steady stream of signed transactions, some deliberately invalid.

Valid transactions come from funded sender accounts whose nonces it tracks itself.
Invalid ones cover every rule a device or the ledger checks; they are built so that
none can disturb a valid sender's nonce sequence (bad signatures come from separate
funded accounts; the rest are refused at admission, which leaves no trace).

It reports, as JSON, what it submitted and what became of it: committed counts come
from the blocks it sees and from COMMITTED receipts (a broker restart can hide a block
from it), latencies from submission to the COMMITTED receipt.

No sender jams on one lost message (docs/PROTOCOL.md section 8.1): a ledger node that
lacks a sender's earlier nonce holds the later ones and says which nonce it waits for
(HELD NONCE_GAP), and the generator sends that nonce's transaction again, or, if it
never made one or it was rejected (a ``--state`` file ahead of the chain, say), a new
transfer with that nonce; a REJECTED BAD_NONCE naming the next nonce moves its counter
up to it (a ``--state`` file behind the chain).

Longer than 400 lines because pacing, resends and the repair of nonce gaps act on one
sender state; the CLI and the client are elsewhere.
"""

import argparse
import json
import os
import random
import resource
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from micromine.client import Fate, LedgerClient
from micromine.common.keyfile import KeyFileError, load_key
from micromine.common.logs import configure_logging
from micromine.common.mqtt import Login, add_link_arguments, link_settings_from
from micromine.common.signals import StopSignals, until_stopped
from micromine.protocol.block import Block
from micromine.protocol.codec import encode, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.kinds import Reason, ReceiptStatus
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
MAX_FILL = 256  # new transfers made for one sender's missing nonces in one scan
EXPIRY_MS = 600_000
SENDER_BALANCE = 10**12
BAD_SENDER_BALANCE = 10**6
BAD_SENDERS = 64


def sender_key(index: int) -> KeyPair:
    """The devnet's funded senders: derived, so genesis and load agree without files."""
    return KeyPair(sha256(b"micromine devnet sender %d" % index))


def bad_sender_key(index: int) -> KeyPair:
    return KeyPair(sha256(b"micromine devnet bad sender %d" % index))


def load_balances(senders: int) -> dict[bytes, int]:
    """The genesis balances the load generator needs: ``senders`` funded senders and the
    accounts its bad signatures come from.  Their keys are derived from public strings,
    so anyone can spend these balances: for devnet and compose clusters, never a real chain."""
    balances = {bad_sender_key(i).public: BAD_SENDER_BALANCE for i in range(BAD_SENDERS)}
    balances.update({sender_key(i).public: SENDER_BALANCE for i in range(senders)})
    return balances


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
    presigned: deque[bytes] = field(default_factory=deque)  # valid items made in advance
    submit_span_s: float = 0.0  # how long submitting took (the offered rate's divisor)
    _next_sender: int = 0
    _next_bad: int = 0
    next_resend_scan: float = 0.0  # monotonic time of the next resend_unsettled scan
    meta: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)  # valid id -> sender, nonce
    by_nonce: dict[tuple[bytes, int], list[bytes]] = field(default_factory=dict)  # -> valid ids
    missing: dict[bytes, int] = field(default_factory=dict)  # sender -> nonce a ledger asks for
    fillers: int = 0  # transfers made for nonces a ledger said were missing

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
        return self.valid_transfer(sender, nonce, now_ms)

    def valid_transfer(self, sender: KeyPair, nonce: int, now_ms: int) -> bytes:
        tx = self.transaction(sender, nonce, now_ms)
        self.meta[tx.id] = (sender.public, nonce)
        self.by_nonce.setdefault((sender.public, nonce), []).append(tx.id)
        return encode(tx)

    def on_receipt(self, item_id: bytes, fate: Fate) -> None:
        """Note what a receipt asks of one of our senders (PROTOCOL.md 8.1)."""
        known = self.meta.get(item_id)
        wanted = fate.missing_nonce
        if known is None or wanted is None:
            return
        sender, nonce = known
        if fate.status is ReceiptStatus.REJECTED and fate.reason is Reason.BAD_NONCE:
            # The nonce was used before us: number new transfers from the chain's next.
            self.nonces[sender] = max(self.nonces.get(sender, 0), wanted)
        elif wanted < nonce:
            self.missing[sender] = min(self.missing.get(sender, wanted), wanted)

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


def run_load(args: argparse.Namespace, stop: StopSignals) -> dict[str, Any]:
    """Submit, settle and report.  A stop signal (SIGINT, or SIGTERM from devnet, systemd
    or ``timeout``) at any point after the settings are read ends the run early; the
    report then says what happened so far, with ``interrupted`` true."""
    state = LoadState(
        chain_id=args.chain,
        senders=[sender_key(args.first_sender + i) for i in range(args.senders)],
        bad_senders=[bad_sender_key(i) for i in range(args.bad_senders)],
        rng=random.Random(args.seed),
        nonces=read_nonces(args.state) if args.state else {},
    )
    mode, tls = link_settings_from(args, os.environ)
    # any key may submit: a funded sender's, unless the broker knows another (Mosquitto
    # knows only the keys whose static passwords were enrolled)
    try:
        login_key = load_key(args.login_key) if args.login_key else state.senders[0]
    except KeyFileError as exc:
        raise LoadSettingError(f"--login-key: {exc}") from None
    login = Login(login_key, args.chain, mode)
    client = LedgerClient(
        args.broker, args.chain, watch_blocks=True, on_block=state.on_block,
        on_receipt=state.on_receipt, login=login, tls=tls,
    )  # fmt: skip
    started = time.monotonic()
    interrupted = False
    with client:
        try:
            try:
                if args.presign:  # signing costs more than sending: out of the paced loop
                    now_ms = time.time_ns() // 1_000_000
                    count = int(args.tx_rate * args.duration) + 1
                    state.presigned.extend(state.next_valid(now_ms) for _ in range(count))
                client.connect(timeout=30)
                log.info("load started", tx_rate=args.tx_rate, duration=args.duration)
                started = time.monotonic()
                submit_for(args, state, client, started)
                log.info("submission finished; settling", submitted=len(state.submitted_at))
                settle(args, state, client)
            finally:
                stop.disarm()  # from here on a signal cannot cut the report short
        except KeyboardInterrupt:  # the first SIGINT or SIGTERM: report what we have
            interrupted = True
            log.info("interrupted; reporting so far", submitted=len(state.submitted_at))
        return {**summarise(state, client, started), "interrupted": interrupted}


def settle(args: argparse.Namespace, state: LoadState, client: LedgerClient) -> None:
    """Wait, at most ``args.settle`` seconds, for a final receipt of every submission."""
    settle_deadline = time.monotonic() + args.settle
    while time.monotonic() < settle_deadline:
        if all(i in client.fates and client.fates[i].final for i in state.submitted_at):
            break
        resend_unsettled(state, client)
        client.poll(0.2)


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
            if args.state:
                write_nonces(args.state, state.nonces)
        resend_unsettled(state, client)
        client.poll(max(0.0, next_bundle - time.monotonic()))
    state.submit_span_s = time.monotonic() - started


def read_nonces(path: Path) -> dict[bytes, int]:
    """The senders' next nonces a previous run left in ``--state`` (none if no file yet).

    A restarted generator that began again at nonce 0 would have every transaction
    refused as a reused nonce; one whose file is a bundle behind (killed between the
    submission and the write) loses that bundle to BAD_NONCE and then goes on."""
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text())
        nonces = {bytes.fromhex(key): value for key, value in document.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise LoadSettingError(f"--state {path}: not a nonce file ({exc})") from None
    if any(len(key) != 32 or type(value) is not int or value < 0 for key, value in nonces.items()):
        raise LoadSettingError(f"--state {path}: keys must be public keys, nonces integers >= 0")
    return nonces


def write_nonces(path: Path, nonces: dict[bytes, int]) -> None:
    """Replace ``path`` atomically, so a kill never leaves half a file."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps({key.hex(): value for key, value in nonces.items()}))
    os.replace(partial, path)


class LoadSettingError(ValueError):
    """A file a setting names (``--state``, ``--login-key``) cannot be read; says why."""


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
            item = state.presigned.popleft() if state.presigned else state.next_valid(now_ms)
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
    stale += fill_missing(state, client, now)
    if stale:
        log.info("resubmitting transactions without a final receipt", count=len(stale))
        client.submit([state.unsettled[i] for i in stale])
        for item_id in stale:
            state.last_sent[item_id] = now


def fill_missing(state: LoadState, client: LedgerClient, now: float) -> list[bytes]:
    """For each sender a ledger said lacks nonce N (HELD NONCE_GAP): the ids of our
    unsettled transfers with nonces N and on, not sent in the last scan, to send again;
    and a new transfer for each such nonce we have nothing live for (never made, or
    rejected), submitted here.  Never past the nonces we have handed out."""
    again: list[bytes] = []
    made: list[bytes] = []
    now_ms = time.time_ns() // 1_000_000
    keys = {sender.public: sender for sender in state.senders}
    for sender, wanted in state.missing.items():
        top = min(state.nonces.get(sender, 0), wanted + MAX_FILL)
        for nonce in range(wanted, top):
            ids = state.by_nonce.get((sender, nonce), [])
            fates = [client.fates.get(i) for i in ids]
            if any(f is not None and f.status is ReceiptStatus.COMMITTED for f in fates):
                continue  # a stale word: this one is in
            live = [i for i, f in zip(ids, fates, strict=True) if f is None or not f.final]
            if live:
                again += [i for i in live if now - state.last_sent.get(i, 0.0) >= RESEND_SCAN_S]
            elif sender in keys:
                item = state.valid_transfer(keys[sender], nonce, now_ms)
                item_id = _item_id(item)
                state.valid.add(item_id)
                state.submitted_at[item_id] = state.last_sent[item_id] = now
                state.unsettled[item_id] = item
                state.fillers += 1
                made.append(item)
    state.missing.clear()
    if made:
        log.info("filling nonces a ledger said were missing", count=len(made))
        client.submit(made)
    return [i for i in dict.fromkeys(again) if i in state.unsettled]


def summarise(state: LoadState, client: LedgerClient, started: float) -> dict[str, Any]:
    fates = client.fates
    receipted = {i for i, f in fates.items() if f.status is ReceiptStatus.COMMITTED}
    committed = [i for i in state.valid if i in state.committed_in_blocks or i in receipted]
    latencies = [
        fates[i].at - state.submitted_at[i]
        for i in committed
        if i in fates and fates[i].status is ReceiptStatus.COMMITTED
    ]
    rejected = [
        i for i in state.submitted_at if i in fates and fates[i].status is ReceiptStatus.REJECTED
    ]
    commit_times = [fates[i].at for i in committed if i in fates]
    last_commit = max(commit_times, default=time.monotonic())
    span = max(1e-9, last_commit - started)
    reasons = Counter(client.fates[i].describe() for i in rejected)
    return {
        "submitted": len(state.valid),
        "committed": len(committed),
        "rejected": len(rejected),
        "valid_rejected": sum(1 for i in rejected if i in state.valid),
        # Told REJECTED, yet committed (or told both): a receipt that lied.
        "rejected_committed": len(
            client.contradicted | {i for i in rejected if i in state.committed_in_blocks}
        ),
        "fillers": state.fillers,
        "unresolved": sum(1 for i in state.submitted_at if i not in fates or not fates[i].final),
        "invalid_submitted": len(state.invalid),
        "invalid_committed": sum(1 for i in state.invalid if i in state.committed_in_blocks),
        "invalid_kinds": dict(state.invalid_kinds),
        "rejections": dict(reasons),
        "blocks_seen": state.blocks,
        "tps": round(len(committed) / span, 2),
        "p50_latency_s": round(percentile(latencies, 0.50), 3),
        "p99_latency_s": round(percentile(latencies, 0.99), 3),
        "submit_span_s": round(state.submit_span_s, 3),
        # From the start to the first and the last COMMITTED receipt: the time between
        # them is what committing took, in steady state or draining a backlog.
        "first_commit_s": round(min(commit_times, default=started) - started, 3),
        "last_commit_s": round(last_commit - started, 3),
        # The generator's own cost, for the benchmark's per-role columns (presigning included).
        "cpu_s": round(time.process_time(), 3),
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def add_loadgen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True)
    parser.add_argument("--chain", default="devnet")
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--first-sender", type=int, default=0,
                        help="index of the first funded sender (a later run with fresh "
                        "nonces uses senders an earlier one did not)")  # fmt: skip
    parser.add_argument("--presign", action="store_true",
                        help="sign every valid transaction before the clock starts")  # fmt: skip
    parser.add_argument("--bad-senders", type=int, default=BAD_SENDERS)
    parser.add_argument("--tx-rate", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--invalid-fraction", type=float, default=0.0)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path, help="write the JSON summary here too")
    parser.add_argument("--login-key", type=Path, metavar="FILE",
                        help="log in to the broker with this key (default: the first "
                             "sender's)")  # fmt: skip
    parser.add_argument("--state", type=Path, metavar="FILE",
                        help="keep the senders' nonces here, so a restarted generator "
                             "goes on where it stopped")  # fmt: skip
    add_link_arguments(parser)


@until_stopped
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="micromine-loadgen", description=__doc__)
    add_loadgen_arguments(parser)
    return run_main(parser.parse_args(argv))


def run_main(args: argparse.Namespace) -> int:
    """``micromine load`` and ``python -m micromine.loadgen``: run, report, exit 0, also
    when stopped early by SIGINT or SIGTERM (the report then says ``interrupted``)."""
    configure_logging("info")
    with StopSignals() as stop:
        try:
            report = run_load(args, stop)
        except (LoadSettingError, TimeoutError) as exc:
            print(f"micromine load: {exc}", file=sys.stderr)
            return 1
        text = json.dumps(report)
        if args.report:
            args.report.write_text(text + "\n")
        print(text, file=sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
