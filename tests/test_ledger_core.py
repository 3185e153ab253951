"""The ledger core in memory: devices are simulated in-process, time is a number."""

import random
from dataclasses import dataclass, field, replace

import pytest

from micromine.ledger_node.chain.chain_state import ChainTip
from micromine.ledger_node.chain.state import (
    Account,
    compute_accounts_root,
    compute_bans_root,
    compute_registry_root,
    compute_state_root,
    compute_vesting_root,
)
from micromine.ledger_node.chain.transition import InvalidBlockError, Transition
from micromine.ledger_node.chain.verify import verify_block
from micromine.ledger_node.core.actions import Action, CommitBlock, Dropped, StorePending
from micromine.ledger_node.core.devices import MAX_OUTSTANDING_BATCHES
from micromine.ledger_node.core.ledger import LedgerCore
from micromine.protocol import topics
from micromine.protocol.block import Block
from micromine.protocol.codec import decode, encode, is_commit_signature_valid, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, Heartbeat
from micromine.protocol.genesis import ChainParams, Genesis, GenesisError
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.messages import (
    Judgement,
    Receipts,
    Submission,
    Transaction,
    Verdict,
    WorkBatch,
)
from micromine.protocol.topics import Channel, Publish
from micromine.protocol.validation import check_transaction

CHAIN = "testchain"
T0 = 1_700_000_000_000


def key(n: int) -> KeyPair:
    return KeyPair(sha256(b"test key %d" % n))


@dataclass
class Harness:
    core: LedgerCore
    devices: list[KeyPair]
    now: int = T0
    published: list[Publish] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    honest: dict[bytes, bool] = field(default_factory=dict)
    silent: set[bytes] = field(default_factory=set)
    windows: dict[bytes, int] = field(default_factory=dict)  # heartbeat window; default 4

    def feed(self, topic: str, payload: bytes) -> list[Action]:
        actions = self.core.on_message(topic, payload, self.now)
        self._record(actions)
        return actions

    def tick(self, advance_ms: int = 100) -> list[Action]:
        self.now += advance_ms
        actions = self.core.on_tick(self.now)
        self._record(actions)
        return actions

    def _record(self, actions: list[Action]) -> None:
        self.actions.extend(actions)
        self.published.extend(a for a in actions if isinstance(a, Publish))

    def hello_all(self) -> None:
        for device in self.devices:
            hello = sign(DeviceHello(CHAIN, device.public, "test", 64, self.now), device)
            self.feed(topics.device_topic(CHAIN, device.public, Channel.HELLO), encode(hello))

    def heartbeat_all(self) -> None:
        for device in self.devices:
            if device.public in self.silent:
                continue
            window = self.windows.get(device.public, MAX_OUTSTANDING_BATCHES)
            beat = sign(Heartbeat(CHAIN, device.public, 1, self.now, 0, window), device)
            self.feed(topics.device_topic(CHAIN, device.public, Channel.HEARTBEAT), encode(beat))

    def submit(self, items: list[bytes], reply_to: bytes = b"r" * 16) -> list[Action]:
        return self.feed(topics.submit(CHAIN), encode(Submission(CHAIN, reply_to, tuple(items))))

    def answer_work(self) -> int:
        """Every device answers every batch published to it so far (once)."""
        answered = 0
        work = [p for p in self.published if "/work/" in p.topic]
        self.published = [p for p in self.published if "/work/" not in p.topic]
        for publish in work:
            device = next(d for d in self.devices if publish.topic.endswith(d.public.hex()))
            if device.public in self.silent:
                continue
            batch = decode(publish.payload, WorkBatch)
            judgements = []
            for tx in batch.txs:
                reason = check_transaction(tx, CHAIN, self.now)
                if not self.honest.get(device.public, True):
                    reason = Reason.OK
                judgements.append(Judgement.of(tx, int(reason)))
            verdict = Verdict(CHAIN, device.public, batch.assignment, tuple(judgements))
            verdict = sign(verdict, device)
            self.feed(topics.verdicts(CHAIN, device.public), encode(verdict))
            answered += 1
        return answered

    def run(self, rounds: int = 30) -> None:
        for _ in range(rounds):
            self.heartbeat_all()
            self.tick(100)
            self.answer_work()

    def blocks(self) -> list[Block]:
        return [a.block for a in self.actions if isinstance(a, CommitBlock)]

    def details(self) -> dict[bytes, tuple[int | None, int | None]]:
        """Latest (height, next_nonce) detail per item id."""
        latest: dict[bytes, tuple[int | None, int | None]] = {}
        for action in self.actions:
            if isinstance(action, Publish) and "/receipts/" in action.topic:
                for receipt in decode(action.payload, Receipts).receipts:
                    latest[receipt.item_id] = (receipt.height, receipt.next_nonce)
        return latest

    def receipts(self) -> dict[bytes, tuple[int, int]]:
        """Latest (status, value) per item id."""
        latest: dict[bytes, tuple[int, int]] = {}
        for action in self.actions:
            if isinstance(action, Publish) and "/receipts/" in action.topic:
                for receipt in decode(action.payload, Receipts).receipts:
                    latest[receipt.item_id] = (receipt.status, receipt.value)
        return latest


