"""atheris harness: ``LedgerCore.on_message`` on every channel it subscribes to, on one
single-validator core with live devices that lives across inputs (time advances and the
core ticks every few inputs).

The first byte picks the topic, the rest is the payload.  Properties checked on every
input: no exception; each ``Dropped`` action counted once in ``stats.dropped``; each
pending transaction undecided or accepted, not both.  Run it with run.py.
"""

import random
import sys
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports(include=["micromine"]):
    from micromine.ledger_node.chain.blocks import ChainTip
    from micromine.ledger_node.chain.state import Account
    from micromine.ledger_node.core.actions import Dropped
    from micromine.ledger_node.core.ledger import LedgerCore
    from micromine.protocol import codec, topics
    from micromine.protocol.device import DeviceHello
    from micromine.protocol.genesis import Genesis
    from micromine.protocol.topics import Channel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework import protocol_samples as ps

GENESIS = Genesis(
    chain_id=ps.CHAIN,
    timestamp_ms=ps.NOW_MS - 10_000,
    ledger_nodes=(ps.LEDGER.public,),
    balances=tuple(sorted((k.public, 10**9) for k in (ps.ALICE, ps.BOB))),
)
CORE = LedgerCore(
    genesis=GENESIS, key=ps.LEDGER, rng=random.Random(1),
    accounts={a: Account(b, 0) for a, b in GENESIS.balances},
    tip=ChainTip(0, GENESIS.hash, GENESIS.timestamp_ms), now_ms=ps.NOW_MS,
)  # fmt: skip
CORE.start(ps.NOW_MS)
for _device in (ps.DEVICE, ps.OTHER_DEVICE):
    _hello = codec.sign(DeviceHello(ps.CHAIN, _device.public, "v", 64, ps.NOW_MS), _device)
    CORE.on_message(topics.device_topic(ps.CHAIN, _device.public, Channel.HELLO),
                    codec.encode(_hello), ps.NOW_MS)  # fmt: skip

DEVICE = ps.DEVICE.public
TOPICS = [
    topics.submit(ps.CHAIN),
    topics.verdicts(ps.CHAIN, DEVICE),
    topics.device_topic(ps.CHAIN, DEVICE, Channel.HELLO),
    topics.device_topic(ps.CHAIN, DEVICE, Channel.HEARTBEAT),
    topics.device_topic(ps.CHAIN, DEVICE, Channel.DEVICE_STATUS),
    topics.consensus(ps.CHAIN, ps.LEDGER.public),
    topics.consensus(ps.CHAIN, ps.BOB.public),
    topics.sync_request(ps.CHAIN),
    topics.sync_reply(ps.CHAIN, CORE.replica.reply_to),
    topics.blocks(ps.CHAIN),
]
clock = [ps.NOW_MS]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    topic, payload = TOPICS[data[0] % len(TOPICS)], data[1:]
    before = sum(CORE.stats.dropped.values())
    actions = CORE.on_message(topic, payload, clock[0])
    drops = sum(1 for action in actions if isinstance(action, Dropped))
    if sum(CORE.stats.dropped.values()) - before != drops:
        raise AssertionError("a drop was not counted exactly once")
    if data[0] >= 0xF0:  # now and then, time passes
        clock[0] += 200
        CORE.on_tick(clock[0])
    if set(CORE.votes) & set(CORE.accepted) or set(CORE.votes) | set(CORE.accepted) != set(
        CORE.mempool.by_id
    ):
        raise AssertionError("pending transactions are inconsistent")


def seeds() -> list[bytes]:
    samples = {
        0: ps.submission(),
        1: ps.verdict(),
        2: ps.device_hello(),
        3: ps.heartbeat(),
        4: ps.device_status(),
        5: ps.prevote(),
        6: ps.precommit(),
        7: ps.sync_request(),
        8: ps.block(),
    }
    return [bytes([i]) + codec.encode(m) for i, m in samples.items()] + [b"\xf0"]


if __name__ == "__main__":
    harness.main(test_one_input, seeds)
