"""Per-core costs of the protocol's hot operations, and of the ledger core's block build.

    python benchmarks/protocol_bench.py [--seconds 1.0] [--json]

Each figure is operations per second on one core (best of three runs of ``--seconds``),
so it bounds what one process can do: an agent verifies at most ``verify_tx`` signatures
per second per core, a ledger decodes at most ``decode_submission_items`` transactions per
second while admitting them.  Figures go in docs/PERFORMANCE.md with this command.
"""

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

from micromine.ledger_node.chain.blocks import build_block
from micromine.ledger_node.chain.chain_state import ChainState, ChainTip
from micromine.ledger_node.chain.enrollment import OPEN
from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.state import Account
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.codec import decode, encode, is_signature_valid, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.genesis import ChainParams
from micromine.protocol.messages import (
    Assignment,
    Judgement,
    Submission,
    Transaction,
    Verdict,
    WorkBatch,
)
from micromine.protocol.validation import check_transaction


def rate(operation: Callable[[], Any], items_per_call: int, seconds: float) -> float:
    best = 0.0
    for _ in range(3):
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            operation()
            calls += 1
        best = max(best, calls * items_per_call / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    keys = [KeyPair(sha256(b"bench %d" % i)) for i in range(64)]
    node = KeyPair(sha256(b"bench node"))
    now = 1_700_000_000_000
    txs = [
        sign(
            Transaction("bench", k.public, keys[(i + 1) % 64].public, 10, 1, 0, now + 10**9, "m"), k
        )
        for i, k in enumerate(keys)
    ]
    tx_bytes = encode(txs[0])
    submission = encode(Submission("bench", bytes(16), tuple(encode(t) for t in txs)))
    assignment = sign(Assignment("bench", node.public, 1, 0, now, compute_batch_root(txs)), node)
    batch = WorkBatch(assignment, tuple(txs))
    batch_bytes = encode(batch)
    judgements = tuple(Judgement.of(t, 0) for t in txs)
    devices = keys[:2]  # registered at genesis; with k = 3 both are entitled
    verdicts = [sign(Verdict("bench", d.public, assignment, judgements), d) for d in devices]
    accounts = {k.public: Account(10**9, 0) for k in keys}
    registry = DeviceRegistry({d.public: 0 for d in devices}, 0)
    justification = {t.id: verdicts for t in txs}
    state = ChainState("bench", ChainParams(), OPEN, ChainTip(0, bytes(32), now), accounts,
                       registry, {})  # fmt: skip

    def block() -> None:
        build_block(
            state, proposer=node, timestamp_ms=now, candidates=txs, justification=justification
        )

    figures = {
        "encode_tx": rate(lambda: encode(txs[0]), 1, args.seconds),
        "decode_tx": rate(lambda: decode(tx_bytes, Transaction), 1, args.seconds),
        "tx_id": rate(lambda: txs[0].id, 1, args.seconds),
        "sign_tx": rate(lambda: sign(txs[0], keys[0]), 1, args.seconds),
        "verify_tx": rate(lambda: is_signature_valid(txs[0]), 1, args.seconds),
        "check_transaction": rate(lambda: check_transaction(txs[0], "bench", now), 1, args.seconds),
        "decode_submission_items": rate(lambda: decode(submission, Submission), 64, args.seconds),
        "decode_batch_txs": rate(lambda: decode(batch_bytes, WorkBatch), 64, args.seconds),
        "build_block_txs": rate(block, 64, args.seconds),
    }
    report = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "ops_per_second_per_core": {name: round(value) for name, value in figures.items()},
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['machine']}, Python {report['python']}, one core:")
        for name, value in report["ops_per_second_per_core"].items():
            print(f"  {name:24s} {value:>10,d} /s")


if __name__ == "__main__":
    main()
