"""Four ledger cores in memory, wired by a broker-like router: the consensus path end to
end without processes (the real-process tests are in test_consensus_cluster.py)."""

import dataclasses
import random
from dataclasses import dataclass, field

from micromine.ledger_node.chain.blocks import ChainTip
from micromine.ledger_node.chain.state import Account
from micromine.ledger_node.consensus.certificate import check_certificate
from micromine.ledger_node.consensus.tendermint import PersistSigned
from micromine.ledger_node.core.actions import (
    Action,
    CommitBlock,
    EvidenceFound,
    ImproveCertificate,
    ServeSync,
)
from micromine.ledger_node.core.devices import MAX_OUTSTANDING_BATCHES
from micromine.ledger_node.core.ledger import LedgerCore
from micromine.protocol import topics
from micromine.protocol.block import Block, CommitSignature
from micromine.protocol.codec import decode, encode, sign, sign_commit
from micromine.protocol.consensus import NIL, Precommit
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, Heartbeat
from micromine.protocol.genesis import ChainParams, Genesis
from micromine.protocol.messages import Judgement, Submission, Transaction, Verdict, WorkBatch
from micromine.protocol.topics import Channel, Publish
from micromine.protocol.validation import check_transaction

CHAIN = "replicas"
T0 = 1_700_000_000_000


def key(label: str) -> KeyPair:
    return KeyPair(sha256(label.encode()))


NODES = [key(f"node {i}") for i in range(4)]
DEVICES = [key(f"device {i}") for i in range(4)]
SENDERS = [key(f"sender {i}") for i in range(4)]


