"""Which devices may judge a batch, and what binds their verdicts to it.

    compute_batch_root(txs)               = MTH([tx.id | SHA-256(tx.signature), ...])
    compute_judgements_root(judgements)   = MTH([j.tx_id | j.signature_hash, ...])
    compute_assignment_score(assignment_id, device)
                                          = SHA-256("micromine-assign" | assignment_id | device)
    rank_devices(assignment_id, registered)   -> the devices by ascending score
    compute_entitled(assignment_id, registered, k) -> the first ENTITLED_PER_K * k of them
    is_registry_height_in_window(registry_height, block_height, window)

A batch travels under an ``Assignment`` that its issuer (a validator) signed: the
registry height, the deadline and ``tx_root``, the Merkle root (RFC 6962, merkle.py) of
the batch's transactions in batch order, each leaf the 64 bytes ``tx id | SHA-256(tx
signature)``.  The device copies the assignment into its Verdict and judges every
transaction in order, so ``compute_judgements_root(verdict.judgements)`` must equal
``verdict.assignment.tx_root``: any node checks, without the batch, that the verdict is
about a batch a validator made, and about exactly its transactions.  The signature hash
is in the leaf because a transaction id does not cover the signature: without it, an
honest "valid" finding could be paired with a copy of the transaction carrying a
garbage signature and passed off as fraud.

``registered`` is the device registry *as of* the assignment's ``registry_height``:
every device that a block at that height or below registered, less those banned at
that height or below.  The ranking is seeded by the assignment id, which only a
validator's signature makes usable, so devices cannot pick the batches they are
entitled to.  Ties between equal scores (a SHA-256 collision) go to the lower device
key, so the order is total.

An issuer sends a batch to k of the 2k entitled devices that are live; the other k are
the slack for devices that are registered but offline.  A device never computes the
ranking: it copies the assignment.
"""

import heapq
from collections.abc import Iterable, Sequence

from micromine.protocol.crypto import sha256
from micromine.protocol.merkle import merkle_root

# Defined beside Verdict, which memoises it (Verdict.judgements_root); named here with
# the other roots of the assignment rules.
from micromine.protocol.messages import (
    Transaction,
    compute_judgements_root,  # noqa: F401
)

ASSIGNMENT_DOMAIN = b"micromine-assign"  # 16 ASCII bytes, no terminator
ENTITLED_PER_K = 2  # a batch's entitled devices are the first 2k of the ranking


def compute_batch_root(txs: Sequence[Transaction]) -> bytes:
    """The ``tx_root`` of an assignment for ``txs``, in batch order."""
    return merkle_root([tx.id + sha256(tx.signature) for tx in txs])


def compute_assignment_score(assignment_id: bytes, device: bytes) -> bytes:
    """The device's rendezvous score for the assignment: lower ranks first."""
    return sha256(ASSIGNMENT_DOMAIN + assignment_id + device)


def rank_devices(assignment_id: bytes, registered: Iterable[bytes]) -> list[bytes]:
    """Every device of ``registered``, best (lowest score) first."""
    return sorted(registered, key=lambda d: (compute_assignment_score(assignment_id, d), d))


def compute_entitled(
    assignment_id: bytes, registered: Iterable[bytes], k: int
) -> tuple[bytes, ...]:
    """The devices entitled to judge the batch, best first: the first 2k of the ranking
    (all of them when fewer are registered)."""
    scored = ((compute_assignment_score(assignment_id, device), device) for device in registered)
    return tuple(device for _, device in heapq.nsmallest(ENTITLED_PER_K * k, scored))


def is_registry_height_in_window(registry_height: int, block_height: int, window: int) -> bool:
    """A verdict ranked against the registry at ``registry_height`` may justify a
    transaction in a block at ``block_height`` when that registry is at most ``window``
    blocks old and already committed: block_height - window <= registry_height < block_height."""
    return block_height - window <= registry_height < block_height
