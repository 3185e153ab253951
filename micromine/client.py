"""A client of the ledger: submit transactions, follow their receipts and the blocks.

Used by ``micromine tx send``, ``micromine blocks watch``, the devnet load generator and
the integration tests, so they all speak to the ledger the one way a wallet would.
Delivery is at-least-once: ``submit`` may be repeated with the same items (the ledger
dedupes by id and answers again with the item's current fate), which is how callers
recover from a lost message or receipt.  The receipt rules callers rely on (which
statuses are final, what a HELD receipt's next nonce asks for) are docs/PROTOCOL.md
section 8.1.
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
from micromine.protocol.kinds import FINAL_STATUSES, Reason, ReceiptStatus
from micromine.protocol.limits import MAX_SUBMISSION_TXS
from micromine.protocol.messages import Receipts, Submission, Transaction
from micromine.protocol.topics import Channel

log = structlog.get_logger("micromine.client")


@dataclass(frozen=True, slots=True)
class Fate:
    """What the ledger last said about one submitted item."""

    status: ReceiptStatus
    value: int  # height when committed, Reason when rejected or held
    at: float  # time.monotonic() when the receipt arrived
    height: int | None = None  # the receipt's detail: the committed height it read
    next_nonce: int | None = None  # ... and the sender's next nonce there

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def reason(self) -> Reason | None:
        """The Reason of a REJECTED or HELD receipt (None if unknown or other status)."""
        if self.status in (ReceiptStatus.REJECTED, ReceiptStatus.HELD) and self.value in set(
            Reason
        ):
            return Reason(self.value)
        return None

    @property
    def missing_nonce(self) -> int | None:
        """The nonce the ledger asks the sender for, when the receipt is one to act on
        (PROTOCOL.md 8.1): HELD NONCE_GAP, or REJECTED BAD_NONCE / NONCE_GAP."""
        if self.reason is Reason.NONCE_GAP or (
            self.status is ReceiptStatus.REJECTED and self.reason is Reason.BAD_NONCE
        ):
            return self.next_nonce
        return None

    def describe(self) -> str:
        if self.status is ReceiptStatus.COMMITTED:
            return f"committed at height {self.value}"
        name = self.reason.name.lower() if self.reason is not None else str(self.value)
        if self.status is ReceiptStatus.REJECTED:
            return f"rejected: {name}" + self._next()
        if self.status is ReceiptStatus.HELD:
            if self.reason is Reason.NONCE_GAP:
                return f"held: waiting for nonce {self.next_nonce} first"
            if self.reason is Reason.CATCHING_UP:
                return "held: the ledger node is catching up with the chain"
            return f"held: {name}"
        return "pending"

    def _next(self) -> str:
        if self.next_nonce is None:
            return ""
        return f" (the sender's next nonce is {self.next_nonce} at height {self.height})"


class LedgerClient:
    """Not thread-safe: call ``poll`` from the thread that uses the results."""

    def __init__(
        self,
        broker_url: str,
        chain_id: str,
        *,
        watch_blocks: bool = False,
        on_block: Callable[[Block], None] | None = None,
        on_receipt: Callable[[bytes, Fate], None] | None = None,
        client_id: str | None = None,
        login: Login | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.reply_to = os.urandom(16)
        self.fates: dict[bytes, Fate] = {}
        self.on_block = on_block
        self.on_receipt = on_receipt  # every receipt taken, with its item id
        # Items told two different final fates (a receipt that lied; PROTOCOL.md 8.1
        # says this never happens): kept so that tests and reports can show it.
        self.contradicted: set[bytes] = set()
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
                        ReceiptStatus(receipt.status), receipt.value, item.received_monotonic,
                        receipt.height, receipt.next_nonce,
                    )  # fmt: skip
                    previous = self.fates.get(receipt.item_id)
                    if previous is None or not previous.final:  # never un-finalise
                        self.fates[receipt.item_id] = fate
                    elif fate.final and fate.status is not previous.status:
                        self.contradicted.add(receipt.item_id)
                    if self.on_receipt is not None:
                        self.on_receipt(receipt.item_id, fate)
            elif parsed and parsed.channel is Channel.BLOCKS and self.on_block is not None:
                self.on_block(decode(item.payload, Block))
        except (DecodeError, ValueError):
            self.bad_messages += 1
            log.warning("bad message from the ledger side", topic=item.topic)

    def is_final(self, item_id: bytes) -> bool:
        fate = self.fates.get(item_id)
        return fate is not None and fate.final

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
            if all(self.is_final(i) for i in ids):
                return
            self.poll(min(0.2, max(0.0, deadline - time.monotonic())))
            if resend and time.monotonic() >= next_resend:
                if not all(self.is_final(i) for i in ids):
                    self.submit(resend)
                next_resend = time.monotonic() + 5.0


def send_transaction(
    client: LedgerClient,
    signed: Callable[[int], Transaction],
    nonce: int,
    *,
    wait: bool,
    timeout: float,
    renumber: bool,
    say: Callable[[str], None],
) -> tuple[Transaction, Fate | None]:
    """Submit ``signed(nonce)`` and follow it: to a final receipt (``wait``, resending
    every few seconds), else to its first receipt (10 s at most).  With ``renumber``
    (the caller counted the nonce itself), a final answer naming the sender's next
    nonce (REJECTED BAD_NONCE or NONCE_GAP: PROTOCOL.md 8.1) has the transaction signed
    again with that nonce and sent, three times at most: the rejected one can no longer
    commit, so the transfer is still made once.  A HELD answer is never renumbered
    (the held transaction may yet commit).  Returns the last transaction and its fate."""
    deadline = time.monotonic() + timeout
    tx = signed(nonce)
    for attempt in range(4):
        if attempt:  # the first one the caller announced, before it connected
            say(f"tx {tx.id.hex()} nonce {tx.nonce}")
        item = encode(tx)
        client.submit([item])
        if wait:
            client.wait_final([tx.id], timeout=max(0.0, deadline - time.monotonic()), resend=[item])
        else:
            acknowledged = min(deadline, time.monotonic() + 10.0)
            while tx.id not in client.fates and time.monotonic() < acknowledged:
                client.poll(0.2)
        fate = client.fates.get(tx.id)
        wanted = fate.missing_nonce if fate is not None and fate.final else None
        if (
            fate is None
            or wanted is None
            or not renumber
            or wanted == tx.nonce
            or attempt == 3
            or time.monotonic() >= deadline
        ):
            return tx, fate
        say(f"{fate.describe()}; sending it again with nonce {wanted}")
        tx = signed(wanted)
    return tx, client.fates.get(tx.id)
