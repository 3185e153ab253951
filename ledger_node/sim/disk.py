"""A ledger node's disk in the simulator: the shipped LedgerStore over in-memory SQLite,
with what a killed process keeps and what a power cut keeps told apart.

A killed process loses nothing SQLite committed (the operating system still has the
WAL), so a plain crash keeps the database as it was.  A power cut keeps only what was
synced: LedgerStore commits each write either durably (synchronous=FULL: fsynced before
the commit returns) or not (synchronous=NORMAL), and tells its ``_committed`` hook
which.  A durable commit also makes every earlier one durable (the WAL is synced up to
it), so the disk's durable image is the database as of the last durable commit.
"""

from micromine.ledger_node.storage import LedgerStore
from micromine.protocol.genesis import Genesis


class SimDisk:
    """One node's database across its crashes and restarts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.image: bytes | None = None  # the database a restart opens
        self.durable: bytes | None = None  # what a power cut leaves of it

    def open(self, genesis: Genesis) -> LedgerStore:
        store = _DiskStore.in_memory(self.name, genesis, self.image)
        store.disk = self
        if self.durable is None:  # a new database: created, then synced once
            self.durable = store.image()
        return store

    def crash(self, store: LedgerStore, *, power_loss: bool) -> None:
        """The process holding ``store`` stops (and with ``power_loss``, the machine)."""
        self.image = self.durable if power_loss else store.image()
        store.close()


class _DiskStore(LedgerStore):
    disk: SimDisk | None = None  # set once opened (the schema's creation is synced)

    def _committed(self, durable: bool) -> None:
        if durable and self.disk is not None:
            self.disk.durable = self.image()
