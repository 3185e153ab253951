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
from dataclasses import dataclass


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
        return home_of(item_id, len(self.validators))

    def note_judged(self, item_id: bytes, admitted_ms: int, now_ms: int) -> None:
        """A verdict on an item we admitted at ``admitted_ms`` reached us."""
        home = self.home(item_id)
        reached, _ = self._judged.get(home, (admitted_ms, now_ms))
        self._judged[home] = (max(reached, admitted_ms), now_ms)

    def unjudged_for(self, item_id: bytes, admitted_ms: int, now_ms: int) -> int:
        """How long (ms) the item's owner has left it unjudged while judging nothing, or
        while judging items we admitted after it."""
        return _unjudged(self._judged.get(self.home(item_id)), admitted_ms, now_ms)

    def owner(self, item_id: bytes, now_ms: int) -> bytes:
        return self._owner_of(self.home(item_id), now_ms)

    def standby(self, item_id: bytes, now_ms: int) -> int:
        """Our place behind the item's owner among the live validators, in ring order
        (0: we own it; 1: we are the next live one; ...)."""
        return self._standby_of(self.home(item_id), now_ms)

    def mine(self, item_id: bytes, now_ms: int) -> bool:
        return (
            self.me not in self.last_seen or self._owner_of(self.home(item_id), now_ms) == self.me
        )

    def ownership(self, now_ms: int) -> "Ownership":
        """The answers of ``mine``, ``standby`` and ``unjudged_for`` at ``now_ms`` for
        every home at once: the take-over scan asks them of every undecided transaction
        (thousands under load), and they depend on its home only."""
        homes = range(len(self.validators))
        return Ownership(
            len(self.validators),
            tuple(self.me not in self.last_seen or self._owner_of(h, now_ms) == self.me
                  for h in homes),
            tuple(self._standby_of(h, now_ms) for h in homes),
            tuple(self._judged.get(h) for h in homes),
        )  # fmt: skip

    def _owner_of(self, home: int, now_ms: int) -> bytes:
        n = len(self.validators)
        for step in range(n):
            candidate = self.validators[(home + step) % n]
            if self.is_live(candidate, now_ms):
                return candidate
        return self.me  # unreachable: we are always live

    def _standby_of(self, home: int, now_ms: int) -> int:
        if self.me not in self.last_seen:
            return 0
        owner = self.validators.index(self._owner_of(home, now_ms))
        n = len(self.validators)
        place = 0
        for step in range(n):
            candidate = self.validators[(owner + step) % n]
            if candidate == self.me:
                return place
            if self.is_live(candidate, now_ms):
                place += 1
        return place  # unreachable: we are in the ring

    def count_live(self, now_ms: int) -> int:
        return sum(1 for v in self.validators if self.is_live(v, now_ms))


@dataclass(frozen=True, slots=True)
class Ownership:
    """PeerTracker's answers for every home at one instant (PeerTracker.ownership)."""

    n: int
    mine: tuple[bool, ...]
    standby: tuple[int, ...]
    judged: tuple[tuple[int, int] | None, ...]

    def home(self, item_id: bytes) -> int:
        return home_of(item_id, self.n)

    def unjudged_for(self, home: int, admitted_ms: int, now_ms: int) -> int:
        return _unjudged(self.judged[home], admitted_ms, now_ms)


def _unjudged(judged: tuple[int, int] | None, admitted_ms: int, now_ms: int) -> int:
    """PeerTracker.unjudged_for, given the home's (latest admission judged, last verdict)."""
    reached, last = judged or (admitted_ms, admitted_ms)
    return max(now_ms - max(last, admitted_ms), reached - admitted_ms)


def home_of(item_id: bytes, n: int) -> int:
    """The index of an item's home among ``n`` validators sorted by key."""
    return int.from_bytes(item_id[:8], "big") % n
