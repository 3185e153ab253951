"""Which ledger node looks after which transaction, and who takes over from a silent one.

Every node admits every submission, tallies every verdict and can propose any accepted
transaction; what is split is the work around a transaction that would otherwise be
done n times: dispatching it to devices and answering its submitter.  A transaction's
home is ``validators[id mod n]``; its owner is the first validator from its home on, in
ring order, that has been heard from within ``timeout_ms`` (we always hear ourselves).
So when a node goes silent, the next one takes over its share, and gives it back when
it speaks again.
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

    def heard(self, validator: bytes, now_ms: int) -> None:
        if validator in self.last_seen:
            self.last_seen[validator] = max(self.last_seen[validator], now_ms)

    def is_live(self, validator: bytes, now_ms: int) -> bool:
        return (
            validator == self.me
            or now_ms - self.last_seen.get(validator, -self.timeout_ms) < self.timeout_ms
        )

    def owner(self, item_id: bytes, now_ms: int) -> bytes:
        n = len(self.validators)
        home = int.from_bytes(item_id[:8], "big") % n
        for step in range(n):
            candidate = self.validators[(home + step) % n]
            if self.is_live(candidate, now_ms):
                return candidate
        return self.me  # unreachable: we are always live

    def mine(self, item_id: bytes, now_ms: int) -> bool:
        return self.me not in self.last_seen or self.owner(item_id, now_ms) == self.me

    def count_live(self, now_ms: int) -> int:
        return sum(1 for v in self.validators if self.is_live(v, now_ms))
