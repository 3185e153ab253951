"""Account summaries for rewarded devices: how an agent learns what the chain paid it.

A device agent keeps no copy of the chain, yet its owner wants to see rewards and a
balance.  So after each block, its proposer (the one publisher of the block itself)
publishes, retained at QoS 1 on ``accounts/<device>``, a small JSON summary for each
device the block rewarded: at most the block's rewards count, and at most one message
per rewarding block for a device, which a Raspberry Pi reads for free.

The summary is informational and unsigned, like ``blocks/json``: every figure in it
follows from the public blocks (``reward``, ``balance``, ``unvested``, ``nonce``) except
``agreed``/``disagreed``/``reputation``, which are the publishing node's own tally of
how the device's judgements matched decided outcomes (not chain state: another node's
count may differ slightly, and it restarts from zero when the node restarts).
Pure: no I/O, no clock.
"""

import json
from collections.abc import Mapping
from typing import Any

from micromine.ledger_node.chain.state import EMPTY_ACCOUNT, Account, Vesting
from micromine.ledger_node.core.devices import DeviceRecord
from micromine.protocol import topics
from micromine.protocol.block import Block
from micromine.protocol.topics import Channel, Publish

__all__ = ["compute_account_summary", "get_account_summaries"]


def compute_account_summary(
    block: Block,
    device: bytes,
    *,
    reward: int,
    account: Account,
    unvested: int,
    record: DeviceRecord | None,
    node: bytes,
) -> dict[str, Any]:
    """The JSON object published for ``device`` after ``block`` (PROTOCOL.md)."""
    summary: dict[str, Any] = {
        "chain_id": block.header.chain_id,
        "device": device.hex(),
        "height": block.height,
        "timestamp": block.header.timestamp_ms,
        "reward": reward,
        "balance": account.balance,
        "unvested": unvested,
        "nonce": account.nonce,
        "node": node.hex(),
    }
    if record is not None:
        summary["agreed"] = record.agreed
        summary["disagreed"] = record.disagreed
        summary["reputation"] = round(record.reputation, 4)
    return summary


def get_account_summaries(
    block: Block,
    accounts: Mapping[bytes, Account],
    vesting: Vesting,
    records: Mapping[bytes, DeviceRecord],
    node: bytes,
) -> list[Publish]:
    """One retained publication per device ``block`` rewarded, from the state after it."""
    rewards: dict[bytes, int] = {}
    for reward in block.rewards:
        rewards[reward.device] = rewards.get(reward.device, 0) + reward.amount
    out = []
    for device, amount in sorted(rewards.items()):
        unvested = sum(value for _, value in vesting.get(device, ()))
        summary = compute_account_summary(
            block,
            device,
            reward=amount,
            account=accounts.get(device, EMPTY_ACCOUNT),
            unvested=unvested,
            record=records.get(device),
            node=node,
        )
        payload = json.dumps(summary, separators=(",", ":")).encode()
        topic = topics.accounts(block.header.chain_id, device)
        out.append(Publish.on(Channel.ACCOUNTS, topic, payload))
    return out
