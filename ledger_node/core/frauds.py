"""Fraud proofs a ledger node has found and holds for the next block, and what it needs
to find them.

    offer(verdict, tx, ...)     a "valid" verdict on a transaction known to be forged:
                                queue the proof if it would pass verify_block
    note_forged(tx)             tx failed check_transaction_objective (settlement, audit)
    note_rejected(tx)           q devices judged tx invalid; nobody checked it
    forged_for(tx_id)           the transaction, if a "valid" on it proves fraud (checking
                                one that devices rejected, once)
    on_block(height, registry)  a committed block banned devices: forget their proofs, and
                                those that no longer fit the next block

Where proofs come from (core.py): a disagreement settled as a forgery, an audit that
finds one, a "valid" verdict that arrives after a transaction was found forged or
rejected by devices (checked then, one stateless check per transaction), or a check of
committed transactions that finds a forgery a block already carries (``judges_of``: the
block's own verdicts are the proofs).  The proposer
includes the pending proofs (blocks.select_frauds) and ``has_work`` is true while any
are pending, so an idle chain still bans.

Bounded: one proof per device (MAX_PENDING_PROOFS devices), and the last MAX_REMEMBERED
forged and device-rejected transactions.
"""

from collections import OrderedDict
from collections.abc import Collection, Iterable

from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.chain.verdicts import (
    AssignmentSignatures,
    check_fraud_binding,
    check_fraud_evidence,
    judges_of,
)
from micromine.protocol.block import FraudProof
from micromine.protocol.genesis import ChainParams
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Transaction, Verdict
from micromine.protocol.validation import check_transaction_objective

MAX_PENDING_PROOFS = 256  # devices with a proof waiting for a block
MAX_REMEMBERED = 4096  # forged, and device-rejected, transactions remembered


class FraudBook:
    def __init__(self, chain_id: str, validators: Collection[bytes], params: ChainParams) -> None:
        self.chain_id = chain_id
        self.validators = validators
        self.params = params
        self.pending: dict[bytes, FraudProof] = {}  # by device
        self._forged: OrderedDict[bytes, Transaction] = OrderedDict()
        self._rejected: OrderedDict[bytes, Transaction] = OrderedDict()
        self.found = 0  # proofs queued

    def __bool__(self) -> bool:
        return bool(self.pending)

    def note_forged(self, tx: Transaction) -> None:
        self._remember(self._forged, tx)
        self._rejected.pop(tx.id, None)

    def note_rejected(self, tx: Transaction) -> None:
        if tx.id not in self._forged:
            self._remember(self._rejected, tx)

    def forged_for(self, tx_id: bytes) -> Transaction | None:
        """The transaction, when it is known to fail check_transaction_objective: a
        "valid" judgement on it is a lie.  One rejected by devices is checked now (once;
        it is forgotten either way)."""
        found = self._forged.get(tx_id)
        if found is not None:
            return found
        suspect = self._rejected.pop(tx_id, None)
        if suspect is None or check_transaction_objective(suspect, self.chain_id) is Reason.OK:
            return None
        self.note_forged(suspect)
        return suspect

    def is_known(self, tx_id: bytes) -> bool:
        return tx_id in self._forged or tx_id in self._rejected

    def offer(
        self,
        verdict: Verdict,
        tx: Transaction,
        *,
        height: int,
        registry: DeviceRegistry,
        signatures: AssignmentSignatures,
    ) -> str | None:
        """Queue the proof that ``verdict`` lied about ``tx``, if it would pass the block
        rules at ``height``; otherwise (or when full) the reason it was not queued."""
        device = verdict.device
        # [IGNORE] A proof against this device is pending already.
        if device in self.pending:
            return None
        proof = FraudProof(verdict, tx)
        # [IGNORE] Not a proof a block could carry (another copy of the transaction, a
        # verdict out of the window, a device banned already).
        problem = check_fraud_binding(proof, height, registry, self.params) or (
            check_fraud_evidence(proof, self.chain_id, self.validators, signatures)
        )
        if problem is not None:
            return problem
        if len(self.pending) >= MAX_PENDING_PROOFS:
            return "proofs_full"
        self.pending[device] = proof
        self.found += 1
        return None

    @staticmethod
    def judges_of(tx: Transaction, verdicts: Iterable[Verdict]) -> list[Verdict]:
        """chain.verdicts.judges_of: the verdicts that lied about ``tx`` once it is
        known forged."""
        return judges_of(tx, verdicts)

    def on_block(self, next_height: int, registry: DeviceRegistry) -> None:
        """After a commit: drop the proofs of banned devices, and those that no longer fit
        a block at ``next_height`` (their verdict left the window)."""
        self.pending = {
            device: proof
            for device, proof in self.pending.items()
            if check_fraud_binding(proof, next_height, registry, self.params) is None
        }

    @staticmethod
    def _remember(memory: OrderedDict[bytes, Transaction], tx: Transaction) -> None:
        memory[tx.id] = tx
        memory.move_to_end(tx.id)
        if len(memory) > MAX_REMEMBERED:
            memory.popitem(last=False)
