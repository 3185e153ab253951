"""Fuzzing the device agent's work handler, ``AgentCore.on_work``.

Properties, for every input: it returns, never raises; it answers with exactly one
signed Verdict for the batch (and a Judged note), or with exactly one Discarded that
names the reason; each Discarded is counted once in the stats under that reason; bytes
that are not a WorkBatch are MALFORMED.  Valid batches among the garbage -- including
forged copies of them sent first -- are still judged, once.
"""

import dataclasses
from collections import OrderedDict

from framework import protocol_samples
from framework.fuzz_support import fuzz_settings, hostile
from hypothesis import example, given
from hypothesis import strategies as st

from micromine.device_agent.core import AgentCore, AgentStats, Discarded, Drop, Judged
from micromine.protocol import codec, topics
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.errors import DecodeError
from micromine.protocol.messages import Verdict, WorkBatch
from micromine.protocol.topics import Publish

CHAIN = protocol_samples.CHAIN
NOW = protocol_samples.NOW_MS
DEVICE = protocol_samples.DEVICE
LEDGER = protocol_samples.LEDGER
ROGUE = protocol_samples.key("rogue ledger")

COUNTER_OF = {
    Drop.MALFORMED: "malformed",
    Drop.WRONG_CHAIN: "wrong_chain",
    Drop.UNKNOWN_ISSUER: "unknown_issuer",
    Drop.DUPLICATE: "duplicates",
    Drop.TX_ROOT_MISMATCH: "tx_root_mismatches",
    Drop.BAD_SIGNATURE: "bad_signature_batches",
}


def batches() -> list[WorkBatch]:
    genuine = protocol_samples.work_batch()
    assignment = genuine.assignment
    rogue = codec.sign(dataclasses.replace(assignment, issuer=ROGUE.public), ROGUE)

    def under(**changes: object) -> WorkBatch:
        return protocol_samples.work_batch(assignment=protocol_samples.assignment(**changes))

    return [
        genuine,
        under(seq=8, deadline_ms=0),  # late: still answered
        under(seq=9, chain_id="otherchain"),
        WorkBatch(rogue, genuine.txs),  # an issuer the agent may not know
        # Forged copies of the genuine one: a bad signature, other transactions.
        WorkBatch(dataclasses.replace(assignment, signature=bytes(64)), genuine.txs),
        WorkBatch(assignment, genuine.txs[:1]),
    ]


def is_genuine(batch: WorkBatch) -> bool:
    assignment = batch.assignment
    return (
        assignment.chain_id == CHAIN
        and assignment.issuer == LEDGER.public
        and compute_batch_root(batch.txs) == assignment.tx_root
        and codec.is_signature_valid(assignment)
    )


BATCHES = batches()
GENUINE = [b for b in BATCHES if is_genuine(b)]


def counters(stats: AgentStats) -> dict[str, int]:
    return {name: getattr(stats, name) for name in (*COUNTER_OF.values(), "batches")}


def work_checked(agent: AgentCore, payload: bytes) -> Judged | Discarded:
    before = counters(agent.stats)
    outputs = agent.on_work(payload, NOW)  # must not raise
    after = counters(agent.stats)
    changed = {name for name in after if after[name] != before[name]}
    if len(outputs) == 1:
        (discarded,) = outputs
        assert isinstance(discarded, Discarded)
        assert changed == {COUNTER_OF[discarded.why]}
        try:
            codec.decode(payload, WorkBatch)
        except DecodeError:
            assert discarded.why is Drop.MALFORMED
        return discarded
    publish, judged = outputs
    assert isinstance(publish, Publish) and isinstance(judged, Judged)
    assert changed == {"batches"}
    batch = codec.decode(payload, WorkBatch)
    verdict = codec.decode(publish.payload, Verdict)
    assert publish.topic == topics.verdicts(CHAIN, DEVICE.public)
    assert codec.is_signature_valid(verdict) and verdict.device == DEVICE.public
    assert verdict.batch_id == batch.id == judged.batch_id
    assert [j.tx_id for j in verdict.judgements] == [tx.id for tx in batch.txs]
    return judged


payloads = st.one_of(
    hostile(BATCHES, codec.max_bytes(WorkBatch)),
    st.sampled_from([codec.encode(b) for b in BATCHES]),  # replays
)


@fuzz_settings(200)
@given(st.lists(payloads, min_size=1, max_size=8), st.booleans(), st.integers(1, 3))
@example([codec.encode(BATCHES[4]), codec.encode(BATCHES[0])], True, 1)  # forged copy first
def test_work_handler_answers_once_or_discards_with_a_counted_reason(
    garbage: list[bytes], pinned_issuer: bool, recent: int
) -> None:
    agent = AgentCore(
        DEVICE,
        CHAIN,
        known_issuers=frozenset({LEDGER.public}) if pinned_issuer else None,
        recent_batches=recent,
    )
    remembered: OrderedDict[bytes, None] = OrderedDict()  # a model of the agent's dedupe

    def work(payload: bytes) -> Judged | Discarded:
        outcome = work_checked(agent, payload)
        if isinstance(outcome, Judged) or outcome.why is Drop.DUPLICATE:
            batch_id = outcome.batch_id
            assert batch_id is not None
            assert isinstance(outcome, Judged) == (batch_id not in remembered)
            remembered[batch_id] = None
            remembered.move_to_end(batch_id)
            if len(remembered) > recent:
                remembered.popitem(last=False)
        return outcome

    for payload in garbage:
        work(payload)
    # The genuine batches are still judged after all that (unless just judged: then it
    # is a duplicate), and a replay is a duplicate.
    for batch in GENUINE:
        work(codec.encode(batch))
        replay = work(codec.encode(batch))
        assert isinstance(replay, Discarded) and replay.why is Drop.DUPLICATE