SENDERS = [key(100 + i) for i in range(4)]
NODE = key(1)


def make_harness(n_devices: int = 4, **params: int) -> Harness:
    genesis = Genesis(
        chain_id=CHAIN,
        timestamp_ms=T0,
        ledger_nodes=(NODE.public,),
        balances=tuple(sorted((s.public, 1_000_000) for s in SENDERS)),
        params=ChainParams(**params),
    )
    accounts = {a: Account(b, 0) for a, b in genesis.balances}
    core = LedgerCore(
        genesis=genesis,
        key=NODE,
        rng=random.Random(7),
        accounts=accounts,
        tip=ChainTip(0, genesis.hash, T0),
        now_ms=T0 + 1000,
    )
    harness = Harness(core, [key(10 + i) for i in range(n_devices)], now=T0 + 1000)
    harness._record(core.start(harness.now))
    harness.hello_all()
    # The hellos are pending registrations: the first block registers the devices, and
    # only then may they get work.  The tests start from there.
    for _ in range(50):
        if len(core.registry) == n_devices:
            break
        harness.heartbeat_all()
        harness.tick(100)
    assert len(core.registry) == n_devices and core.tip.height == (1 if n_devices else 0)
    harness.actions.clear()
    harness.published.clear()
    return harness


def tx(sender: KeyPair, nonce: int, amount: int = 10, **overrides: object) -> Transaction:
    fields: dict[str, object] = {
        "chain_id": CHAIN, "sender": sender.public, "recipient": key(999).public,
        "amount": amount, "fee": 1, "nonce": nonce, "expiry_ms": T0 + 10**9, "memo": "",
    }  # fmt: skip
    fields.update(overrides)
    return sign(Transaction(**fields), sender)  # type: ignore[arg-type]


def test_valid_transactions_commit_with_rewards_and_receipts() -> None:
    h = make_harness()
    txs = [tx(s, n) for s in SENDERS for n in range(3)]
    actions = h.submit([encode(t) for t in txs])
    assert isinstance(actions[0], StorePending) and len(actions[0].entries) == 12
    h.run()
    blocks = h.blocks()
    committed = {t.id for b in blocks for t in b.txs}
    assert committed == {t.id for t in txs}
    receipts = h.receipts()
    assert all(receipts[t.id][0] == ReceiptStatus.COMMITTED for t in txs)
    block = blocks[0]
    assert block.commit_round >= 1
    signature = block.certificate[0].signature
    assert is_commit_signature_valid(NODE.public, CHAIN, block.commit_round, block.hash, signature)
    assert decode(encode(block), Block) == block
    paid = sum(r.amount for b in blocks for r in b.rewards)
    assert paid == len(blocks) * 50 + len(txs) * 1
    # state root matches the committed accounts, device registry, bans and vesting: the
    # rewards vest (reward_vesting_blocks), so the devices' accounts hold nothing yet
    registry_root = compute_registry_root({d.public: 1 for d in h.devices})
    accounts_root = compute_accounts_root(h.core.accounts)
    vesting_root = compute_vesting_root(h.core.vesting)
    assert sum(a for entries in h.core.vesting.values() for _, a in entries) == paid
    assert all(d.public not in h.core.accounts for d in h.devices)
    assert blocks[-1].header.state_root == compute_state_root(
        accounts_root, registry_root, compute_bans_root({}), vesting_root
    )


