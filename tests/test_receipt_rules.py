"""The receipt rules (docs/PROTOCOL.md section 8.1) on ledger cores in memory: a later
nonce waits for its predecessor instead of being refused, a state-dependent rejection
names the committed height and the sender's next nonce, and a node replaying its chain
after a restart holds what it cannot judge yet instead of rejecting it."""

import random

from test_ledger_core import SENDERS, Harness, make_harness, tx
from test_ledger_replicas import CHAIN as REPLICA_CHAIN
from test_ledger_replicas import NODES, make_net, submit

from micromine.ledger_node.chain.blocks import ChainTip
from micromine.ledger_node.chain.state import Account
from micromine.ledger_node.core.admission import HOLD_MS
from micromine.ledger_node.core.ledger import LedgerCore
from micromine.protocol import topics
from micromine.protocol.codec import decode, encode
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.messages import Receipt, Receipts
from micromine.protocol.topics import Publish


def receipts_of(published: list[Publish]) -> list[tuple[bytes, Receipt]]:
    """(issuer, receipt) of every receipt published, in order."""
    found = []
    for publish in published:
        if "/receipts/" in publish.topic:
            message = decode(publish.payload, Receipts)
            found += [(message.issuer, receipt) for receipt in message.receipts]
    return found


def committed(h: Harness) -> set[bytes]:
    return {t.id for b in h.blocks() for t in b.txs}


def test_a_later_nonce_waits_for_its_predecessor_and_both_commit() -> None:
    h = make_harness()
    first, second = tx(SENDERS[0], 0), tx(SENDERS[0], 1)
    h.submit([encode(second)])
    assert h.receipts()[second.id] == (ReceiptStatus.HELD, Reason.NONCE_GAP)
    assert h.details()[second.id] == (h.core.tip.height, 0)  # nonce 0 is missing
    h.submit([encode(first)])  # the missing nonce: both admitted at once
    assert h.receipts()[first.id] == h.receipts()[second.id] == (ReceiptStatus.PENDING, 0)
    h.run()
    assert committed(h) == {first.id, second.id}
    assert all(r.status != ReceiptStatus.REJECTED for _, r in receipts_of(h.published))


def test_a_nonce_gap_is_rejected_after_the_hold_naming_the_missing_nonce() -> None:
    h = make_harness()
    second = tx(SENDERS[0], 1)
    h.submit([encode(second)])
    for _ in range(HOLD_MS // 1000 - 1):
        h.tick(1000)
    assert h.receipts()[second.id][0] == ReceiptStatus.HELD
    h.tick(1000)
    h.tick(1000)
    assert h.receipts()[second.id] == (ReceiptStatus.REJECTED, Reason.NONCE_GAP)
    assert h.details()[second.id] == (h.core.tip.height, 0)
    assert not h.core.mempool.held and h.core.mempool.bytes == 0


def test_a_used_nonce_is_rejected_with_the_height_and_the_next_nonce() -> None:
    h = make_harness()
    first = tx(SENDERS[0], 0)
    h.submit([encode(first)])
    h.run()
    height = h.receipts()[first.id][1]
    replay = tx(SENDERS[0], 0, amount=99)
    h.submit([encode(replay)])
    assert h.receipts()[replay.id] == (ReceiptStatus.REJECTED, Reason.BAD_NONCE)
    assert h.details()[replay.id] == (height, 1)


def test_a_nonce_another_pending_transaction_has_waits_for_its_fate() -> None:
    h = make_harness()
    first, rival = tx(SENDERS[0], 0), tx(SENDERS[0], 0, amount=11)
    h.submit([encode(first), encode(rival)])
    assert h.receipts()[rival.id] == (ReceiptStatus.HELD, Reason.BAD_NONCE)
    h.run()
    assert committed(h) == {first.id}
    assert h.receipts()[rival.id] == (ReceiptStatus.REJECTED, Reason.BAD_NONCE)


def test_held_transactions_count_against_the_sender_limit() -> None:
    h = make_harness(max_pending_per_sender=2)
    txs = [tx(SENDERS[0], n) for n in (0, 2, 3)]
    h.submit([encode(t) for t in txs])
    assert [h.receipts()[t.id] for t in txs] == [
        (ReceiptStatus.PENDING, 0),
        (ReceiptStatus.HELD, Reason.NONCE_GAP),
        (ReceiptStatus.REJECTED, Reason.SENDER_LIMIT),
    ]


def test_a_restarted_node_behind_the_chain_holds_instead_of_rejecting() -> None:
    """A node down while the others committed comes back with its old state: it must
    not answer the senders' next nonces with BAD_NONCE; it holds them until it has
    caught up, and everything submitted commits everywhere."""
    net = make_net()
    submit(net, 1)
    for _ in range(40):
        net.step()
    net.down.add(1)
    kept = list(net.committed[1])  # what its database holds
    submit(net, 2, nonce0=1)
    for _ in range(150):
        net.step()
    assert len(net.committed[0]) > len(kept)
    genesis = net.cores[0].genesis
    restarted = LedgerCore(
        genesis=genesis,
        key=NODES[1],
        rng=random.Random(11),
        accounts={a: Account(b, 0) for a, b in genesis.balances},
        tip=ChainTip(0, genesis.hash, genesis.timestamp_ms),
        now_ms=net.now,
    )
    reply = topics.sync_reply(REPLICA_CHAIN, restarted.replica.reply_to)
    for block in kept:  # resumed from its database: the chain as it was
        restarted.on_message(reply, encode(block), net.now)
    assert restarted.tip.height == len(kept)
    net.cores[1] = restarted
    net.take(1, restarted.start(net.now))
    net.down.discard(1)
    before = len(net.delivered)
    latest = submit(net, 4, nonce0=3)  # at once: the restarted node is far behind
    for _ in range(150):
        net.step()
    answers = receipts_of(net.delivered[before:])
    from_restarted = [r for issuer, r in answers if issuer == NODES[1].public]
    assert from_restarted, "the restarted node answered nothing"
    assert all(r.status != ReceiptStatus.REJECTED for _, r in answers), answers
    assert {(r.status, r.value) for r in from_restarted} & {
        (ReceiptStatus.HELD, Reason.CATCHING_UP)
    }
    chains = [[b.hash for b in net.committed[i]] for i in range(4)]
    assert chains[1] == chains[0] == chains[2] == chains[3]
    assert {t.id for t in latest} <= {t.id for b in net.committed[1] for t in b.txs}
