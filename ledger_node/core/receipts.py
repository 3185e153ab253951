"""Receipts collected while handling one event, sent as one signed message per channel.

Batching matters: a Submission of 1000 transactions gets one Receipts message back,
not 1000.  Only a transaction's owner answers (peers.py), so the book is asked through
``note_if_mine``; a node that took over the work of an owner that did not do it
(ledger.py, STALL_BATCHES) ``adopt``s the transaction and answers for it too, until it
is final.  And a final answer is given by every node the second time it is due: a
submitter that sends an item again got no answer (or its owner withholds them), and
every node decides the same, so the answer is as true from any of them.  What each
status promises is the core's business (ledger.py, "Receipt
rules"); the book only packs them.
"""

from collections import OrderedDict

from micromine.ledger_node.core.peers import PeerTracker
from micromine.protocol import topics
from micromine.protocol.codec import encode, sign
from micromine.protocol.crypto import KeyPair
from micromine.protocol.kinds import FINAL_STATUSES, ReceiptStatus
from micromine.protocol.limits import MAX_RECEIPT_ITEMS
from micromine.protocol.messages import Receipt, Receipts
from micromine.protocol.topics import Channel, Publish

FINAL_REMEMBERED = 16_384  # items whose final answer was due, to answer a repeat


class ReceiptBook:
    def __init__(self, chain_id: str, key: KeyPair, peers: PeerTracker) -> None:
        self.chain_id = chain_id
        self.key = key
        self.peers = peers
        self._pending: dict[bytes, list[Receipt]] = {}  # reply_to -> receipts
        self.adopted: set[bytes] = set()  # items we answer for though not their owner
        # Items whose final answer was due here before (bounded, oldest forgotten).
        self._final_due: OrderedDict[bytes, None] = OrderedDict()

    def adopt(self, item_id: bytes) -> None:
        self.adopted.add(item_id)

    def note_if_mine(
        self,
        reply_to: bytes,
        item_id: bytes,
        status: ReceiptStatus,
        value: int,
        now_ms: int,
        *,
        detail: tuple[int, int] | None = None,
    ) -> None:
        """``detail``: (committed height, sender's next nonce) for a HELD receipt or a
        rejection that depends on the chain state (messages.Receipt)."""
        again = False
        if status in FINAL_STATUSES:
            again = item_id in self._final_due
            self._final_due[item_id] = None
            self._final_due.move_to_end(item_id)
            if len(self._final_due) > FINAL_REMEMBERED:
                self._final_due.popitem(last=False)
        if again or item_id in self.adopted or self.peers.mine(item_id, now_ms):
            if status in FINAL_STATUSES:
                self.adopted.discard(item_id)
            height, next_nonce = detail if detail is not None else (None, None)
            receipt = Receipt(item_id, int(status), int(value), height, next_nonce)
            self._pending.setdefault(reply_to, []).append(receipt)

    def flush(self, now_ms: int) -> list[Publish]:
        publications = []
        for reply_to, items in self._pending.items():
            for start in range(0, len(items), MAX_RECEIPT_ITEMS):
                chunk = tuple(items[start : start + MAX_RECEIPT_ITEMS])
                message = Receipts(self.chain_id, self.key.public, reply_to, now_ms, chunk)
                topic = topics.receipts(self.chain_id, reply_to)
                publications.append(
                    Publish.on(Channel.RECEIPTS, topic, encode(sign(message, self.key)))
                )
        self._pending.clear()
        return publications