def test_each_invalid_kind_is_rejected_with_its_reason() -> None:
    h = make_harness()
    s = SENDERS[0]
    good = tx(s, 0)
    bad_sig = replace(tx(SENDERS[1], 0), signature=bytes(64))
    wrong_chain = tx(SENDERS[2], 0, chain_id="otherchain")
    expired = tx(SENDERS[2], 0, expiry_ms=T0)
    overspend = tx(SENDERS[3], 0, amount=10**9)
    reused = tx(s, 0, amount=11)  # same nonce as `good`, different tx
    items = [encode(t) for t in (good, bad_sig, wrong_chain, expired, overspend, reused)]
    malformed = b"\x85\x01\x02"
    oversized = b"\x00" * 600
    h.submit([*items, malformed, oversized])
    h.run()
    receipts = h.receipts()
    expect = {
        good.id: (ReceiptStatus.COMMITTED, 2),  # block 1 registered the devices
        bad_sig.id: (ReceiptStatus.REJECTED, Reason.BAD_SIGNATURE),
        wrong_chain.id: (ReceiptStatus.REJECTED, Reason.WRONG_CHAIN),
        expired.id: (ReceiptStatus.REJECTED, Reason.EXPIRED),
        overspend.id: (ReceiptStatus.REJECTED, Reason.OVERSPEND),
        reused.id: (ReceiptStatus.REJECTED, Reason.BAD_NONCE),
        sha256(malformed): (ReceiptStatus.REJECTED, Reason.MALFORMED),
        sha256(oversized): (ReceiptStatus.REJECTED, Reason.OVERSIZED),
    }
    for item_id, (status, value) in expect.items():
        assert receipts[item_id] == (status, value)
    committed = {t.id for b in h.blocks() for t in b.txs}
    assert committed == {good.id}


def test_silent_device_batch_goes_to_another_device() -> None:
    h = make_harness(n_devices=3, k=2, q=2)
    t = tx(SENDERS[0], 0)
    h.submit([encode(t)])
    h.heartbeat_all()
    h.tick(100)
    first = [p.topic.rsplit("/", 1)[1] for p in h.published if "/work/" in p.topic]
    assert len(first) == 2
    h.silent.add(bytes.fromhex(first[0]))
    h.run(60)
    assert h.core.dispatcher.redispatched >= 1
    assert {x.id for b in h.blocks() for x in b.txs} == {t.id}


def test_lying_devices_in_minority_cannot_commit_invalid() -> None:
    h = make_harness(n_devices=4)
    h.honest[h.devices[0].public] = False
    bad = replace(tx(SENDERS[1], 0), signature=bytes(64))
    h.submit([encode(bad)])
    h.run()
    assert not any(b.txs for b in h.blocks())
    assert h.receipts()[bad.id] == (ReceiptStatus.REJECTED, Reason.BAD_SIGNATURE)
    # Its "valid" on a forgery is a fraud proof: a block bans it (test_hostile_devices.py).
    assert h.core.registry.is_banned(h.devices[0].public)


