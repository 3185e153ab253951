"""The simulator's invariants: what every run must satisfy, checked from observations.

During the run (the first violation stops the run):
    agreement          no two honest nodes commit different blocks at one height
    certificates       every block an honest node decides is its next height and carries
                       > 2/3 valid COMMIT signatures from distinct validators
    no equivocation    no honest node signs two different messages for one
                       (kind, height, round) -- across crashes and restarts too
    evidence is true   every Evidence names two conflicting, validly signed messages of
                       one validator, and never an honest one
    no crash           the core never raises, whatever bytes arrive

At the end of the run:
    progress           after the faults end (GST, last restart, end of a silence), every
                       live honest node commits H more blocks (and at least min_blocks
                       in all) within progress_ms; "live" leaves out only a node that is
                       silent for good (it is the faulty one)
    nothing lost       then, within drain_ms, every transfer the wallet submitted is
                       committed exactly once on every live honest node (the wallet
                       resends until a COMMITTED receipt, as real clients do), and every
                       replay it sent (another transfer with a committed one's nonce)
                       is finally rejected: a valid transfer is committed, an invalid
                       one finally rejected, within T = drain_ms of the progress target
    receipts are true  no REJECTED receipt for a transaction the chain commits; every
                       COMMITTED receipt names the height the chain has it at; a
                       REJECTED BAD_NONCE or NONCE_GAP states the sender's nonce at the
                       height its detail names as the chain has it (docs/PROTOCOL.md
                       8.1), checked whatever else failed
    validity           every block an honest node committed has a certificate (checked
                       by CertificateChecker, written apart from certificate.py) and
                       passes the shipped node's rules, replayed from genesis by a fresh
                       non-validator LedgerNode through its catch-up path
    evidence produced  if the Byzantine node's equivocation reached one honest core
                       while at that height (within the rounds it stores), some honest
                       node reported Evidence against it
"""

import bisect
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from micromine.ledger_node.node import LedgerNode
from micromine.ledger_node.storage import LedgerStore
from micromine.protocol import topics
from micromine.protocol.block import Block
from micromine.protocol.codec import encode, is_commit_signature_valid, is_signature_valid
from micromine.protocol.consensus import Precommit, Prevote, Proposal
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.genesis import Genesis
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.messages import Receipt, Transaction

Vote = Proposal | Prevote | Precommit


def short(data: bytes) -> str:
    return data.hex()[:10]


def _slot(message: Vote) -> tuple[str, int, int]:
    return (type(message).__name__, message.height, message.round)


def _value(message: Vote) -> bytes:
    return message.block.hash if isinstance(message, Proposal) else message.block_hash


