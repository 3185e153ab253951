"""The JSON rendering of a block, for dashboards, Home Assistant and mosquitto_sub."""

import json
from typing import Any

from micromine.protocol.block import Block


def block_to_dict(block: Block) -> dict[str, Any]:
    header = block.header
    return {
        "chain_id": header.chain_id,
        "height": header.height,
        "hash": block.hash.hex(),
        "prev_hash": header.prev_hash.hex(),
        "timestamp": header.timestamp_ms,
        "proposer": header.proposer.hex(),
        "tx_root": header.tx_root.hex(),
        "state_root": header.state_root.hex(),
        "tx_count": len(block.txs),
        "txs": [tx.id.hex() for tx in block.txs],
        "verdicts": len(block.verdicts),
        "rewards": {reward.device.hex(): reward.amount for reward in block.rewards},
        "registrations": [hello.device.hex() for hello in block.registrations],
        "approvals": {approval.device.hex(): approval.approve for approval in block.approvals},
        "frauds": [proof.device.hex() for proof in block.frauds],
        "commit_round": block.commit_round,
        "signers": [entry.signer.hex() for entry in block.certificate],
    }


def block_to_json(block: Block) -> bytes:
    return json.dumps(block_to_dict(block), separators=(",", ":")).encode()
