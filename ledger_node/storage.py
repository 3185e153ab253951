"""SQLite storage for one ledger node: blocks, accounts, the device registry and bans,
vesting rewards, admitted transactions, and what the node last signed in consensus.

A block, its account and vesting changes, the devices it registers and bans and the
removal of its transactions from ``pending`` are one SQLite transaction, so a node killed at any
instant restarts at a height whose state matches it exactly.  Admitted transactions are
stored before their PENDING receipt is sent, so an acknowledged transaction survives a
crash and is judged again after restart.

Crash and power-loss model (WAL mode; docs/CONSENSUS.md, "Crash and power-loss model"):

    write                          synchronous  killed process   power cut
    save_signed (signed state)     FULL         survives         survives (fsynced first)
    everything else                NORMAL       survives         may lose the last commits

* A killed process loses nothing that was committed: the WAL is in the OS's hands.
* A power cut (or kernel crash) keeps every ``save_signed``: it runs with
  synchronous=FULL, so the WAL is fsynced before it returns, and the node sends the
  signed message only after that.  Losing it could make a restarted validator sign a
  second, different message in one slot, or forget the lock it precommitted under:
  two nodes doing so is enough to decide two blocks at one height.
* The other writes (blocks, pending transactions, certificates) run with
  synchronous=NORMAL, fsynced only at checkpoints: a power cut may roll back the last
  few.  Safety does not depend on them: lost blocks come back from peers (sync, with
  their certificates), and a lost pending transaction was admitted by every node, so
  the others still propose it.  The signed state may then be ahead of the chain: the
  core signs nothing below it and catches up first.

``_committed(durable)`` is called right after each COMMIT: a no-op here, a hook for a
simulator that models which writes a power cut takes away.

Longer than 400 lines because the schema, its migration and every query of the node's
database live here and only here (nothing else speaks SQL).
"""

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from micromine.ledger_node.chain.blocks import ChainTip
from micromine.ledger_node.chain.enrollment import ApprovalRecord
from micromine.ledger_node.chain.state import Account, StateChanges, VestingEntry
from micromine.ledger_node.consensus.tendermint import SignedState
from micromine.ledger_node.core.mempool import PendingTx
from micromine.protocol import cbor
from micromine.protocol.block import Block
from micromine.protocol.codec import decode, encode
from micromine.protocol.consensus import Prevote
from micromine.protocol.crypto import sha256
from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.genesis import Genesis
from micromine.protocol.messages import Transaction

SCHEMA_VERSION = 4  # 2: devices (the registry); 3: bans, vesting, approvals; 4: signed blocks