@dataclass(slots=True)
class Observer:
    """Collects what the run did and the violations found along the way."""

    names: dict[bytes, str]  # validator key -> "n2"
    honest: frozenset[bytes]
    byzantine: bytes | None
    violations: list[str] = field(default_factory=list)
    decided: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # height -> hash, node
    signed: dict[tuple[int, str, int, int], bytes] = field(default_factory=dict)
    evidence: Counter[str] = field(default_factory=Counter)  # accused name -> reports
    witnessed: dict[tuple[int, str, int, int], set[bytes]] = field(default_factory=dict)
    equivocation_witnessed: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.violations)

    def violation(self, now_ms: int, text: str) -> None:
        self.violations.append(f"t={now_ms}ms {text}")

    def on_signed(self, node: int, message: Vote, now_ms: int) -> None:
        """An honest node broadcast ``message``: it must not contradict what it signed."""
        slot = (node, *_slot(message))
        before = self.signed.setdefault(slot, message.id)
        if before != message.id:
            kind, height, round_ = _slot(message)
            self.violation(
                now_ms,
                f"honest equivocation: n{node} signed two different {kind}s "
                f"at height {height} round {round_}",
            )

    def on_decide(self, node: int, block: Block, now_ms: int) -> None:
        first = self.decided.setdefault(block.height, (block.hash, node))
        if first[0] != block.hash:
            self.violation(
                now_ms,
                f"agreement: n{node} committed {short(block.hash)} at height {block.height}, "
                f"n{first[1]} committed {short(first[0])}",
            )

    def on_evidence(self, node: int, first: Vote, second: Vote, now_ms: int) -> None:
        accused = self.names.get(first.signer, short(first.signer))
        conflicting = (
            type(first) is type(second)
            and first.signer == second.signer
            and _slot(first) == _slot(second)
            and first.id != second.id
            and is_signature_valid(first)
            and is_signature_valid(second)
        )
        if not conflicting:
            self.violation(now_ms, f"n{node} reported bogus evidence against {accused}")
        elif first.signer in self.honest:
            self.violation(now_ms, f"n{node} reported evidence against honest {accused}")
        self.evidence[accused] += 1

    def on_delivered(self, node: int, message: Vote, height: int, max_round: int) -> None:
        """A message reached a core at ``height`` that stores rounds up to ``max_round``:
        note the Byzantine node's equivocations that this core can see."""
        if message.signer != self.byzantine or message.height != height:
            return
        if message.round > max_round:
            return
        ids = self.witnessed.setdefault((node, *_slot(message)), set())
        ids.add(message.id)
        if len(ids) > 1:
            self.equivocation_witnessed = True

    def on_crash(self, node: int) -> None:
        """A crashed core forgets what it saw (not what it signed)."""
        for key in [key for key in self.witnessed if key[0] == node]:
            del self.witnessed[key]


class CertificateChecker:
    """Counts distinct validators with a valid COMMIT signature over (the round the
    block's certificate names, its hash).

    Written independently of ``ledger_node/consensus/certificate.py`` so that a bug there cannot
    hide the same bug in the node.  Verifications are memoised (a pure function of the
    signer, round, hash and signature).
    """

    def __init__(self, chain_id: str, validators: Sequence[bytes]) -> None:
        self.chain_id = chain_id
        self.validators = frozenset(validators)
        self.needed = 2 * len(validators) // 3 + 1
        self._memo: dict[tuple[bytes, int, bytes, bytes], bool] = {}

    def valid(self, signer: bytes, round_: int, block_hash: bytes, signature: bytes) -> bool:
        memo_key = (signer, round_, block_hash, signature)
        found = self._memo.get(memo_key)
        if found is None:
            found = is_commit_signature_valid(signer, self.chain_id, round_, block_hash, signature)
            self._memo[memo_key] = found
        return found

    def problem(self, block: Block) -> str | None:
        block_hash, round_ = block.hash, block.commit_round
        if round_ == 0:
            return "no certificate (commit round 0)"
        signers = {
            entry.signer
            for entry in block.certificate
            if entry.signer in self.validators
            and self.valid(entry.signer, round_, block_hash, entry.signature)
        }
        if len(signers) < self.needed:
            return (
                f"certificate has {len(signers)} valid signers for round {round_}, "
                f"needs {self.needed}"
            )
        return None


def check_validity(
    chains: Mapping[int, Sequence[Block]],
    *,
    genesis: Genesis,
    certificates: CertificateChecker,
) -> list[str]:
    """Every block of each honest chain has a certificate (checked independently) and
    passes the shipped node's rules: the chain is replayed from genesis by a fresh
    node that is no validator, through its catch-up path (sync replies)."""
    problems: list[str] = []
    replayed: set[bytes] = set()  # tips of chains already replayed (prefixes are shared)
    for node, chain in chains.items():
        if not chain or chain[-1].hash in replayed:
            continue
        replayed.add(chain[-1].hash)
        replica = _fresh_observer(genesis)
        topic = topics.sync_reply(genesis.chain_id, replica.core.replica.reply_to)
        for block in chain:
            problem = certificates.problem(block)
            if problem is None:
                now = block.header.timestamp_ms + 1
                replica.execute(replica.core.on_message(topic, encode(block), now))
                tip = replica.core.tip
                if (tip.height, tip.hash) != (block.height, block.hash):
                    problem = f"the node's rules refuse it ({_last_drop(replica)})"
            if problem is not None:
                problems.append(
                    f"validity: n{node} committed an invalid block at height {block.height} "
                    f"({short(block.hash)}): {problem}"
                )
                break
    return problems


