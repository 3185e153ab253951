"""Hostile traffic for tests and demonstrations: what a misbehaving client sends.

``hostile_messages`` yields (kind, topic, payload) forever from a seeded generator: random
bytes, truncated and oversized CBOR, valid CBOR of the wrong kind, wrong chains, bad
signatures and replays of captured valid messages, spread over every topic of the tree
and a few outside it.  ``Barrage`` sends them from one MQTT connection, logged in as a
key or anonymous, at a given rate, and counts what it sent.

Every message a *device* sends on a topic it may publish on is one that every ledger
node must drop with a counted reason (never one it could take as valid), so a test can
check that the broker's count of what it let through is matched by the ledger nodes'
drop counters.  The one exception is ``capture`` (a valid heartbeat of its own, sent
first, whose later copies are the replays).
"""

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from micromine.common.mqtt import LinkConfig, Login, MqttLink
from micromine.protocol import topics
from micromine.protocol.assignment import compute_judgements_root
from micromine.protocol.codec import encode, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, DeviceStatus, Heartbeat
from micromine.protocol.limits import MAX_MESSAGE_BYTES
from micromine.protocol.messages import Assignment, Judgement, Submission, Verdict
from micromine.protocol.topics import Channel

KINDS = (
    "random_bytes", "truncated", "oversized", "wrong_kind", "wrong_chain", "bad_signature",
    "replay", "foreign_verdict",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Hostile:
    kind: str
    topic: str
    payload: bytes


def own_topics(chain_id: str, device: bytes) -> list[str]:
    """The topics a device may publish on (protocol/acl.py)."""
    leaves = (Channel.HELLO, Channel.HEARTBEAT, Channel.DEVICE_STATUS)
    return [
        topics.submit(chain_id),
        topics.verdicts(chain_id, device),
        *(topics.device_topic(chain_id, device, channel) for channel in leaves),
    ]


def foreign_topics(chain_id: str, device: bytes, ledger: bytes) -> list[str]:
    """Topics a device may not publish on, and some outside the tree."""
    other = sha256(b"someone else")
    return [
        topics.work(chain_id, device),
        topics.work(chain_id, other),
        topics.verdicts(chain_id, other),
        topics.device_topic(chain_id, other, Channel.HEARTBEAT),
        topics.blocks(chain_id),
        topics.blocks_json(chain_id),
        topics.consensus(chain_id, ledger),
        topics.sync_request(chain_id),
        topics.sync_reply(chain_id, other[:16]),
        topics.receipts(chain_id, other[:16]),
        topics.ledger_status(chain_id, ledger),
        f"micromine/{chain_id}/nonsense",
        "micromine/other-chain/tx/submit",
        "elsewhere",
    ]


def hostile_messages(
    chain_id: str,
    key: KeyPair,
    ledger: bytes,
    rng: random.Random,
    *,
    captured: Sequence[bytes] = (),
    clock_ms: Callable[[], int] | None = None,
    foreign_share: float = 0.3,
) -> Iterator[Hostile]:
    """Endless hostile messages from ``key`` (a device key, logged in or not).

    ``captured``: valid messages seen elsewhere (blocks, say) to replay where they do not
    belong.  A share ``foreign_share`` goes to topics the key may not publish on.  Sizes
    stay below what closes a connection (a larger packet is refused as a whole,
    tests/test_broker_quota.py), so oversized payloads go to topics of 1 KiB messages.
    A forged verdict naming nothing undecided is ignored before its signature is checked
    (that check is what the ledger saves), so forgeries go to the presence topics."""
    clock = clock_ms or _wall_ms
    device = key.public
    mine, foreign = own_topics(chain_id, device), foreign_topics(chain_id, device, ledger)
    presence = mine[2:]  # hello, heartbeat, status: 1 KiB caps
    heartbeat = encode(sign(Heartbeat(chain_id, device, 1, clock(), 0, 2), key))
    yield Hostile("capture", mine[3], heartbeat)
    small = [c for c in captured if len(c) < MAX_MESSAGE_BYTES["verdict"]]
    seq = 1
    while True:
        seq += 1
        topic = rng.choice(foreign if rng.random() < foreign_share else mine)
        kind = rng.choice(KINDS)
        now = clock()
        if kind in ("oversized", "bad_signature"):
            topic = rng.choice(presence)
        good = _valid_for(topic, chain_id, key, seq, now)
        if kind == "random_bytes":
            payload = rng.randbytes(rng.randint(1, 200))
        elif kind == "truncated":
            payload = good[: rng.randint(1, len(good) - 1)]
        elif kind == "oversized":
            payload = good + bytes(MAX_MESSAGE_BYTES["heartbeat"] + 1 - len(good))
        elif kind == "wrong_kind":
            others = [_valid_for(t, chain_id, key, seq, now) for t in mine[:2] + presence]
            payload = rng.choice([m for m in [*others, *small] if m[1] != good[1]])
        elif kind == "wrong_chain":
            payload = _valid_for(topic, "other-chain", key, seq, now)
        elif kind == "bad_signature":
            payload = _valid_for(topic, chain_id, key, seq, now, forge=True)
        elif kind == "replay":
            payload = rng.choice([heartbeat, *small])
            topic = mine[3] if payload is heartbeat else topic
        else:  # a verdict another device signed, on our own verdict topic
            payload = _verdict(chain_id, KeyPair(sha256(b"%d" % seq)), now)
            topic = mine[1]
        yield Hostile(kind, topic, payload)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _nobodys_verdict(chain_id: str, signer: KeyPair, label: bytes) -> Verdict:
    """A verdict ``signer`` signs on a batch nobody made: under an assignment it signed
    itself (not a validator's), bound to the verdict's one judgement."""
    judgements = (Judgement(sha256(b"tx " + label), sha256(b"sig " + label), 0),)
    root = compute_judgements_root(judgements)
    assignment = sign(Assignment(chain_id, signer.public, 0, 0, 0, root), signer)
    return Verdict(chain_id, signer.public, assignment, judgements)


def _verdict(chain_id: str, signer: KeyPair, now_ms: int) -> bytes:
    return encode(sign(_nobodys_verdict(chain_id, signer, b"%d" % now_ms), signer))


def _valid_for(
    topic: str, chain_id: str, key: KeyPair, seq: int, now_ms: int, *, forge: bool = False
) -> bytes:
    """A well-formed message of the kind ``topic`` carries, but never one a ledger takes:
    a Submission only of another chain, a verdict of a batch nobody made, and no hello
    or status here is for this chain unless ``forge`` spoils its signature (a valid
    hello would register the key).  Heartbeats are the exception: see ``capture``."""
    device = key.public
    message: DeviceHello | Heartbeat | DeviceStatus | Verdict
    other_chain = "other-chain" if chain_id != "other-chain" else "another-chain"
    if topic.endswith("/hello"):
        message = DeviceHello(chain_id if forge else other_chain, device, "barrage", 8, now_ms)
    elif topic.endswith("/status"):
        message = DeviceStatus(chain_id if forge else other_chain, device, True, now_ms)
    elif "/verdicts/" in topic:
        message = _nobodys_verdict(chain_id, key, b"%d" % seq)
    elif topic.endswith("/tx/submit"):
        return encode(Submission(other_chain, b"r" * 16, (bytes(8),)))
    else:
        message = Heartbeat(chain_id, device, seq, now_ms, 0, 2)
    signed = sign(message, key)
    if forge:
        signed = replace(signed, signature=bytes(reversed(signed.signature)))
    return encode(signed)


class Barrage(threading.Thread):
    """Sends ``count`` hostile messages at ``rate`` a second from one connection."""

    def __init__(
        self,
        broker_url: str,
        chain_id: str,
        key: KeyPair,
        ledger: bytes,
        *,
        count: int,
        rate: float,
        login: bool = True,
        seed: int = 0,
        captured: Sequence[bytes] = (),
    ) -> None:
        super().__init__(daemon=True)
        self.count, self.rate = count, rate
        self.messages = hostile_messages(
            chain_id, key, ledger, random.Random(seed), captured=captured
        )
        self.client_id = f"barrage-{key.public.hex()[:8]}-{seed}"
        self.link = MqttLink(
            LinkConfig(
                client_id=self.client_id,
                broker_url=broker_url,
                login=Login(key, chain_id) if login else None,
                max_queued_messages=100_000,
            )
        )
        self.sent: Counter[str] = Counter()  # by kind
        self.failed = 0  # paho refused to send (not connected)

    def run(self) -> None:
        with self.link:
            if not self.link.wait_connected(30):
                return
            started = time.monotonic()
            for index in range(self.count):
                due = started + index / self.rate
                if (delay := due - time.monotonic()) > 0:
                    time.sleep(delay)
                item = next(self.messages)
                if self.link.publish(item.topic, item.payload, qos=0):
                    self.sent[item.kind] += 1
                else:
                    self.failed += 1
            # paho's thread writes QoS 0 messages: a last one with QoS 1 on a topic nobody
            # may publish on is acknowledged only after everything before it went out.
            if self.link.publish(f"barrage/end/{self.client_id}", b"", qos=1, wait=30):
                self.sent["end_marker"] += 1

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def reconnected(self) -> bool:
        """Whether the link dropped during the run: QoS 0 messages paho had taken but not
        yet written when it dropped are lost, so the broker may count fewer than ``total``."""
        return self.link.stats.connects > 1
