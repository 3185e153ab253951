"""Four ledger nodes as real processes, one of them Byzantine (tests/framework/byzantine_ledger.py:
double-signed votes, invalid and equivocating proposals, forged verdicts, an unsigned
theft backed by verdicts of devices it made up (refused: they are not registered, so not
entitled to judge), garbage).
With f = 1 of n = 4 faulty, the three honest nodes must keep committing, never fork,
never commit a block the honest rules refuse, and catch the double signing: each logs
"equivocation detected" with the two signed messages as evidence."""

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from framework.cluster import Cluster, Wallets, Watcher

from micromine.chains import compare_chains
from micromine.ledger_node.chain.chain_state import genesis_state
from micromine.ledger_node.chain.state import Account
from micromine.ledger_node.chain.transition import process_commit
from micromine.ledger_node.chain.verify import verify_block
from micromine.ledger_node.consensus.certificate import check_certificate
from micromine.processes import wait_until
from micromine.protocol.block import Block
from micromine.protocol.codec import decode, is_signature_valid
from micromine.protocol.consensus import Precommit, Prevote, Proposal
from micromine.protocol.kinds import ReceiptStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BYZANTINE = 3  # index of the Byzantine node among the cluster's four ledgers
HONEST = (0, 1, 2)
# Without --exploit-known-gaps: that flag tells the one lie the rules let through (sybil
# devices registered under open enrollment, docs/CONSENSUS.md "Device assignment").
PROGRAM = [sys.executable, str(Path(__file__).parent / "framework" / "byzantine_ledger.py")]
LOAD_S = 20.0  # wallets submit for at least this long
MIN_HEIGHT = 8  # every honest node gets at least this far under load
# Bounded blocks keep each round's work (build, relay, decode, verify) small, so that
# round timeouts -- not the machine's speed -- decide how fast the chain moves.
MAX_BLOCK_TXS = 256
EVIDENCE_KINDS = {"Proposal", "Prevote", "Precommit"}  # each honest node catches all three
POLL_S = 0.25  # how often the waits below re-read statuses and logs