def _fresh_observer(genesis: Genesis) -> LedgerNode:
    store = LedgerStore.in_memory("replay.db", genesis)
    key = KeyPair(sha256(b"micromine-sim/replayer"))
    return LedgerNode.open(
        store, genesis, key, rng=random.Random(0), now_ms=genesis.timestamp_ms, audit_rate=0.0
    )


def _last_drop(node: LedgerNode) -> str:
    drops = node.core.stats.dropped
    return ", ".join(f"{reason} x{count}" for reason, count in drops.items()) or "no reason"


def check_nothing_lost(
    chains: Mapping[int, Sequence[Block]], acknowledged: Sequence[Transaction]
) -> list[str]:
    """Every submitted transfer committed exactly once on every live honest node."""
    problems: list[str] = []
    for node, chain in chains.items():
        counts = Counter(tx.id for block in chain for tx in block.txs)
        missing = [tx for tx in acknowledged if counts[tx.id] == 0]
        twice = [tx_id for tx_id, count in counts.items() if count > 1]
        if missing:
            problems.append(
                f"lost: n{node} never committed {len(missing)} of {len(acknowledged)} "
                f"acknowledged transactions (first {short(missing[0].id)}, "
                f"height {len(chain)})"
            )
        if twice:
            problems.append(f"lost: n{node} committed {short(twice[0])} more than once")
    return problems


def check_receipts(
    chain: Sequence[Block],
    receipts: Sequence[tuple[int, Receipt]],
    txs: Mapping[bytes, Transaction],
) -> list[str]:
    """Every receipt the wallet got agrees with ``chain`` (the longest live honest one;
    agreement makes the others its prefixes): see "receipts are true" above.  ``txs``:
    what the wallet sent, by id."""
    where = {tx.id: block.height for block in chain for tx in block.txs}
    heights: dict[bytes, list[int]] = {}  # sender -> heights of its committed txs
    for block in chain:
        for tx in block.txs:
            heights.setdefault(tx.sender, []).append(block.height)
    problems: list[str] = []
    for at, receipt in receipts:
        tx_id, status = receipt.item_id, receipt.status
        said = f"t={at}ms receipts: {short(tx_id)} {ReceiptStatus(status).name}"
        if status == ReceiptStatus.REJECTED and tx_id in where:
            problems.append(f"{said} {Reason(receipt.value).name}, committed at {where[tx_id]}")
        elif status == ReceiptStatus.COMMITTED and where.get(tx_id, receipt.value) != receipt.value:
            problems.append(f"{said} at {receipt.value}, in the chain at {where[tx_id]}")
        elif (
            status == ReceiptStatus.COMMITTED and tx_id not in where and receipt.value <= len(chain)
        ):
            problems.append(f"{said} at {receipt.value}, not in the chain")
        elif (
            status == ReceiptStatus.REJECTED
            and receipt.height is not None
            and receipt.height <= len(chain)
            and (sent := txs.get(tx_id)) is not None
        ):
            used = bisect.bisect_right(heights.get(sent.sender, []), receipt.height)
            if receipt.value == Reason.BAD_NONCE and not sent.nonce < used:
                problems.append(
                    f"{said} BAD_NONCE: nonce {sent.nonce}, {used} used at {receipt.height}"
                )
            if receipt.value == Reason.NONCE_GAP and not (
                used <= (receipt.next_nonce or 0) < sent.nonce
            ):
                problems.append(
                    f"{said} NONCE_GAP: nonce {sent.nonce} waiting for {receipt.next_nonce}, "
                    f"{used} used at {receipt.height}"
                )
    return problems
