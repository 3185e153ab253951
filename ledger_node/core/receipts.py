"""Receipts collected while handling one event, sent as one signed message per channel.

Batching matters: a Submission of 1000 transactions gets one Receipts message back,
not 1000.  Only a transaction's owner answers (peers.py), so the book is asked through
``note_if_mine``.  What each status promises is the core's business (ledger.py, "Receipt
rules"); the book only packs them.
"""

from micromine.ledger_node.core.peers import PeerTracker
from micromine.protocol import topics
from micromine.protocol.codec import encode, sign
from micromine.protocol.crypto import KeyPair
from micromine.protocol.kinds import ReceiptStatus
from micromine.protocol.limits import MAX_RECEIPT_ITEMS
from micromine.protocol.messages import Receipt, Receipts
from micromine.protocol.topics import Channel, Publish


class ReceiptBook:
    def __init__(self, chain_id: str, key: KeyPair, peers: PeerTracker) -> None:
        self.chain_id = chain_id
        self.key = key
        self.peers = peers
        self._pending: dict[bytes, list[Receipt]] = {}  # reply_to -> receipts

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
        if self.peers.mine(item_id, now_ms):
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
