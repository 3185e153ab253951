"""Comparing the chains that several ledger nodes stored: the proof, after a run, that
they agreed; and what a chain says about its devices (rewards, bans).  Reads the SQLite
files read-only (storage.ChainReader); safe while the nodes run."""

from dataclasses import dataclass
from pathlib import Path

from micromine.ledger_node.storage import ChainReader
from micromine.protocol.block import Block
from micromine.protocol.codec import decode


def read_chain(db_path: Path) -> list[bytes]:
    """Every stored block, encoded, in height order."""
    with ChainReader.open(db_path) as chain:
        return list(chain.blocks_bytes(1, chain.height()))


@dataclass(frozen=True, slots=True)
class ChainComparison:
    heights: dict[str, int]
    # Every chain holds the longest one's blocks (by hash: the header, which commits to
    # the body), as far as it goes: the nodes agree.
    identical: bool
    same_height: bool
    min_signers: int  # the fewest certificate signatures on any stored block
    # ... and stored the same bytes, certificates included: best effort only, since a
    # node keeps the commit signatures it saw (docs/CONSENSUS.md, "Certificates").
    same_bytes: bool = True

    def describe(self) -> str:
        verdict = (
            "identical"
            if self.identical and self.same_height
            else ("identical prefixes, different heights" if self.identical else "DIVERGED")
        )
        heights = ", ".join(f"{name} {height}" for name, height in self.heights.items())
        certificates = "" if self.same_bytes else ", certificates differ"
        return (
            f"chains {verdict} ({heights}); fewest certificate signatures "
            f"{self.min_signers}{certificates}"
        )


def compare_chains(db_paths: dict[str, Path]) -> ChainComparison:
    chains = {name: read_chain(path) for name, path in db_paths.items()}
    longest = max(chains.values(), key=len, default=[])
    blocks = [decode(data, Block) for data in longest]
    hashes = [block.hash for block in blocks]

    def agrees(chain: list[bytes]) -> bool:
        return [decode(data, Block).hash for data in chain] == hashes[: len(chain)]

    return ChainComparison(
        heights={name: len(chain) for name, chain in chains.items()},
        identical=all(agrees(chain) for chain in chains.values()),
        same_height=len({len(chain) for chain in chains.values()}) <= 1,
        min_signers=min((len(block.certificate) for block in blocks), default=0),
        same_bytes=all(chain == longest[: len(chain)] for chain in chains.values()),
    )


@dataclass(frozen=True, slots=True)
class DeviceLedger:
    """What a stored chain says about the devices: who earned, who was banned, when."""

    rewards: dict[bytes, int]  # device -> every reward it earned (vested or not)
    rewards_after_bans: dict[bytes, int]  # device -> rewards in blocks after the last ban
    banned: dict[bytes, int]  # device -> the height of the block that banned it
    frauds: int  # fraud proofs on chain
    height: int
    spendable: dict[bytes, int]  # device -> its account balance (vested rewards)
    vesting: dict[bytes, int]  # device -> its rewards not yet vested

    def burned(self, device: bytes) -> int:
        """What a device earned and neither holds nor will: a ban's forfeit (devices
        spend nothing in devnet, so earned = spendable + vesting + burned)."""
        held = self.spendable.get(device, 0) + self.vesting.get(device, 0)
        return self.rewards.get(device, 0) - held


def read_device_ledger(db_path: Path) -> DeviceLedger:
    blocks = [decode(data, Block) for data in read_chain(db_path)]
    with ChainReader.open(db_path) as chain:
        spendable = {address: account.balance for address, account in chain.accounts().items()}
        vesting = {
            device: sum(amount for _earned, amount in entries)
            for device, entries in chain.vesting().items()
        }
    banned = {proof.device: block.height for block in blocks for proof in block.frauds}
    last_ban = max(banned.values(), default=0)
    rewards: dict[bytes, int] = {}
    after: dict[bytes, int] = {}
    for block in blocks:
        for reward in block.rewards:
            rewards[reward.device] = rewards.get(reward.device, 0) + reward.amount
            if block.height > last_ban:
                after[reward.device] = after.get(reward.device, 0) + reward.amount
    return DeviceLedger(
        rewards=rewards,
        rewards_after_bans=after,
        banned=banned,
        frauds=sum(len(block.frauds) for block in blocks),
        height=len(blocks),
        spendable={d: spendable[d] for d in rewards if d in spendable},
        vesting=vesting,
    )
