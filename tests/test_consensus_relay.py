"""Relaying: a ledger node accepts a validator's consensus message from another
validator's topic, and re-sends everyone's messages of a height that is slow to decide
(docs/CONSENSUS.md, "Gossip").  Without that, a vote one node received from a validator
that has since crashed never reaches the others."""

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from test_ledger_replicas import CHAIN, NODES, T0, make_net

from micromine.ledger_node.core.actions import Dropped
from micromine.ledger_node.core.replica import RELAY_AFTER_MS
from micromine.protocol import topics
from micromine.protocol.codec import encode, sign
from micromine.protocol.consensus import NIL, Prevote
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.topics import Publish


def nil_prevote(signer: KeyPair, height: int = 1) -> bytes:
    return encode(sign(Prevote(CHAIN, height, 1, NIL, signer.public), signer))


def test_a_vote_relayed_on_another_validators_topic_is_counted() -> None:
    core = make_net().cores[0]
    vote = nil_prevote(NODES[1])
    core.on_message(topics.consensus(CHAIN, NODES[2].public), vote, T0 + 10)
    assert vote in [encode(m) for m in core.replica.consensus.gossip_messages()]


def test_a_vote_on_a_non_validators_topic_is_a_counted_drop() -> None:
    core = make_net().cores[0]
    stranger = KeyPair(sha256(b"stranger"))
    actions = core.on_message(topics.consensus(CHAIN, stranger.public), nil_prevote(NODES[1]), T0)
    assert [a.reason for a in actions if isinstance(a, Dropped)] == ["topic_not_validator"]
    assert core.replica.consensus.gossip_messages() == []


def test_a_badly_signed_relayed_vote_is_a_counted_drop() -> None:
    core = make_net().cores[0]
    signed = sign(Prevote(CHAIN, 1, 1, NIL, NODES[1].public), NODES[1])
    forged = dataclasses.replace(signed, signature=sign(signed, NODES[1]).signature[::-1])
    actions = core.on_message(topics.consensus(CHAIN, NODES[2].public), encode(forged), T0)
    assert [a.reason for a in actions if isinstance(a, Dropped)] == ["bad_signature"]


def test_a_slow_height_relays_the_votes_of_others_on_our_own_topic() -> None:
    net = make_net()
    core = net.cores[0]
    vote = nil_prevote(NODES[1])
    core.on_message(topics.consensus(CHAIN, NODES[1].public), vote, T0 + 10)
    own_topic = topics.consensus(CHAIN, NODES[0].public)

    def sent_at(now_ms: int) -> list[bytes]:
        return [
            a.payload
            for a in core.on_tick(now_ms)
            if isinstance(a, Publish) and a.topic == own_topic
        ]

    assert vote not in sent_at(T0 + 100)  # a young height: only our own messages
    assert vote in sent_at(T0 + RELAY_AFTER_MS + 2500)


@contextmanager
def counting_signature_checks() -> Iterator[list[str]]:
    """Count Ed25519 verifications (libsodium's ``crypto_sign_open``) while the block
    runs, by watching calls rather than replacing anything in the node."""
    seen: list[str] = []

    def profile(_frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") == "crypto_sign_open":
            seen.append(event)

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def test_relayed_copies_of_a_known_vote_are_not_checked_again() -> None:
    core = make_net().cores[0]
    vote = nil_prevote(NODES[1])
    core.on_message(topics.consensus(CHAIN, NODES[1].public), vote, T0)
    with counting_signature_checks() as checked:
        for topic_owner in NODES[1:]:
            actions = core.on_message(topics.consensus(CHAIN, topic_owner.public), vote, T0)
            assert not [a for a in actions if isinstance(a, Dropped)]
    assert checked == []
    tampered = bytearray(vote)
    tampered[-1] ^= 1  # another signature: a new message, so it is checked
    with counting_signature_checks() as checked:
        actions = core.on_message(topics.consensus(CHAIN, NODES[2].public), bytes(tampered), T0)
    assert [a.reason for a in actions if isinstance(a, Dropped)] == ["bad_signature"]
    assert len(checked) == 1