# Executed statement by statement, split on ";": no semicolon in a comment.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    timestamp_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS committed_txs (
    id BLOB PRIMARY KEY,
    height INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
    address BLOB PRIMARY KEY,
    balance INTEGER NOT NULL,
    nonce INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    device BLOB PRIMARY KEY,
    height INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bans (
    device BLOB PRIMARY KEY,
    height INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vesting (
    device BLOB NOT NULL,
    earned_height INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (device, earned_height)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signed (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    height INTEGER NOT NULL,
    round INTEGER NOT NULL,
    step INTEGER NOT NULL,
    block_hash BLOB NOT NULL,
    locked_round INTEGER NOT NULL,
    locked_hash BLOB NOT NULL,
    valid_round INTEGER NOT NULL DEFAULT 0,
    valid_block BLOB,  -- the digest of the valid block in signed_blocks (NULL: none)
    locked_block BLOB,  -- the digest of the locked block (NULL: none, or not kept)
    polka BLOB  -- the valid value's 2f+1 prevotes, a CBOR array of encodings (NULL: none)
);
CREATE TABLE IF NOT EXISTS signed_blocks (
    digest BLOB PRIMARY KEY,  -- SHA-256 of data: the valid and locked block often match
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    device BLOB NOT NULL,
    height INTEGER NOT NULL,
    approved INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    operator BLOB NOT NULL,
    PRIMARY KEY (device, height)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    id BLOB PRIMARY KEY,
    data BLOB NOT NULL,
    reply_to BLOB NOT NULL,
    admitted_ms INTEGER NOT NULL
) WITHOUT ROWID;
"""


class StorageError(RuntimeError):
    """The database cannot be used with this genesis (or is damaged)."""


class ChainReader:
    """The chain as a ledger database holds it, read-only.  The node's store is one;
    ``ChainReader.open`` is how everything else (the CLI, devnet's summary, benchmarks,
    tests) reads a database that a node may own: nothing but this module speaks SQL."""

    path: Path
    db: sqlite3.Connection

    @classmethod
    def open(cls, path: Path) -> "ChainReader":
        """Open ``path`` read-only (StorageError if it is missing or not a ledger
        database)."""
        if not path.exists():
            raise StorageError(f"{path} does not exist")
        reader = cls.__new__(cls)
        reader.path = path
        try:
            reader.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            tables = reader._tables()
        except sqlite3.Error as exc:
            raise StorageError(f"{path} is not a ledger database ({exc})") from None
        if not {"blocks", "accounts", "devices"} <= tables:
            reader.db.close()
            raise StorageError(f"{path} is not a ledger database (no chain tables)")
        return reader

    def __enter__(self) -> "ChainReader":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _tables(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT name FROM sqlite_master")}

    def height(self) -> int:
        (height,) = self.db.execute("SELECT COALESCE(MAX(height), 0) FROM blocks").fetchone()
        return int(height)

    def committed_count(self) -> int:
        (count,) = self.db.execute("SELECT COUNT(*) FROM committed_txs").fetchone()
        return int(count)

    def approval_decisions(self) -> list[tuple[bytes, int, bool, int, bytes]]:
        """(device, height, approved, timestamp_ms, operator) of every approval record,
        oldest first (none in a database from before approvals existed)."""
        if "approvals" not in self._tables():
            return []
        rows = self.db.execute(
            "SELECT device, height, approved, timestamp_ms, operator FROM approvals ORDER BY height"
        )
        return [(bytes(d), h, bool(a), t, bytes(o)) for d, h, a, t, o in rows]

    def tip(self, genesis: Genesis) -> ChainTip:
        row = self.db.execute(
            "SELECT height, hash, timestamp_ms FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return ChainTip(0, genesis.hash, genesis.timestamp_ms)
        return ChainTip(row[0], bytes(row[1]), row[2])

    def accounts(self) -> dict[bytes, Account]:
        rows = self.db.execute("SELECT address, balance, nonce FROM accounts")
        return {bytes(address): Account(balance, nonce) for address, balance, nonce in rows}

    def registry(self) -> dict[bytes, int]:
        """The device registry: device key -> the height that registered it."""
        rows = self.db.execute("SELECT device, height FROM devices")
        return {bytes(device): height for device, height in rows}

    def approvals(self) -> list[ApprovalRecord]:
        """Every approval record of the chain (enrollment.py), oldest first."""
        rows = self.db.execute(
            "SELECT device, approved, height, timestamp_ms FROM approvals ORDER BY height"
        )
        return [ApprovalRecord(bytes(d), bool(a), h, t) for d, a, h, t in rows]

    def bans(self) -> dict[bytes, int]:
        """Banned devices: device key -> the height of the block that banned it."""
        rows = self.db.execute("SELECT device, height FROM bans")
        return {bytes(device): height for device, height in rows}

    def vesting(self) -> dict[bytes, tuple[VestingEntry, ...]]:
        """Unvested rewards: device key -> (earned height, amount) entries, by height."""
        found: dict[bytes, list[VestingEntry]] = {}
        rows = self.db.execute(
            "SELECT device, earned_height, amount FROM vesting ORDER BY device, earned_height"
        )
        for device, earned, amount in rows:
            found.setdefault(bytes(device), []).append((earned, amount))
        return {device: tuple(entries) for device, entries in found.items()}

    def pending(self) -> list[PendingTx]:
        entries = []
        rows = self.db.execute(
            "SELECT id, data, reply_to, admitted_ms FROM pending ORDER BY admitted_ms, id"
        )
        for tx_id, data, reply_to, admitted_ms in rows:
            try:
                tx = decode(bytes(data), Transaction)
            except DecodeError as exc:
                raise StorageError(f"damaged pending row {bytes(tx_id).hex()}: {exc}") from None
            entries.append(PendingTx(tx, bytes(tx_id), bytes(reply_to), admitted_ms))
        return entries

    def recent_committed(self, limit: int) -> list[tuple[bytes, int]]:
        rows = self.db.execute(
            "SELECT id, height FROM committed_txs ORDER BY height DESC LIMIT ?", (limit,)
        ).fetchall()
        return [(bytes(tx_id), height) for tx_id, height in reversed(rows)]

    def block_bytes(self, height: int) -> bytes | None:
        row = self.db.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def blocks_bytes(self, first: int, last: int) -> Iterator[bytes]:
        rows = self.db.execute(
            "SELECT data FROM blocks WHERE height BETWEEN ? AND ? ORDER BY height", (first, last)
        )
        for (data,) in rows:
            yield bytes(data)

    def committed_height(self, tx_id: bytes) -> int | None:
        row = self.db.execute("SELECT height FROM committed_txs WHERE id = ?", (tx_id,)).fetchone()
        return None if row is None else int(row[0])


class LedgerStore(ChainReader):
    """Not thread-safe: one node's event loop owns it."""

    def __init__(
        self, path: Path, genesis: Genesis, *, db: sqlite3.Connection | None = None
    ) -> None:
        """``db``: an open connection to use instead of opening ``path`` (the simulator's
        in-memory disk; ``path`` then only names it in errors)."""
        self.path = path
        if db is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None)
        self.db = db
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self.db.execute(statement)
        # The blocks of the signed state as stored, with their digests (None: unknown
        # until last_signed() reads them), so save_signed writes a block only when the
        # core's object changes.
        self._signed_blocks: list[tuple[Block, bytes]] | None = None
        self._polka: tuple[tuple[Prevote, ...], bytes | None] = ((), None)  # last encoded
        self._check_or_init(genesis)

    def _check_or_init(self, genesis: Genesis) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'genesis_hash'").fetchone()
        if row is not None:
            if bytes(row[0]) != genesis.hash:
                raise StorageError(
                    f"{self.path} belongs to another genesis "
                    f"({bytes(row[0]).hex()[:16]}…, this one is {genesis.hash.hex()[:16]}…)"
                )
            schema = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if schema is not None and schema[0] == 3:
                self._migrate_3_to_4()
                return
            if schema is None or schema[0] != SCHEMA_VERSION:
                found = None if schema is None else schema[0]
                raise StorageError(f"{self.path} has schema {found}, not {SCHEMA_VERSION}")
            return
        with self._transaction():
            self.db.execute("INSERT INTO meta VALUES ('genesis_hash', ?)", (genesis.hash,))
            self.db.execute("INSERT INTO meta VALUES ('chain_id', ?)", (genesis.chain_id,))
            self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            self.db.executemany("INSERT INTO accounts VALUES (?, ?, 0)", list(genesis.balances))
            self.db.executemany(
                "INSERT INTO devices VALUES (?, 0)", [(device,) for device in genesis.devices]
            )
            self.db.execute("INSERT INTO meta VALUES ('genesis_time', ?)", (genesis.timestamp_ms,))

    def _migrate_3_to_4(self) -> None:
        """Schema 4 keeps the valid value, its polka and the blocks of the signed state: a
        row of schema 3 reads as no valid value and a lock without its block."""
        with self._transaction():
            self.db.execute("ALTER TABLE signed ADD COLUMN valid_round INTEGER NOT NULL DEFAULT 0")
            self.db.execute("ALTER TABLE signed ADD COLUMN valid_block BLOB")
            self.db.execute("ALTER TABLE signed ADD COLUMN locked_block BLOB")
            self.db.execute("ALTER TABLE signed ADD COLUMN polka BLOB")
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))

    @contextmanager
    def _transaction(self, durable: bool = False) -> Iterator[None]:
        """One SQLite transaction.  ``durable``: on disk (fsynced) when this returns, for
        what must survive a power cut; otherwise a commit survives a killed process but
        a power cut may lose it (synchronous=NORMAL; see the module docstring)."""
        if durable:
            self.db.execute("PRAGMA synchronous=FULL")  # not allowed inside a transaction
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            self._committed(durable)
        finally:
            if durable:
                self.db.execute("PRAGMA synchronous=NORMAL")

    def _committed(self, durable: bool) -> None:
        """Called right after each COMMIT, ``durable`` as the transaction was.  A hook
        for a simulator that models what a power cut takes away (the non-durable commits
        since the last durable one may be lost); nothing to do here."""

    @classmethod
    def in_memory(cls, name: str, genesis: Genesis, image: bytes | None = None) -> Self:
        """A store in memory, empty or from ``image`` (see ``image``): the simulator's
        disk, and replays."""
        db = sqlite3.connect(":memory:", isolation_level=None)
        if image is not None:
            db.deserialize(image)
        return cls(Path(name), genesis, db=db)

    def image(self) -> bytes:
        """The whole database as bytes (SQLite's serialization)."""
        return self.db.serialize()

    # ---- reads of the node's own (the chain's are ChainReader's) -----------------

    def last_signed(self) -> SignedState | None:
        """What save_signed last stored, its valid and locked blocks decoded."""
        row = self.db.execute(
            "SELECT height, round, step, block_hash, locked_round, locked_hash,"
            " valid_round, valid_block, locked_block, polka FROM signed"
        ).fetchone()
        if row is None:
            self._signed_blocks = []
            return None
        height, round_, step, block_hash, locked_round, locked_hash, valid_round = row[:7]
        stored = [(self._signed_block(bytes(d)), bytes(d)) for d in row[7:9] if d is not None]
        by_digest = {digest: block for block, digest in stored}
        valid_block = None if row[7] is None else by_digest[bytes(row[7])]
        locked_block = None if row[8] is None else by_digest[bytes(row[8])]
        try:
            polka = self._decode_polka(row[9])
            state = SignedState(
                height, round_, step, bytes(block_hash), locked_round, bytes(locked_hash),
                valid_round, valid_block, locked_block, polka,
            )  # fmt: skip
        except (ValueError, DecodeError) as exc:
            raise StorageError(f"{self.path}: damaged signed state: {exc}") from None
        self._signed_blocks = stored
        return state

    def _decode_polka(self, data: bytes | None) -> tuple[Prevote, ...]:
        if data is None:
            self._polka = ((), None)
            return ()
        items = cbor.decode(bytes(data), len(data))
        if not isinstance(items, list) or not all(isinstance(i, bytes) for i in items):
            raise DecodeError(DecodeFailure.BAD_SHAPE, "the polka is not an array of encodings")
        polka = tuple(decode(item, Prevote) for item in items)
        self._polka = (polka, bytes(data))
        return polka

    def _encode_polka(self, polka: tuple[Prevote, ...]) -> bytes | None:
        """The polka's stored bytes, encoded only when the core hands over a new tuple."""
        if not polka:
            return None
        known, data = self._polka
        if known is polka and data is not None:
            return data
        data = cbor.encode([encode(vote) for vote in polka])
        self._polka = (polka, data)
        return data

    def _signed_block(self, digest: bytes) -> Block:
        row = self.db.execute(
            "SELECT data FROM signed_blocks WHERE digest = ?", (digest,)
        ).fetchone()
        if row is None:
            raise StorageError(f"{self.path}: signed block {digest.hex()[:16]}… is missing")
        try:
            return decode(bytes(row[0]), Block)
        except DecodeError as exc:
            raise StorageError(f"{self.path}: damaged signed block: {exc}") from None

    # ---- writes -------------------------------------------------------------------

    def save_signed(self, state: SignedState) -> None:
        """What this validator last signed, with its lock and valid value; called before
        the message leaves, and durable (fsynced) when it returns: a restarted node,
        even after a power cut, never signs a different message for the same slot and
        keeps its lock and valid value.

        Runs for every vote, so the blocks (a proposal's may be large) are encoded and
        written only when the core's object changes; they are kept by the digest of
        their encoding, so the valid and locked block, usually one block, are stored
        once, and the blocks no longer referenced are deleted then."""
        before = self._signed_blocks
        known = list(before or ())
        new: dict[bytes, bytes] = {}  # digest -> encoding, not stored yet
        valid_digest = self._signed_digest(state.valid_block, known, new)
        locked_digest = self._signed_digest(state.locked_block, known, new)
        kept = {d for d in (valid_digest, locked_digest) if d is not None}
        stale = before is None or kept != {digest for _block, digest in before}
        with self._transaction(durable=True):
            self.db.executemany(
                "INSERT OR IGNORE INTO signed_blocks VALUES (?, ?)", list(new.items())
            )
            self.db.execute(
                "INSERT OR REPLACE INTO signed (id, height, round, step, block_hash,"
                " locked_round, locked_hash, valid_round, valid_block, locked_block, polka)"
                " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (state.height, state.round, state.step, state.block_hash, state.locked_round,
                 state.locked_hash, state.valid_round, valid_digest, locked_digest,
                 self._encode_polka(state.polka)),
            )  # fmt: skip
            if stale:
                self.db.execute(
                    "DELETE FROM signed_blocks WHERE digest IS NOT ? AND digest IS NOT ?",
                    (valid_digest, locked_digest),
                )
        self._signed_blocks = [(block, digest) for block, digest in known if digest in kept]

    @staticmethod
    def _signed_digest(
        block: Block | None, known: list[tuple[Block, bytes]], new: dict[bytes, bytes]
    ) -> bytes | None:
        """The digest ``block`` is stored under, found by identity in ``known`` (the core
        hands over the same object until its lock or valid value changes) or computed,
        its encoding then added to ``new`` unless a stored block has the same bytes."""
        if block is None:
            return None
        for seen, digest in known:
            if seen is block:
                return digest
        data = encode(block)
        digest = sha256(data)
        if all(digest != stored for _block, stored in known):
            new[digest] = data
        known.append((block, digest))
        return digest

    def store_pending(self, entries: Iterable[PendingTx]) -> None:
        with self._transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)",
                [(e.tx_id, encode(e.tx), e.reply_to, e.admitted_ms) for e in entries],
            )

    def forget_pending(self, tx_ids: Iterable[bytes]) -> None:
        with self._transaction():
            self.db.executemany("DELETE FROM pending WHERE id = ?", [(i,) for i in tx_ids])

    def improve_certificate(self, block: Block) -> None:
        """Replace a stored block's certificate by a fuller one (same header, same hash)."""
        with self._transaction():
            self.db.execute(
                "UPDATE blocks SET data = ? WHERE height = ? AND hash = ?",
                (encode(block), block.height, block.hash),
            )

    def commit_block(self, block: Block, changes: StateChanges) -> None:
        tx_ids = [(tx.id,) for tx in block.txs]
        with self._transaction():
            self.db.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?)",
                (block.height, block.hash, block.header.timestamp_ms, encode(block)),
            )
            self.db.executemany(
                "INSERT INTO committed_txs VALUES (?, ?)",
                [(tx_id, block.height) for (tx_id,) in tx_ids],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?)",
                [(a, acct.balance, acct.nonce) for a, acct in changes.accounts.items()],
            )
            self.db.executemany(
                "INSERT INTO devices VALUES (?, ?)",
                [(hello.device, block.height) for hello in block.registrations],
            )
            self.db.executemany(
                "INSERT INTO approvals VALUES (?, ?, ?, ?, ?)",
                [
                    (a.device, block.height, int(a.approve), a.timestamp_ms, a.operator)
                    for a in block.approvals
                ],
            )
            self.db.executemany(
                "INSERT INTO bans VALUES (?, ?)",
                [(proof.device, block.height) for proof in block.frauds],
            )
            self.db.executemany(
                "DELETE FROM vesting WHERE device = ?", [(d,) for d in changes.vesting]
            )
            self.db.executemany(
                "INSERT INTO vesting VALUES (?, ?, ?)",
                [
                    (device, earned, amount)
                    for device, entries in changes.vesting.items()
                    for earned, amount in entries
                ],
            )
            self.db.executemany("DELETE FROM pending WHERE id = ?", tx_ids)
