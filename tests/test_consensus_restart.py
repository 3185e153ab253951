"""Restarts and crashes: which writes are durable (docs/CONSENSUS.md, "Crash and
power-loss model")."""

from pathlib import Path

import pytest
from test_consensus_core import KEYS

from micromine.ledger_node.consensus import SignedState
from micromine.ledger_node.genesis import Genesis
from micromine.ledger_node.mempool import PendingTx
from micromine.ledger_node.storage import LedgerStore
from micromine.protocol.codec import sign
from micromine.protocol.consensus import NIL
from micromine.protocol.crypto import sha256
from micromine.protocol.messages import Transaction

# ---- storage: a durable signed state -------------------------------------------------------

GENESIS = Genesis("restart-test", 1_700_000_000_000, (KEYS[0].public,), ())
SYNCHRONOUS = {1: "NORMAL", 2: "FULL"}


class RecordingStore(LedgerStore):
    """Records, after each COMMIT, whether it was durable and the synchronous level it
    ran with (the hook a power-cut simulator overrides)."""

    def __init__(self, path: Path, genesis: Genesis) -> None:
        self.commits: list[tuple[bool, str]] = []
        super().__init__(path, genesis)

    def _committed(self, durable: bool) -> None:
        (level,) = self.db.execute("PRAGMA synchronous").fetchone()
        self.commits.append((durable, SYNCHRONOUS.get(level, str(level))))


def a_pending_tx() -> PendingTx:
    sender = KEYS[1]
    tx = Transaction("restart-test", sender.public, sha256(b"sink"), 5, 1, 0, 2**40, "")
    tx = sign(tx, sender)
    return PendingTx(tx, tx.id, bytes(16), 0)


def test_save_signed_is_fsynced_before_it_returns_and_other_writes_are_not(
    tmp_path: Path,
) -> None:
    """A signed state rolled back by a power cut after its message left could let the
    restarted node sign a conflicting one: save_signed commits with synchronous=FULL
    (the WAL fsynced at COMMIT); other writes stay NORMAL (peers resupply them)."""
    store = RecordingStore(tmp_path / "ledger.sqlite", GENESIS)
    assert store.commits == [(False, "NORMAL")]  # the genesis rows
    store.commits.clear()
    store.save_signed(SignedState(1, 1, 2, NIL))
    store.store_pending([a_pending_tx()])
    store.save_signed(SignedState(1, 1, 3, NIL))
    store.forget_pending([a_pending_tx().tx_id])
    assert store.commits == [
        (True, "FULL"),
        (False, "NORMAL"),
        (True, "FULL"),
        (False, "NORMAL"),
    ]
    assert store.db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL again
    store.close()


def test_a_failed_durable_write_leaves_the_connection_at_normal(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "ledger.sqlite", GENESIS)
    with pytest.raises(RuntimeError), store._transaction(durable=True):
        raise RuntimeError("boom")
    assert store.db.execute("PRAGMA synchronous").fetchone() == (1,)
    store.close()
