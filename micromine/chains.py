"""Comparing the chains that several ledger nodes stored: the proof, after a run, that
they agreed.  Reads the SQLite files read-only; safe while the nodes are stopped."""

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from micromine.protocol.block import Block
from micromine.protocol.codec import decode


def read_chain(db_path: Path) -> list[bytes]:
    """Every stored block, encoded, in height order."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return [bytes(row[0]) for row in db.execute("SELECT data FROM blocks ORDER BY height")]


@dataclass(frozen=True, slots=True)
class ChainComparison:
    heights: dict[str, int]
    identical: bool  # every chain is byte-identical to the longest one, as far as it goes
    same_height: bool
    min_signers: int  # the fewest certificate signatures on any stored block

    def describe(self) -> str:
        verdict = (
            "identical"
            if self.identical and self.same_height
            else ("identical prefixes, different heights" if self.identical else "DIVERGED")
        )
        heights = ", ".join(f"{name} {height}" for name, height in self.heights.items())
        return f"chains {verdict} ({heights}); fewest certificate signatures {self.min_signers}"


def compare_chains(db_paths: dict[str, Path]) -> ChainComparison:
    chains = {name: read_chain(path) for name, path in db_paths.items()}
    longest = max(chains.values(), key=len, default=[])
    identical = all(chain == longest[: len(chain)] for chain in chains.values())
    signers = [len(decode(data, Block).certificate) for data in longest]
    return ChainComparison(
        heights={name: len(chain) for name, chain in chains.items()},
        identical=identical,
        same_height=len({len(chain) for chain in chains.values()}) <= 1,
        min_signers=min(signers, default=0),
    )
