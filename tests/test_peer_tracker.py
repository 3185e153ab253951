"""PeerTracker: the take-over scan's snapshot (``ownership``) answers as the per-item
methods do, for every home, whoever is live and whatever was judged."""

from hypothesis import given, settings
from hypothesis import strategies as st

from micromine.ledger_node.core.peers import PeerTracker

TIMEOUT_MS = 5000


ITEM = st.tuples(st.binary(min_size=8, max_size=32), st.integers(0, 9000))


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 7),
    me_index=st.integers(0, 6),
    silent=st.sets(st.integers(0, 6)),
    judged=st.lists(ITEM, max_size=8),
    items=st.lists(ITEM, min_size=1, max_size=20),
    now_ms=st.integers(9000, 20_000),
)
def test_ownership_snapshot_answers_as_the_per_item_methods(
    *,
    n: int,
    me_index: int,
    silent: set[int],
    judged: list[tuple[bytes, int]],
    items: list[tuple[bytes, int]],
    now_ms: int,
) -> None:
    validators = [bytes([i]) * 32 for i in range(n)]
    me = validators[me_index % n]
    peers = PeerTracker(validators, me, TIMEOUT_MS, now_ms=0)
    for index, key in enumerate(peers.validators):
        if index not in silent:
            peers.heard(key, now_ms - 100)
    for item_id, admitted_ms in judged:
        peers.note_judged(item_id, admitted_ms, min(now_ms, admitted_ms + 500))
    ownership = peers.ownership(now_ms)
    for item_id, admitted_ms in items:
        home = ownership.home(item_id)
        assert home == peers.home(item_id)
        assert ownership.mine[home] == peers.mine(item_id, now_ms)
        assert ownership.standby[home] == peers.standby(item_id, now_ms)
        assert ownership.unjudged_for(home, admitted_ms, now_ms) == peers.unjudged_for(
            item_id, admitted_ms, now_ms
        )


def test_a_silent_owners_share_passes_to_the_next_live_node() -> None:
    validators = [bytes([i]) * 32 for i in range(4)]
    peers = PeerTracker(validators, validators[1], TIMEOUT_MS, now_ms=0)
    for key in validators[1:]:
        peers.heard(key, 6000)  # validators[0] last heard at 0: silent at 6000
    ownership = peers.ownership(6000)
    assert ownership.mine == (True, True, False, False)
    assert ownership.standby == (0, 0, 2, 1)