def test_a_rejection_holds_the_later_nonces_until_the_hole_is_filled() -> None:
    h = make_harness()
    s = SENDERS[0]
    bad = replace(tx(s, 0), signature=bytes(64))
    later = tx(s, 1)
    h.submit([encode(bad), encode(later)])
    h.run()
    assert h.receipts()[bad.id] == (ReceiptStatus.REJECTED, Reason.BAD_SIGNATURE)
    # Not final: the sender may still send another nonce 0 ...
    assert h.receipts()[later.id] == (ReceiptStatus.HELD, Reason.NONCE_GAP)
    assert h.details()[later.id] == (1, 0)  # at height 1, nonce 0 is missing
    filler = tx(s, 0, amount=3)
    h.submit([encode(filler)])
    h.run()
    # ... and then both commit.
    assert h.receipts()[filler.id][0] == ReceiptStatus.COMMITTED
    assert h.receipts()[later.id][0] == ReceiptStatus.COMMITTED


def test_no_devices_means_no_quorum_after_timeout() -> None:
    h = make_harness(n_devices=0, tx_timeout_ms=2000)
    t = tx(SENDERS[0], 0)
    h.submit([encode(t)])
    h.run(30)
    assert h.receipts()[t.id] == (ReceiptStatus.REJECTED, Reason.NO_QUORUM)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff", encode(Submission("otherchain", b"r" * 16, (b"x",))), b"\x80" * 10],
)
def test_garbage_on_every_topic_is_dropped_not_raised(payload: bytes) -> None:
    h = make_harness()
    device = h.devices[0].public
    for topic in (
        topics.submit(CHAIN),
        topics.verdicts(CHAIN, device),
        topics.device_topic(CHAIN, device, Channel.HELLO),
        topics.device_topic(CHAIN, device, Channel.HEARTBEAT),
        "micromine/testchain/nonsense",
    ):
        actions = h.feed(topic, payload)
        assert all(isinstance(a, Dropped) for a in actions) or payload == b""


def test_every_built_block_passes_the_honest_validity_rules() -> None:
    """What the proposer builds, verify_block accepts; tampering with it is caught."""
    h = make_harness()
    parent = h.core.state.copy()  # committing blocks spends the core's state
    txs = [tx(s, n) for s in SENDERS for n in range(2)]
    h.submit([encode(t) for t in txs])
    h.run()
    block = h.blocks()[0]
    validators = (NODE.public,)

    def verify(block: Block) -> Transition:
        return verify_block(parent, block, validators=validators)

    changes = verify(block).changes
    assert changes.accounts and changes.vesting  # senders, recipient; rewarded devices
    tampered = [
        replace(block, header=replace(block.header, state_root=bytes(32))),
        replace(block, rewards=block.rewards[1:]),
        replace(block, txs=block.txs[1:]),
        replace(block, verdicts=block.verdicts[1:]),
        replace(block, header=replace(block.header, height=5)),
        replace(block, header=replace(block.header, proposer=key(77).public)),
    ]
    for bad in tampered:
        with pytest.raises(InvalidBlockError):
            verify(bad)


def test_without_devices_the_lone_node_checks_every_signature_itself() -> None:
    """q = 0, the benchmark baseline: no device, no dispatch; the node verifies each
    signature at admission, commits what passes and rejects a forgery at once."""
    h = make_harness(n_devices=0, q=0)
    good = [tx(s, n) for s in SENDERS for n in range(2)]
    forged = replace(tx(SENDERS[0], 2), signature=bytes(64))
    h.submit([encode(t) for t in (*good, forged)])
    assert h.receipts()[forged.id] == (ReceiptStatus.REJECTED, Reason.BAD_SIGNATURE)
    h.run(20)
    assert not any("/work/" in p.topic for p in h.published)
    blocks = h.blocks()
    assert {t.id for b in blocks for t in b.txs} == {t.id for t in good}
    assert all(not b.verdicts and not b.rewards for b in blocks)
    assert all(h.receipts()[t.id][0] == ReceiptStatus.COMMITTED for t in good)
    with pytest.raises(GenesisError, match="exactly one ledger node"):
        replace(h.core.genesis, ledger_nodes=(NODE.public, key(2).public))
