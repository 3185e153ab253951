"""Merkle roots with RFC 6962 domain separation.

    leaf hash  = SHA-256(0x00 | leaf bytes)
    node hash  = SHA-256(0x01 | left | right)
    root of [] = SHA-256("")

Trees are split as RFC 6962 section 2.1 does: the left subtree holds the largest power
of two strictly smaller than n leaves.  Distinct prefixes stop a 64-byte leaf from
posing as an inner node (second-preimage attacks on the tree).
"""

from collections.abc import Sequence

from micromine.protocol.crypto import sha256

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(leaf: bytes) -> bytes:
    return sha256(LEAF_PREFIX + leaf)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(NODE_PREFIX + left + right)


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root over the given leaf *data* (each leaf is hashed with the leaf prefix)."""
    if not leaves:
        return sha256(b"")
    return _root_of_hashes([leaf_hash(leaf) for leaf in leaves])


def _root_of_hashes(hashes: list[bytes]) -> bytes:
    # Iterative form of RFC 6962's recursion: fold the largest power-of-two prefix.
    if len(hashes) == 1:
        return hashes[0]
    split = 1
    while split * 2 < len(hashes):
        split *= 2
    return node_hash(_root_of_hashes(hashes[:split]), _root_of_hashes(hashes[split:]))