def log_records(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a process (anything else in the file is skipped)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line still being written
    return records


def evidence_in(path: Path) -> list[dict[str, Any]]:
    return [r for r in log_records(path) if r.get("event") == "equivocation detected"]


def evidence_kinds(path: Path) -> set[str]:
    return {record["kind"] for record in evidence_in(path)}


def lies_in(path: Path) -> list[dict[str, Any]]:
    """The invalid blocks the Byzantine node proposed (not the honest ones it also sent)."""
    records = [r for r in log_records(path) if r.get("event") == "byzantine proposal"]
    return [r for r in records if r["lie"] != "honest"]


def check_evidence(record: dict[str, Any], culprit: bytes) -> tuple[str, int, int]:
    """The logged evidence is two different messages, validly signed by ``culprit``, for
    one (height, round, kind); returns that slot."""
    assert record["validator"] == culprit.hex(), record
    first = decode(bytes.fromhex(record["first"]))
    second = decode(bytes.fromhex(record["second"]))
    for message in (first, second):
        assert isinstance(message, Proposal | Prevote | Precommit), type(message)
        assert type(message).__name__ == record["kind"]
        assert message.signer == culprit
        assert is_signature_valid(message), "forged evidence: a signature does not verify"
        assert (message.height, message.round) == (record["height"], record["round"])
    assert type(first) is type(second)
    assert first.id != second.id, "the two messages are the same signed content"
    return record["kind"], record["height"], record["round"]


def replay_and_verify(cluster: Cluster, chain: list[Block]) -> dict[bytes, Account]:
    """Re-check every block as an honest node would have before prevoting it, against the
    state replayed from genesis, plus its certificate; returns the final accounts."""
    validators = sorted(cluster.genesis.ledger_nodes)
    state = genesis_state(cluster.genesis)
    for block in chain:
        transition = verify_block(state, block, validators=validators)  # raises
        certificate = check_certificate(block, validators)
        assert certificate.ok and certificate.signers >= 3, (block.height, certificate.describe())
        state = process_commit(state, block, transition)
    return state.accounts


def test_a_byzantine_validator_neither_forks_nor_corrupts_the_chain_and_is_caught(
    tmp_path: Path, embedded_broker: Any
) -> None:
    started = time.monotonic()
    # Validators do not re-check transaction signatures here, so that the lies are
    # refused by the rules about verdicts (the chain default, 1, refuses a forged theft
    # at its signature before those rules are reached).
    cluster = Cluster(
        tmp_path, embedded_broker.url, agents=4, ledgers=4, max_block_txs=MAX_BLOCK_TXS,
        recheck_tx_signatures=0,
    )  # fmt: skip
    culprit = cluster.ledger_keys[BYZANTINE].public
    honest_keys = [cluster.ledger_keys[i].public.hex() for i in HONEST]
    honest_logs = [cluster.ledger_log(i, 1) for i in HONEST]
    byzantine_log = cluster.ledger_log(BYZANTINE, 1)
    watcher = Watcher(embedded_broker.url).start()
    wallets = Wallets(cluster)

    def honest_statuses() -> list[dict[str, Any]]:
        return [watcher.statuses.get(key, {}) for key in honest_keys]

    def describe() -> str:
        heights = [s.get("height") for s in honest_statuses()]
        evidence = [sorted(evidence_kinds(path)) for path in honest_logs]
        lies = len(lies_in(byzantine_log))
        return f"honest heights {heights}, evidence {evidence}, invalid proposals {lies}"

    try:
        for index in HONEST:
            cluster.start_ledger(index)
        cluster.start_ledger(BYZANTINE, program=PROGRAM)
        for index in range(cluster.agent_count):
            cluster.start_agent(index)
        wait_until(
            lambda: all(s.get("devices_live", 0) >= 4 for s in honest_statuses()),
            60,
            interval=POLL_S,
            message=lambda: f"four live devices at every honest node ({describe()})",
        )
        wallets.start()
        load_started = time.monotonic()
        wait_until(
            lambda: (
                time.monotonic() - load_started >= LOAD_S
                and all(int(s.get("height", 0)) >= MIN_HEIGHT for s in honest_statuses())
                and all(evidence_kinds(path) >= EVIDENCE_KINDS for path in honest_logs)
                and lies_in(byzantine_log)
                and all(
                    s.get("dropped", {}).get("consensus.invalid_block", 0) > 0
                    for s in honest_statuses()
                )
            ),
            LOAD_S + 25,
            interval=POLL_S,
            message=lambda: f"progress, evidence and refused blocks ({describe()})",
        )
        wallets.submitting.clear()
        wait_until(
            wallets.all_final, 30, interval=POLL_S, message="every submitted transaction decided"
        )
        assert cluster.ledgers[BYZANTINE] is not None and cluster.ledgers[BYZANTINE].running()
    finally:
        if wallets.ident is not None:  # started
            wallets.stop()
        cluster.stop()
        watcher.stop()

    # No fork: the honest chains hold the same blocks as far as each goes, and all grew.
    comparison = compare_chains({f"n{i}": cluster.db_paths[i] for i in HONEST})
    assert comparison.identical, comparison.describe()
    assert min(comparison.heights.values()) >= MIN_HEIGHT, comparison.describe()
    longest = max(HONEST, key=lambda i: comparison.heights[f"n{i}"])
    chain = cluster.assert_chain_linked(longest)

    # No invalid block: every committed block passes the honest rules over the replayed
    # state, carries a > 2/3 certificate, and none of the refused lies is among them.
    accounts = replay_and_verify(cluster, chain)
    committed = {block.hash.hex()[:16] for block in chain}
    lies = lies_in(byzantine_log)
    assert lies, "the Byzantine node never proposed an invalid block"
    assert all(r["honest_verdict"].startswith("refused") for r in lies), lies
    assert not {r["block"] for r in lies} & committed, "a refused block was committed"
    # Its first lie: a theft vouched for by devices it made up, under an assignment it
    # signed, refused by the entitlement rule, which verify_block applies before any
    # transaction signature.
    thefts = [r for r in lies if r["lie"] == "stolen_tx_fresh_devices"]
    assert thefts and all("not_entitled" in r["honest_verdict"] for r in thefts), thefts
    # Nothing forged got in: every transaction is signed by its sender, every verdict
    # comes from one of the four real devices, and the Byzantine node earned nothing.
    devices = {cluster.agent_public_key(i) for i in range(cluster.agent_count)}
    assert all(is_signature_valid(tx) for block in chain for tx in block.txs)
    assert all(v.device in devices for block in chain for v in block.verdicts)
    assert accounts.get(culprit, Account()).balance == 0

    # Caught: every honest node logged the Byzantine validator's double signing, with two
    # validly signed, different messages for one slot; and no honest node was accused.
    slots: Counter[str] = Counter()
    for path in honest_logs:
        records = evidence_in(path)
        assert records, f"no equivocation logged in {path.name}"
        for record in records:
            kind, _height, _round = check_evidence(record, culprit)
            slots[kind] += 1
    assert set(slots) == EVIDENCE_KINDS, slots

    # The load went through: everything acknowledged as committed is in the chain.
    txs = {tx.id for block in chain for tx in block.txs}
    fates = wallets.fates()
    done = [i for i, fate in fates.items() if fate.status is ReceiptStatus.COMMITTED]
    assert done and set(done) <= txs
    print(
        f"byzantine run: {time.monotonic() - started:.1f}s, {comparison.describe()}, "
        f"{len(txs)} txs committed, lies {Counter(r['lie'] for r in lies)}, evidence {slots}"
    )
