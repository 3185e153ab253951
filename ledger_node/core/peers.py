"""Which ledger node looks after which transaction, and who takes over from a silent one.

Every node admits every submission, tallies every verdict and can propose any accepted
transaction; what is split is the work around a transaction that would otherwise be
done n times: dispatching it to devices and answering its submitter.  A transaction's
home is ``validators[id mod n]``; its owner is the first validator from its home on, in
ring order, that has been heard from within ``timeout_ms`` (we always hear ourselves).
So when a node goes silent, the next one takes over its share, and gives it back when
it speaks again.

A node that speaks but does not do the work (a Byzantine owner that never dispatches,
or whose devices' verdicts never reach us) is not silent.  For that we note, per home,
the verdicts that reach us (``note_judged``): when the last one came, and how far the
owner has got in admission order (it dispatches first come, first served).  A
transaction is left ``unjudged_for`` as long as its owner has judged nothing since we
admitted it, or has judged transactions we admitted after it; a busy owner with a
backlog does neither, so overload is not mistaken for a stall.  The core takes over
past a delay that grows with our place behind the owner (``standby``; ledger.py,
STALL_BATCHES), so that the next node in the ring steps in first.
"""

from collections.abc import Sequence


class PeerTracker:
    def __init__(
        self, validators: Sequence[bytes], me: bytes, timeout_ms: int, now_ms: int
    ) -> None:
        self.validators = tuple(sorted(validators))
        self.me = me
        self.timeout_ms = timeout_ms
        # Everyone gets the benefit of the doubt at start: a node down from the beginning
        # is taken over ``timeout_ms`` later.
        self.last_seen = dict.fromkeys(self.validators, now_ms)
        # Per home: (the latest admission time of an item judged, when a verdict last came).
        self._judged: dict[int, tuple[int, int]] = {}

    def heard(self, validator: bytes, now_ms: int) -> None:
        if validator in self.last_seen:
            self.last_seen[validator] = max(self.last_seen[validator], now_ms)

    def is_live(self, validator: bytes, now_ms: int) -> bool:
        return (
            validator == self.me
            or now_ms - self.last_seen.get(validator, -self.timeout_ms) < self.timeout_ms
        )

    def home(self, item_id: bytes) -> int:
        return int.from_bytes(item_id[:8], "big") % len(self.validators)

    def note_judged(self, item_id: bytes, admitted_ms: int, now_ms: int) -> None:
        """A verdict on an item we admitted at ``admitted_ms`` reached us."""
        home = self.home(item_id)
        reached, _ = self._judged.get(home, (admitted_ms, now_ms))
        self._judged[home] = (max(reached, admitted_ms), now_ms)

    def unjudged_for(self, item_id: bytes, admitted_ms: int, now_ms: int) -> int:
        """How long (ms) the item's owner has left it unjudged while judging nothing, or
        while judging items we admitted after it."""
        reached, last = self._judged.get(self.home(item_id), (admitted_ms, admitted_ms))
        return max(now_ms - max(last, admitted_ms), reached - admitted_ms)

    def owner(self, item_id: bytes, now_ms: int) -> bytes:
        n = len(self.validators)
        home = self.home(item_id)
        for step in range(n):
            candidate = self.validators[(home + step) % n]
            if self.is_live(candidate, now_ms):
                return candidate
        return self.me  # unreachable: we are always live

    def standby(self, item_id: bytes, now_ms: int) -> int:
        """Our place behind the item's owner among the live validators, in ring order
        (0: we own it; 1: we are the next live one; ...)."""
        if self.me not in self.last_seen:
            return 0
        owner = self.validators.index(self.owner(item_id, now_ms))
        n = len(self.validators)
        place = 0
        for step in range(n):
            candidate = self.validators[(owner + step) % n]
            if candidate == self.me:
                return place
            if self.is_live(candidate, now_ms):
                place += 1
        return place  # unreachable: we are in the ring

    def mine(self, item_id: bytes, now_ms: int) -> bool:
        return self.me not in self.last_seen or self.owner(item_id, now_ms) == self.me

    def count_live(self, now_ms: int) -> int:
        return sum(1 for v in self.validators if self.is_live(v, now_ms))
