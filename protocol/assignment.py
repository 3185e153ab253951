"""Which devices may judge a batch: rendezvous hashing over the chain's device registry.

    compute_assignment_score(batch_id, device) = SHA-256("micromine-assign" | batch_id | device)
    rank_devices(batch_id, registered)          -> the devices by ascending score
    compute_entitled(batch_id, registered, k)   -> the first ENTITLED_PER_K * k of them
    is_registry_height_in_window(registry_height, block_height, window)

``registered`` is the device registry *as of* the batch's ``registry_height``: every
device that a block at that height or below registered.  Every ledger node computes the
same entitled set from chain data alone, so a block can be checked for verdicts from
devices that had no business judging its transactions.  Ties between equal scores (a
SHA-256 collision) go to the lower device key, so the order is total.

An issuer sends a batch to the first k entitled devices that are live; the other k are
the slack for devices that are registered but offline.  A device never computes any of
this: it copies the batch's ``registry_height`` into its verdict.
"""

import heapq
from collections.abc import Iterable

from micromine.protocol.crypto import sha256

ASSIGNMENT_DOMAIN = b"micromine-assign"  # 16 ASCII bytes, no terminator
ENTITLED_PER_K = 2  # a batch's entitled devices are the first 2k of the ranking


def compute_assignment_score(batch_id: bytes, device: bytes) -> bytes:
    """The device's rendezvous score for the batch: lower ranks first."""
    return sha256(ASSIGNMENT_DOMAIN + batch_id + device)


def rank_devices(batch_id: bytes, registered: Iterable[bytes]) -> list[bytes]:
    """Every device of ``registered``, best (lowest score) first."""
    return sorted(registered, key=lambda d: (compute_assignment_score(batch_id, d), d))


def compute_entitled(batch_id: bytes, registered: Iterable[bytes], k: int) -> tuple[bytes, ...]:
    """The devices entitled to judge the batch, best first: the first 2k of the ranking
    (all of them when fewer are registered)."""
    scored = ((compute_assignment_score(batch_id, device), device) for device in registered)
    return tuple(device for _, device in heapq.nsmallest(ENTITLED_PER_K * k, scored))


def is_registry_height_in_window(registry_height: int, block_height: int, window: int) -> bool:
    """A verdict ranked against the registry at ``registry_height`` may justify a
    transaction in a block at ``block_height`` when that registry is at most ``window``
    blocks old and already committed: block_height - window <= registry_height < block_height."""
    return block_height - window <= registry_height < block_height
