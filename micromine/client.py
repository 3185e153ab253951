"""A client of the ledger: submit transactions, follow their receipts and the blocks.

Used by ``micromine tx send``, ``micromine blocks watch``, the devnet load generator and
the integration tests, so they all speak to the ledger the one way a wallet would.
Delivery is at-least-once: ``submit`` may be repeated with the same items (the ledger
dedupes by id and answers again with the item's current fate), which is how callers
recover from a lost message or receipt.
"""

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from micromine.common.mqtt import Incoming, LinkConfig, Login, MqttLink, TlsFiles
from micromine.protocol import topics
from micromine.protocol.block import Block
from micromine.protocol.codec import decode, encode, is_signature_valid
from micromine.protocol.errors import DecodeError
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.limits import MAX_SUBMISSION_TXS
from micromine.protocol.messages import Receipts, Submission
from micromine.protocol.topics import Channel

log = structlog.get_logger("micromine.client")


@dataclass(frozen=True, slots=True)
class Fate:
    """What the ledger last said about one submitted item."""

    status: ReceiptStatus
    value: int  # height when committed, Reason when rejected
    at: float  # time.monotonic() when the receipt arrived

    @property
    def final(self) -> bool:
        return self.status is not ReceiptStatus.PENDING

    def describe(self) -> str:
        if self.status is ReceiptStatus.COMMITTED:
            return f"committed at height {self.value}"
        if self.status is ReceiptStatus.REJECTED:
            name = Reason(self.value).name if self.value in set(Reason) else str(self.value)
            return f"rejected: {name.lower()}"
        return "pending"


class LedgerClient:
    """Not thread-safe: call ``poll`` from the thread that uses the results."""

    def __init__(
        self,
        broker_url: str,
        chain_id: str,
        *,
        watch_blocks: bool = False,
        on_block: Callable[[Block], None] | None = None,
        client_id: str | None = None,
        login: Login | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.reply_to = os.urandom(16)
        self.fates: dict[bytes, Fate] = {}
        self.on_block = on_block
        self.bad_messages = 0
        subscriptions = [(topics.receipts(chain_id, self.reply_to), Channel.RECEIPTS.qos)]
        if watch_blocks:
            subscriptions.append((topics.blocks(chain_id), Channel.BLOCKS.qos))
        self.link = MqttLink(
            LinkConfig(
                client_id=client_id or f"client-{self.reply_to.hex()[:12]}",
                broker_url=broker_url,
                subscriptions=tuple(subscriptions),
                inbox_max=200_000,
                max_queued_messages=10_000,
                login=login,
                tls=tls,
            )
        )

    def __enter__(self) -> "LedgerClient":
        self.link.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.close()

    def connect(self, timeout: float) -> None:
        if not self.link.wait_connected(timeout):
            raise TimeoutError(f"no connection to the broker within {timeout:.0f} s")

    def submit(self, items: Sequence[bytes]) -> None:
        for start in range(0, len(items), MAX_SUBMISSION_TXS):
            chunk = tuple(items[start : start + MAX_SUBMISSION_TXS])
            payload = encode(Submission(self.chain_id, self.reply_to, chunk))
            self.link.publish(topics.submit(self.chain_id), payload, Channel.SUBMIT.qos)

    def poll(self, timeout: float) -> None:
        """Take in what arrived, waiting up to ``timeout`` for the first message."""
        item = self.link.get(timeout)
        while item is not None:
            if isinstance(item, Incoming):
                self._take(item)
            item = self.link.get(0)

    def _take(self, item: Incoming) -> None:
        parsed = topics.parse(self.chain_id, item.topic)
        try:
            if parsed and parsed.channel is Channel.RECEIPTS:
                receipts = decode(item.payload, Receipts)
                if not is_signature_valid(receipts):
                    self.bad_messages += 1
                    log.warning("receipts with a bad signature", topic=item.topic)
                    return
                for receipt in receipts.receipts:
                    fate = Fate(
                        ReceiptStatus(receipt.status), receipt.value, item.received_monotonic
                    )
                    previous = self.fates.get(receipt.item_id)
                    if previous is None or not previous.final:  # never un-finalise
                        self.fates[receipt.item_id] = fate
            elif parsed and parsed.channel is Channel.BLOCKS and self.on_block is not None:
                self.on_block(decode(item.payload, Block))
        except (DecodeError, ValueError):
            self.bad_messages += 1
            log.warning("bad message from the ledger side", topic=item.topic)

    def wait_final(
        self, ids: Sequence[bytes], timeout: float, resend: Sequence[bytes] = ()
    ) -> None:
        """Poll until every id has a final fate or ``timeout`` passes.  While some are not
        final, ``resend`` is submitted again every few seconds: resubmitting is how a
        client asks again (the ledger dedupes, and answers with the current fate), which
        also covers a receipt lost while ledger nodes handed work over."""
        deadline = time.monotonic() + timeout
        next_resend = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if all(i in self.fates and self.fates[i].final for i in ids):
                return
            self.poll(min(0.2, max(0.0, deadline - time.monotonic())))
            if resend and time.monotonic() >= next_resend:
                if any(i not in self.fates or not self.fates[i].final for i in ids):
                    self.submit(resend)
                next_resend = time.monotonic() + 5.0
