"""The simulator's ledger application: what each simulated node's ConsensusApp does.

A stand-in for the real ledger that keeps what matters to consensus: a committed chain
of real ``Block``s, an account-free state (the set of committed transaction ids), and the
transactions this node has acknowledged but not yet seen committed.  The validity rules
are the ones an honest ledger applies to a proposed block; ``block_problem`` is shared by
``SimApp.is_valid`` and by the end-of-run replay that re-checks every committed chain.

"Acknowledged" has two sides.  A node proposes only what *it* acknowledged (its pending
set; an acknowledgement sent while it is down is lost to it).  Validity asks whether the
*system* acknowledged a transaction -- the run's registry, shared read-only by all apps --
because a validity rule must be a function of the block and the chain alone: with a
node-local rule, a node that missed one acknowledgement could never decide (nor catch up
past) the block holding it.  The registry stands in for what a real ledger checks in the
transaction itself (signature, nonce, balance); it only grows, so a block valid once
stays valid, as the core's per-height validity cache assumes.

Pure: no clock (``now_ms`` comes with each call), no randomness, no I/O.  The transaction
pool is signed once per process (signing is the expensive part) and shared.
"""

import functools
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

from micromine.protocol.block import (
    GENESIS_PARENT,
    Block,
    BlockHeader,
    compute_body_hash,
    compute_tx_root,
)
from micromine.protocol.codec import is_commit_signature_valid, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.messages import Transaction

CHAIN_ID = "simnet-1"
GENESIS_HASH = GENESIS_PARENT  # prev_hash of height 1
EMPTY_BODY_HASH = compute_body_hash((), (), ())
MAX_SIM_BLOCK_TXS = 16  # a proposal carries at most this many pending transactions
POOL_SIZE = 400  # transactions a run may acknowledge, in pool order
STRAY_POOL_SIZE = 16  # signed but never acknowledged: for invalid Byzantine blocks
GENESIS_MS = 1_700_000_000_000  # simulated time 0, as a timestamp


def validator_key(index: int) -> KeyPair:
    return KeyPair(sha256(b"micromine-sim/validator/" + str(index).encode()))


@functools.cache
def validator_keys(count: int) -> tuple[KeyPair, ...]:
    return tuple(validator_key(i) for i in range(count))


@functools.cache
def validator_publics(count: int) -> tuple[bytes, ...]:
    return tuple(key.public for key in validator_keys(count))


def _sign_pool(label: str, count: int) -> tuple[Transaction, ...]:
    client = KeyPair(sha256(b"micromine-sim/client/" + label.encode()))
    sender, recipient = client.public, sha256(b"micromine-sim/recipient")
    return tuple(
        sign(Transaction(CHAIN_ID, sender, recipient, 1 + i, 1, i, GENESIS_MS * 2, label), client)
        for i in range(count)
    )


@functools.cache
def tx_pool() -> tuple[Transaction, ...]:
    """The transactions a run acknowledges, in order (the k-th acknowledgement is [k])."""
    return _sign_pool("ack", POOL_SIZE)


@functools.cache
def stray_pool() -> tuple[Transaction, ...]:
    """Validly signed transactions that no run ever acknowledges."""
    return _sign_pool("stray", STRAY_POOL_SIZE)


@functools.cache
def tx_ids() -> dict[bytes, int]:
    """Pool transaction id -> pool index."""
    return {tx.id: i for i, tx in enumerate(tx_pool())}


def state_root(committed: Iterable[bytes]) -> bytes:
    """The account-free state: SHA-256 over the sorted committed transaction ids."""
    return sha256(b"".join(sorted(committed)))