@dataclass
class Net:
    cores: list[LedgerCore]
    now: int = T0
    queue: list[Publish] = field(default_factory=list)
    committed: dict[int, list[Block]] = field(default_factory=dict)
    down: set[int] = field(default_factory=set)
    evidence: int = 0
    delivered: list[Publish] = field(default_factory=list)

    def take(self, index: int, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                self.queue.append(action)
            elif isinstance(action, CommitBlock):
                self.committed.setdefault(index, []).append(action.block)
            elif isinstance(action, ImproveCertificate):  # as storage.improve_certificate
                chain = self.committed[index]
                stored = chain[action.block.height - 1]
                assert stored.hash == action.block.hash
                chain[action.block.height - 1] = action.block
            elif isinstance(action, EvidenceFound):
                self.evidence += 1
            elif isinstance(action, ServeSync):  # as node.serve_sync, from the chain so far
                request, chain = action.request, self.committed.get(index, [])
                topic = topics.sync_reply(CHAIN, request.reply_to)
                for block in chain[request.from_height - 1 : request.to_height]:
                    self.queue.append(Publish.on(Channel.SYNC_REPLY, topic, encode(block)))
            elif isinstance(action, PersistSigned):
                pass

    def deliver(self) -> None:
        while self.queue:
            publish = self.queue.pop(0)
            self.delivered.append(publish)
            if "/work/" in publish.topic:
                self.answer(publish)
                continue
            for index, core in enumerate(self.cores):
                if index not in self.down:
                    self.take(index, core.on_message(publish.topic, publish.payload, self.now))

    def answer(self, publish: Publish) -> None:
        device = next(d for d in DEVICES if publish.topic.endswith(d.public.hex()))
        batch = decode(publish.payload, WorkBatch)
        judgements = tuple(
            Judgement.of(t, int(check_transaction(t, CHAIN, self.now))) for t in batch.txs
        )
        verdict = Verdict(CHAIN, device.public, batch.assignment, judgements)
        verdict = sign(verdict, device)
        self.queue.append(
            Publish.on(Channel.VERDICTS, topics.verdicts(CHAIN, device.public), encode(verdict))
        )

    def broadcast(self, topic: str, payload: bytes) -> None:
        self.queue.append(Publish(topic, payload, 1, False))
        self.deliver()

    def step(self, ms: int = 100) -> None:
        self.now += ms
        for device in DEVICES:
            beat = sign(
                Heartbeat(CHAIN, device.public, 1, self.now, 0, MAX_OUTSTANDING_BATCHES), device
            )
            self.queue.append(
                Publish.on(
                    Channel.HEARTBEAT,
                    topics.device_topic(CHAIN, device.public, Channel.HEARTBEAT),
                    encode(beat),
                )
            )
        for index, core in enumerate(self.cores):
            if index not in self.down:
                self.take(index, core.on_tick(self.now))
        self.deliver()


def make_net() -> Net:
    genesis = Genesis(
        chain_id=CHAIN,
        timestamp_ms=T0,
        ledger_nodes=tuple(sorted(n.public for n in NODES)),
        balances=tuple(sorted((s.public, 10**9) for s in SENDERS)),
        params=ChainParams(block_interval_ms=500),
    )
    cores = [
        LedgerCore(
            genesis=genesis,
            key=node,
            rng=random.Random(i),
            accounts={a: Account(b, 0) for a, b in genesis.balances},
            tip=ChainTip(0, genesis.hash, T0),
            now_ms=T0,
        )
        for i, node in enumerate(NODES)
    ]
    net = Net(cores)
    for index, core in enumerate(cores):
        net.take(index, core.start(T0))
    for device in DEVICES:
        hello = sign(DeviceHello(CHAIN, device.public, "t", 64, T0), device)
        net.broadcast(topics.device_topic(CHAIN, device.public, Channel.HELLO), encode(hello))
    return net


def submit(net: Net, count: int, nonce0: int = 0) -> list[Transaction]:
    txs = [
        sign(Transaction(CHAIN, s.public, sha256(b"sink"), 5, 1, nonce0 + n, T0 + 10**9, ""), s)
        for s in SENDERS
        for n in range(count)
    ]
    submission = Submission(CHAIN, bytes(16), tuple(encode(t) for t in txs))
    net.broadcast(topics.submit(CHAIN), encode(submission))
    return txs


def test_four_replicas_agree_on_every_block_with_quorum_certificates() -> None:
    net = make_net()
    txs = submit(net, 3)
    for _ in range(80):
        net.step()
    chains = [net.committed.get(i, []) for i in range(4)]
    assert chains[0], "no block committed"
    assert all([b.hash for b in c] == [b.hash for b in chains[0]] for c in chains)
    assert {t.id for b in chains[0] for t in b.txs} == {t.id for t in txs}
    validators = sorted(n.public for n in NODES)
    assert all(check_certificate(b, validators).signers >= 3 for b in chains[0])
    assert net.evidence == 0
    # The stored blocks, certificates included, are the same bytes on every node.
    assert all([encode(b) for b in c] == [encode(b) for b in chains[0]] for c in chains)


def test_certificates_converge_on_the_lowest_round_with_a_quorum() -> None:
    """A node that learned a block with a certificate of a later round (a peer decided
    it there) stores the same bytes as the others once the earlier round's precommits
    reach it: the canonical certificate is of the lowest round with a quorum."""
    net = make_net()
    submit(net, 1)
    for _ in range(60):
        net.step()
    decided = net.committed[0][0]
    round_ = decided.commit_round
    later = round_ + 1
    signers = sorted(NODES[:3], key=lambda k: k.public)
    certificate = tuple(
        CommitSignature(k.public, sign_commit(later, decided.hash, CHAIN, k)) for k in signers
    )
    learned = dataclasses.replace(decided, commit_round=later, certificate=certificate)
    genesis = net.cores[0].genesis
    late = LedgerCore(
        genesis=genesis,
        key=NODES[3],
        rng=random.Random(9),
        accounts={a: Account(b, 0) for a, b in genesis.balances},
        tip=ChainTip(0, genesis.hash, T0),
        now_ms=net.now,
    )
    late.start(net.now)
    reply = topics.sync_reply(CHAIN, late.replica.reply_to)
    actions = late.on_message(reply, encode(learned), net.now)
    (stored,) = [a.block for a in actions if isinstance(a, CommitBlock)]
    assert stored.commit_round == later  # all it knows
    # The precommits of the deciding round arrive (re-broadcast, or simply late).
    for publish in net.delivered:
        if "/consensus/" not in publish.topic:
            continue
        message = decode(publish.payload)
        if isinstance(message, Precommit) and message.height == 1 and message.block_hash != NIL:
            for action in late.on_message(publish.topic, publish.payload, net.now):
                if isinstance(action, ImproveCertificate):
                    stored = action.block
    assert stored.commit_round == round_
    assert encode(stored) == encode(net.committed[0][0])
    # Signatures of a later round change nothing any more.
    extra = sign(
        Precommit(
            CHAIN, 1, later, decided.hash, NODES[3].public,
            sign_commit(later, decided.hash, CHAIN, NODES[3]),
        ),
        NODES[3],
    )  # fmt: skip
    actions = late.on_message(topics.consensus(CHAIN, NODES[3].public), encode(extra), net.now)
    assert not [a for a in actions if isinstance(a, ImproveCertificate)]


def test_three_of_four_keep_committing_while_one_is_down() -> None:
    net = make_net()
    submit(net, 1)
    for _ in range(40):
        net.step()
    net.down.add(1)
    txs = submit(net, 2, nonce0=1)
    for _ in range(200):
        net.step()
    live = [net.committed[i] for i in (0, 2, 3)]
    assert all([b.hash for b in c] == [b.hash for b in live[0]] for c in live)
    assert {t.id for t in txs} <= {t.id for b in live[0] for t in b.txs}
