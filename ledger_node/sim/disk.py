"""A ledger node's disk in the simulator: the shipped LedgerStore over in-memory SQLite,
with what a killed process keeps and what a power cut keeps told apart.

A killed process loses nothing SQLite committed (the operating system still has the
WAL), so a plain crash keeps the database as it was.  A power cut keeps only what was
synced: LedgerStore commits each write either durably (synchronous=FULL: fsynced before
the commit returns) or not (synchronous=NORMAL), and tells its ``_committed`` hook
which.  A durable commit also makes every earlier one durable (the WAL is synced up to
it), so the disk's durable image is the database as of the last durable commit.
"""

import sqlite3
from pathlib import Path

from micromine.ledger_node.genesis import Genesis
from micromine.ledger_node.storage import LedgerStore


class SimDisk:
    """One node's database across its crashes and restarts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.image: bytes | None = None  # the database a restart opens
        self.durable: bytes | None = None  # what a power cut leaves of it

    def open(self, genesis: Genesis) -> LedgerStore:
        db = sqlite3.connect(":memory:", isolation_level=None)
        if self.image is not None:
            db.deserialize(self.image)
        store = _DiskStore(self, Path(self.name), genesis, db=db)
        if self.durable is None:  # a new database: created, then synced once
            self.durable = db.serialize()
        return store

    def crash(self, store: LedgerStore, *, power_loss: bool) -> None:
        """The process holding ``store`` stops (and with ``power_loss``, the machine)."""
        self.image = self.durable if power_loss else store.db.serialize()
        store.close()


class _DiskStore(LedgerStore):
    def __init__(
        self, disk: SimDisk, path: Path, genesis: Genesis, *, db: sqlite3.Connection
    ) -> None:
        self._disk = disk  # before LedgerStore's __init__: it may already commit
        super().__init__(path, genesis, db=db)

    def _committed(self, durable: bool) -> None:
        if durable:
            self._disk.durable = self.db.serialize()
