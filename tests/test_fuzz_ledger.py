"""Fuzzing the ledger core's handlers: ``LedgerCore.on_message`` on every channel it
subscribes to (submit, verdicts, hello, heartbeat, device status, consensus, sync request,
sync reply) and on topics it does not.

Properties, for every input:
* the handler returns; it never raises;
* every ``Dropped`` action is counted once in ``stats.dropped`` (and nothing else is);
* bytes that do not decode as the channel's kind are a counted drop with the decode
  failure as reason, except the documented IGNOREs: an empty retained device status (a
  cleared retained message) and a sync reply on another node's reply channel;
* the pending transactions stay consistent (each one undecided or accepted, not both);
* valid traffic interleaved with the garbage is still processed: every valid transaction
  is committed and its submitter gets a COMMITTED receipt, and the coins add up.

The single-node tests use test_ledger_core's harness; the Byzantine-validator test runs
four cores wired as in test_ledger_replicas.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from framework import protocol_samples
from framework.fuzz_support import fuzz_settings, hostile
from hypothesis import example, given
from hypothesis import strategies as st
from test_ledger_core import CHAIN, NODE, SENDERS, Harness, key, make_harness, tx
from test_ledger_replicas import CHAIN as NET_CHAIN
from test_ledger_replicas import NODES, Net, make_net, submit

from micromine.ledger_node.chain.blocks import build_block
from micromine.ledger_node.core.actions import Action, Dropped
from micromine.ledger_node.core.ledger import LedgerCore
from micromine.protocol import topics
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.block import Block, CommitSignature
from micromine.protocol.codec import decode, encode, max_bytes, sign, sign_commit
from micromine.protocol.consensus import MAX_ROUND, NIL, Precommit, Prevote, Proposal, SyncRequest
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import ReceiptStatus
from micromine.protocol.limits import MAX_TIMESTAMP_MS
from micromine.protocol.messages import Assignment, Judgement, Submission, Verdict
from micromine.protocol.topics import Channel

DEVICE = key(10)  # the first of the harness's devices
OUTSIDER = key(500)  # a key no genesis or harness knows
REPLY_TO = b"r" * 16

# The kind each subscribed channel expects (None: any consensus message).
KINDS: dict[Channel, type[Any] | None] = {
    Channel.SUBMIT: Submission,
    Channel.VERDICTS: Verdict,
    Channel.HELLO: DeviceHello,
    Channel.HEARTBEAT: Heartbeat,
    Channel.DEVICE_STATUS: DeviceStatus,
    Channel.CONSENSUS: None,
    Channel.SYNC_REQUEST: SyncRequest,
    Channel.SYNC_REPLY: Block,
}


def _samples() -> dict[Channel, list[Any]]:
    """Valid (or validly shaped) messages per channel, as bases for the hostile inputs:
    genuine ones, and signed ones with the wrong chain, signer or topic."""
    good = tx(SENDERS[0], 0)
    good_tx = encode(good)
    other_chain = "otherchain"

    def verdict(chain: str) -> Verdict:
        """A verdict under an assignment signed by a validator (NODE), of ``chain``."""
        unsigned = Assignment(chain, NODE.public, 1, 0, 10_000, compute_batch_root([good]))
        return Verdict(chain, DEVICE.public, sign(unsigned, NODE), (Judgement.of(good, 0),))

    device_messages = {
        Channel.HELLO: lambda chain: DeviceHello(chain, DEVICE.public, "v", 64, 5),
        Channel.HEARTBEAT: lambda chain: Heartbeat(chain, DEVICE.public, 1, 5, 0, 2),
        Channel.DEVICE_STATUS: lambda chain: DeviceStatus(chain, DEVICE.public, True, 5),
    }
    prevote = Prevote(CHAIN, 1, 1, NIL, OUTSIDER.public)
    precommit = Precommit(
        CHAIN, 1, 1, sha256(b"h"), OUTSIDER.public, sign_commit(1, sha256(b"h"), CHAIN, OUTSIDER)
    )
    samples: dict[Channel, list[Any]] = {
        Channel.SUBMIT: [
            Submission(CHAIN, REPLY_TO, (good_tx,)),
            Submission(CHAIN, REPLY_TO, (good_tx, b"\x00" * 600, b"\x8a", good_tx)),
            Submission(other_chain, REPLY_TO, (good_tx,)),
        ],
        Channel.VERDICTS: [sign(verdict(CHAIN), DEVICE), sign(verdict(other_chain), DEVICE)],
        Channel.CONSENSUS: [
            sign(prevote, OUTSIDER),
            sign(precommit, OUTSIDER),
            protocol_samples.proposal(),
            sign(dataclasses.replace(prevote, voter=NODE.public), NODE),  # our own, echoed
        ],
        Channel.SYNC_REQUEST: [
            SyncRequest(CHAIN, 1, 5, b"q" * 16),
            SyncRequest(other_chain, 1, 1, b"q" * 16),
        ],
        Channel.SYNC_REPLY: [protocol_samples.block()],
    }
    for channel, build in device_messages.items():
        samples[channel] = [sign(build(CHAIN), DEVICE), sign(build(other_chain), DEVICE)]
    return samples


SAMPLES = _samples()


@st.composite
def channel_inputs(draw: Any) -> tuple[Channel, str, bytes]:
    """(channel, topic key choice, payload): the key is resolved against the core later."""
    channel = draw(st.sampled_from(list(KINDS)))
    kind = KINDS[channel]
    limit = max_bytes(kind) if kind is not None else max_bytes(Proposal)
    payload = draw(
        st.one_of(
            hostile(SAMPLES[channel], limit),
            st.sampled_from([encode(m) for m in SAMPLES[channel]]),
            st.just(b""),
        )
    )
    key_choice = draw(st.sampled_from(["own", "other", "outsider"]))
    return channel, key_choice, payload


def topic_for(core: LedgerCore, channel: Channel, key_choice: str) -> str:
    if channel is Channel.SUBMIT:
        return topics.submit(CHAIN)
    if channel is Channel.SYNC_REQUEST:
        return topics.sync_request(CHAIN)
    if channel is Channel.SYNC_REPLY:
        reply_to = core.replica.reply_to if key_choice == "own" else bytes(16)
        return topics.sync_reply(CHAIN, reply_to)
    own = NODE.public if channel is Channel.CONSENSUS else DEVICE.public
    node_key = {"own": own, "other": key(11).public, "outsider": OUTSIDER.public}[key_choice]
    if channel is Channel.CONSENSUS:
        return topics.consensus(CHAIN, node_key)
    if channel is Channel.VERDICTS:
        return topics.verdicts(CHAIN, node_key)
    return topics.device_topic(CHAIN, node_key, channel)


junk_topics = st.one_of(
    st.text(max_size=80),
    st.text(max_size=40).map(lambda rest: f"micromine/{CHAIN}/{rest}"),
    st.sampled_from([topics.blocks(CHAIN), topics.blocks_json(CHAIN), topics.work(CHAIN, bytes(32)),
                     topics.receipts(CHAIN, bytes(16)), topics.submit("otherchain")]),
)  # fmt: skip


def feed_checked(core: LedgerCore, topic: str, payload: bytes, now_ms: int) -> list[Action]:
    """``on_message`` plus the per-input properties of the module docstring."""
    before = sum(core.stats.dropped.values())
    actions = core.on_message(topic, payload, now_ms)  # must not raise
    drops = [a for a in actions if isinstance(a, Dropped)]
    assert sum(core.stats.dropped.values()) - before == len(drops)
    parsed = topics.parse(core.chain_id, topic)
    kind_known = parsed is not None and parsed.channel in KINDS
    if not kind_known:
        assert [d.reason for d in drops] == ["unexpected_topic"]
    elif not _ignored(core, parsed.channel, parsed.key, payload):
        try:
            decode(payload, KINDS[parsed.channel])
        except DecodeError as exc:
            assert f"decode_{exc.code.name.lower()}" in [d.reason for d in drops]
    check_consistent(core)
    return actions


def _ignored(core: LedgerCore, channel: Channel, key: bytes | None, payload: bytes) -> bool:
    """The documented IGNOREs that come before decoding."""
    if channel in (Channel.DEVICE_STATUS, Channel.HELLO) and not payload:
        return True  # a cleared retained status or hello
    return channel is Channel.SYNC_REPLY and key != core.replica.reply_to


def check_consistent(core: LedgerCore) -> None:
    pending = set(core.mempool.by_id)
    assert set(core.votes).isdisjoint(core.accepted)
    assert set(core.votes) | set(core.accepted) == pending


def run_until(h: Harness, done: Callable[[], bool], rounds: int = 60) -> None:
    for _ in range(rounds):
        if done():
            return
        h.heartbeat_all()
        h.tick(100)
        h.answer_work()


@fuzz_settings(150)
@given(st.lists(st.one_of(channel_inputs(), st.tuples(junk_topics, st.binary(max_size=64))),
                min_size=1, max_size=12))  # fmt: skip
@example([(Channel.DEVICE_STATUS, "own", b"")])
@example([(Channel.SYNC_REPLY, "outsider", b"\xff")])
def test_every_handler_refuses_garbage_with_a_counted_reason(inputs: list[Any]) -> None:
    h = make_harness()
    for item in inputs:
        if len(item) == 3:
            channel, key_choice, payload = item
            topic = topic_for(h.core, channel, key_choice)
        else:
            topic, payload = item
        h._record(feed_checked(h.core, topic, payload, h.now))


@fuzz_settings(60)
@given(
    st.lists(st.tuples(st.integers(0, 3), channel_inputs()), max_size=10),
    st.lists(st.integers(0, 2), min_size=1, max_size=4),
)
def test_valid_traffic_among_garbage_still_commits(
    garbage: list[tuple[int, tuple[Channel, str, bytes]]], per_sender: list[int]
) -> None:
    """Garbage before, between and after valid submissions (in phases 0..3), with the
    valid traffic replayed as well: every valid transaction commits."""
    h = make_harness()
    total_before = sum(a.balance for a in h.core.accounts.values())
    txs = [tx(SENDERS[i], n) for i, count in enumerate(per_sender) for n in range(count + 1)]
    firsts, laters = [t for t in txs if t.nonce == 0], [t for t in txs if t.nonce > 0]

    def inject(phase: int) -> None:
        for when, (channel, key_choice, payload) in garbage:
            if when == phase:
                topic = topic_for(h.core, channel, key_choice)
                h._record(feed_checked(h.core, topic, payload, h.now))

    inject(0)
    first = h.submit([encode(t) for t in firsts])
    inject(1)
    if laters:
        h.submit([encode(t) for t in laters], reply_to=b"s" * 16)
    h.heartbeat_all()
    h.tick(100)
    replays = [p for p in h.published if "/work/" not in p.topic]
    inject(2)
    h.answer_work()
    for publish in replays:  # our own receipts and blocks are not on subscribed topics
        feed_checked(h.core, publish.topic, publish.payload, h.now)
    h._record(first)
    inject(3)
    ids = {t.id for t in txs}
    run_until(h, lambda: ids <= {t.id for b in h.blocks() for t in b.txs})
    assert ids <= {t.id for b in h.blocks() for t in b.txs}
    receipts = h.receipts()
    assert all(receipts[t.id] == (ReceiptStatus.COMMITTED, receipts[t.id][1]) for t in txs)
    minted = h.core.params.block_reward * len(h.blocks())
    vesting = sum(amount for entries in h.core.vesting.values() for _, amount in entries)
    assert sum(a.balance for a in h.core.accounts.values()) + vesting == total_before + minted
    check_consistent(h.core)


# ---- consensus with a Byzantine validator ----------------------------------------------

BYZANTINE = NODES[3]
rounds = st.one_of(st.integers(1, 4), st.integers(1, MAX_ROUND))


@st.composite
def byzantine_messages(draw: Any, net: Net) -> tuple[str, bytes]:
    """A message a faulty validator (validly signed) or anyone else might send."""
    height = net.cores[0].replica.consensus.height + draw(st.integers(-1, 2))
    height = max(height, 0)
    seen = [p for p in net.delivered if "/consensus/" in p.topic]
    hashes = [NIL, sha256(b"nothing")] + [
        m.block.hash for m in (decode(p.payload) for p in seen[-40:]) if isinstance(m, Proposal)
    ]
    block_hash = draw(st.sampled_from(hashes))
    signer = draw(st.sampled_from([BYZANTINE, BYZANTINE, OUTSIDER]))
    chain = draw(st.sampled_from([NET_CHAIN, NET_CHAIN, "otherchain"]))
    topic_key = draw(st.sampled_from([signer.public, NODES[0].public, OUTSIDER.public]))
    round_ = draw(rounds)
    match draw(st.sampled_from(["prevote", "precommit", "proposal", "replay", "sync", "bytes"])):
        case "prevote":
            message: Any = sign(Prevote(chain, height, round_, block_hash, signer.public), signer)
        case "precommit":
            commit = bytes(64)
            if block_hash != NIL:
                commit = sign_commit(round_, block_hash, chain, signer)
                commit = draw(st.sampled_from([commit, bytes(63) + b"\x01"]))
            message = sign(
                Precommit(chain, height, round_, block_hash, signer.public, commit), signer
            )
        case "proposal":
            block = protocol_samples.proposed_block()
            if any(net.committed.values()):
                chain_blocks = max(net.committed.values(), key=len)
                block = dataclasses.replace(chain_blocks[-1], commit_round=0, certificate=())
            header = dataclasses.replace(block.header, height=height, proposer=signer.public)
            block = dataclasses.replace(block, header=header)
            pol = draw(st.integers(0, round_ - 1))
            message = sign(Proposal(chain, height, round_, pol, block, signer.public), signer)
        case "replay" if seen:
            publish = draw(st.sampled_from(seen))
            return topics.consensus(NET_CHAIN, topic_key), publish.payload
        case "sync":
            return byzantine_sync(draw, net)
        case _:
            return topics.consensus(NET_CHAIN, topic_key), draw(
                hostile([protocol_samples.prevote()])
            )
    return topics.consensus(NET_CHAIN, topic_key), encode(message)


def byzantine_sync(draw: Any, net: Net) -> tuple[str, bytes]:
    """A sync request, or a sync reply (to a node's own channel) with a forged, stale or
    short certificate."""
    core = draw(st.sampled_from(net.cores))
    if draw(st.booleans()):
        first = draw(st.integers(1, 10))
        request = SyncRequest(NET_CHAIN, first, first + draw(st.integers(0, 63)), b"z" * 16)
        return topics.sync_request(NET_CHAIN), encode(request)
    chain_blocks = max(net.committed.values(), key=len, default=[])
    block = draw(st.sampled_from(chain_blocks)) if chain_blocks else protocol_samples.block()
    height = core.replica.consensus.height
    header = dataclasses.replace(block.header, height=height)
    round_ = draw(st.integers(1, 3))
    signers = draw(st.lists(st.sampled_from([BYZANTINE, OUTSIDER]), min_size=1, max_size=2))
    certificate = tuple(
        CommitSignature(s.public, sign_commit(round_, header.hash, NET_CHAIN, s))
        for s in sorted(set(signers), key=lambda s: s.public)
    )
    forged = dataclasses.replace(block, header=header, commit_round=round_, certificate=certificate)
    payload = draw(st.sampled_from([encode(block), encode(forged)]))
    return topics.sync_reply(NET_CHAIN, core.replica.reply_to), payload


@fuzz_settings(25)
@given(st.data())
def test_byzantine_validator_and_garbage_do_not_stop_consensus(data: st.DataObject) -> None:
    """Four validators, one of them faulty (its key also signs arbitrary messages), and
    outsiders: every node survives every input, counts each drop, and the honest three
    keep agreeing and committing."""
    net = make_net()
    txs = submit(net, 1)
    for step in range(30):
        for _ in range(data.draw(st.integers(0, 3), label=f"attacks at step {step}")):
            topic, payload = data.draw(byzantine_messages(net), label="attack")
            for index, core in enumerate(net.cores):
                net.take(index, feed_checked(core, topic, payload, net.now))
            net.deliver()
        net.step()
    more = submit(net, 1, nonce0=1)
    wanted = {t.id for t in [*txs, *more]}
    for _ in range(150):
        if all(wanted <= {t.id for b in net.committed.get(i, []) for t in b.txs} for i in range(3)):
            break
        net.step()
    honest = [net.committed.get(i, []) for i in range(3)]
    shortest = min(len(chain) for chain in honest)
    assert all([b.hash for b in c[:shortest]] == [b.hash for b in honest[0][:shortest]]
               for c in honest)  # fmt: skip
    assert all(wanted <= {t.id for b in chain for t in b.txs} for chain in honest)


def _propose_a_block_dated_at_the_end_of_time() -> tuple[Net, KeyPair, list[Any]]:
    """A faulty proposer's block dated MAX_TIMESTAMP_MS: valid (it is after its parent),
    but not timely; then valid transactions arrive."""
    net = make_net()
    core = net.cores[0]
    consensus = core.replica.consensus
    faulty = next(k for k in NODES if k.public == consensus.proposer(consensus.height, 1))
    built = build_block(
        core.state, proposer=faulty, timestamp_ms=MAX_TIMESTAMP_MS, candidates=[],
        justification={}, seal=False,
    )  # fmt: skip
    proposal = sign(Proposal(NET_CHAIN, consensus.height, 1, 0, built.block, faulty.public), faulty)
    net.broadcast(topics.consensus(NET_CHAIN, faulty.public), encode(proposal))
    return net, faulty, submit(net, 1)


def test_a_block_dated_at_the_end_of_time_is_not_decided_and_the_chain_goes_on() -> None:
    """Found while writing the proposal fuzzer: such a block passed every validity rule
    and was decided; the next honest proposer then had to date its block after
    MAX_TIMESTAMP_MS, and every honest node crashed in turn (and every transaction would
    have expired).  Now honest nodes prevote nil on a fresh proposal dated beyond their
    clock (``Replica.is_timely``), so it is never decided, and nothing crashes."""
    net, faulty, txs = _propose_a_block_dated_at_the_end_of_time()
    for _ in range(150):
        net.step()  # must not raise
    honest = [i for i, core in enumerate(net.cores) if core.key != faulty]
    wanted = {t.id for t in txs}
    for i in honest:
        assert net.cores[i].stats.dropped["consensus.untimely_block"] >= 1
        chain = net.committed[i]
        assert all(b.header.timestamp_ms < MAX_TIMESTAMP_MS for b in chain)
        assert wanted <= {t.id for b in chain for t in b.txs}