class CertificateChecker:
    """Counts distinct validators with a valid COMMIT signature over (the round the
    block's certificate names, its hash).

    Written independently of ``ledger_node/certificate.py`` so that a bug there cannot
    hide the same bug in the core.  Verifications are memoised (a pure function of the
    signer, round, hash and signature), which spares most of the Ed25519 work of a run.
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


def block_problem(
    block: Block,
    *,
    chain_id: str,
    chain: Sequence[Block],
    committed: AbstractSet[bytes],
    acknowledged: AbstractSet[bytes],
    validators: frozenset[bytes],
) -> str | None:
    """The honest validity rules for ``block`` as the next block after ``chain``.

    Returns None when valid, else the first broken rule.  The certificate is not
    looked at here: a proposal has none and a decided block's is checked separately.
    """
    header = block.header
    parent = chain[-1] if chain else None
    # [REJECT] This chain, the next height, on top of our last committed block.
    if header.chain_id != chain_id:
        return "wrong chain"
    if header.height != len(chain) + 1:
        return f"height {header.height}, expected {len(chain) + 1}"
    if header.prev_hash != (parent.hash if parent else GENESIS_HASH):
        return "prev_hash is not the last committed block"
    # [REJECT] Time moves forward; the proposer is a validator.
    if parent is not None and header.timestamp_ms <= parent.header.timestamp_ms:
        return "timestamp does not follow the parent's"
    if header.proposer not in validators:
        return "proposer is not a validator"
    # [REJECT] The header commits to the body: Merkle root of the txs, empty otherwise.
    if len(block.txs) > MAX_SIM_BLOCK_TXS:
        return "too many transactions"
    body = (block.verdicts, block.rewards, block.registrations)
    if any(body) or header.body_hash != EMPTY_BODY_HASH:
        return "body is not empty"
    if header.tx_root != compute_tx_root(block.txs):
        return "tx_root does not match the transactions"
    # [REJECT] Each transaction acknowledged, not committed before, at most once here.
    ids = [tx.id for tx in block.txs]
    if len(set(ids)) != len(ids):
        return "a transaction appears twice"
    for tx_id in ids:
        if tx_id in committed:
            return f"transaction {tx_id.hex()[:12]} already committed"
        if tx_id not in acknowledged:
            return f"transaction {tx_id.hex()[:12]} was never acknowledged"
    # [REJECT] The header commits to the post-state.
    if header.state_root != state_root([*committed, *ids]):
        return "state_root does not match"
    return None


class SimApp:
    """One node's ledger: chain, committed ids, acknowledged and pending transactions.

    ``chain`` and ``acknowledged`` are what the node persists; a restarted node builds a
    new SimApp from them (pending = acknowledged minus committed).  ``registry`` is the
    run's set of acknowledged transaction ids (see the module docstring).
    """

    def __init__(
        self,
        *,
        chain_id: str,
        key: KeyPair,
        validators: Sequence[bytes],
        certificates: CertificateChecker,
        registry: AbstractSet[bytes],
        chain: Sequence[Block] = (),
        acknowledged: Iterable[Transaction] = (),
    ) -> None:
        self.chain_id = chain_id
        self.key = key
        self.public = key.public
        self.validators = frozenset(validators)
        self.certificates = certificates
        self.registry = registry
        self.chain: list[Block] = list(chain)
        self.committed: set[bytes] = {tx.id for block in self.chain for tx in block.txs}
        self.acknowledged: dict[bytes, Transaction] = {}
        self.pending: dict[bytes, Transaction] = {}  # acknowledgement order
        for tx in acknowledged:
            self.acknowledge(tx)

    # ---- the ConsensusApp protocol ------------------------------------------------

    def has_work(self) -> bool:
        return bool(self.pending)

    def propose(self, height: int, round: int, now_ms: int) -> Block | None:
        if height != len(self.chain) + 1:
            return None  # not our next height: nothing sensible to offer
        txs = tuple(list(self.pending.values())[:MAX_SIM_BLOCK_TXS])
        parent = self.chain[-1] if self.chain else None
        timestamp = GENESIS_MS + now_ms
        if parent is not None:
            timestamp = max(timestamp, parent.header.timestamp_ms + 1)
        header = BlockHeader(
            chain_id=self.chain_id,
            height=height,
            prev_hash=parent.hash if parent else GENESIS_HASH,
            tx_root=compute_tx_root(txs),
            body_hash=EMPTY_BODY_HASH,
            state_root=state_root([*self.committed, *(tx.id for tx in txs)]),
            timestamp_ms=timestamp,
            proposer=self.public,
        )
        return Block(header, txs, (), (), 0, ())

    def is_valid(self, block: Block) -> bool:
        return self.problem(block) is None

    def is_timely(self, block: Block, now_ms: int, message_delay_ms: int) -> bool:
        """Simulated clocks agree, so no drift: at most ``now`` as a timestamp, and at
        least ``now`` less the message delay the core allows."""
        clock = GENESIS_MS + now_ms
        return clock - message_delay_ms <= block.header.timestamp_ms <= clock

    # ---- the simulator's side -----------------------------------------------------

    def problem(self, block: Block) -> str | None:
        return block_problem(
            block,
            chain_id=self.chain_id,
            chain=self.chain,
            committed=self.committed,
            acknowledged=self.registry,
            validators=self.validators,
        )

    def acknowledge(self, tx: Transaction) -> None:
        tx_id = tx.id
        if tx_id in self.acknowledged:
            return
        self.acknowledged[tx_id] = tx
        if tx_id not in self.committed:
            self.pending[tx_id] = tx

    def commit(self, block: Block) -> str | None:
        """Append a decided block; returns what is wrong with deciding it, if anything.

        A block at the wrong height is not appended; one with a short certificate is (the
        core decided it) and the problem is reported as a violation.
        """
        if block.height != len(self.chain) + 1:
            return f"decided height {block.height} while at {len(self.chain) + 1}"
        problem = self.certificates.problem(block)
        self.chain.append(block)
        for tx in block.txs:
            tx_id = tx.id
            self.committed.add(tx_id)
            self.pending.pop(tx_id, None)
        return problem
