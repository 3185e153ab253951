"""The rules a verdict must pass to count, in the tally (core.py) and in a block (verify.py),
and those of a fraud proof.

    check_verdict_binding(verdict, block_height, registry, params)  -> problem | None
    check_verdict_signatures(verdict, validators, signatures)       -> problem | None
    check_fraud_binding(proof, block_height, registry, params)      -> problem | None
    check_fraud_evidence(proof, chain_id, validators, signatures)   -> problem | None
    AssignmentSignatures                                            the issuer signatures
                                                                    verified, by id

A verdict counts for a block at ``block_height`` only if:

* its assignment was made by a validator: the issuer is one, and signed it;
* its registry is in the window: block_height - assignment_window <= registry_height
  < block_height (so that registry is committed, and recent);
* its device is entitled: registered (and not banned) at registry_height, and among the
  first 2k of the ranking seeded by the assignment id;
* it judges exactly the assignment's transactions: the Merkle root of its judgements
  (tx id | signature hash, in order) is the assignment's ``tx_root``;
* its device signed it, and is neither banned nor revoked as of the block's parent.

A fraud proof (verdict, tx) proves its device lied when:

* its verdict passes every rule above (so a validator gave the device this batch, and
  the device signed what it says), for the block that carries the proof;
* that verdict judges ``tx`` itself "valid": a judgement with ``tx``'s id, the hash of
  ``tx``'s signature and reason 0 (the signature hash is what stops anyone from pairing
  an honest "valid" with a copy of the transaction carrying a garbage signature);
* ``tx`` fails validation.check_transaction_objective: a rule that needs neither time
  nor state nor the minimum fee, which every honest device applies (PROTOCOL.md
  section 9), so no honest device can be framed.

The binding rules need no signature, so the state transition (transition.py) checks
them, for the proposer too; the signature rules (and the fraud evidence, which costs a
transaction signature check) are ``verify_block``'s.  The k verdicts on
one batch share one assignment, so its signature is verified once and remembered
(``AssignmentSignatures``, bounded): only a successful verification is remembered, keyed
by the assignment id and the signature bytes, so a cache hit means exactly "these bytes
verified before".  Each problem is a short name: the core counts drops under it
(``verdict.<problem>``) and ``verify_block`` puts it in its error.
"""

from collections import OrderedDict
from collections.abc import Collection, Iterable

from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.protocol.assignment import is_registry_height_in_window
from micromine.protocol.block import Block, FraudProof
from micromine.protocol.codec import is_signature_valid
from micromine.protocol.crypto import sha256
from micromine.protocol.genesis import ChainParams
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import Assignment, Transaction, Verdict
from micromine.protocol.validation import check_transaction_objective

ASSIGNMENT_SIGNATURES = 16_384  # verified assignment signatures remembered


class AssignmentSignatures:
    """The assignments whose issuer signature verified (a bounded memo of a pure check)."""

    def __init__(self, capacity: int = ASSIGNMENT_SIGNATURES) -> None:
        self.capacity = capacity
        self._verified: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self.verifications = 0  # signature checks actually made (for tests and stats)

    def is_valid(self, assignment: Assignment) -> bool:
        key = (assignment.id, assignment.signature)
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        self.verifications += 1
        if not is_signature_valid(assignment):
            return False
        self._verified[key] = None
        if len(self._verified) > self.capacity:
            self._verified.popitem(last=False)
        return True


def judged_valid(verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """What ``verdict`` says is valid: (tx id, SHA-256 of the signature) of each copy of
    a transaction it judged valid.  A judgement is about that very copy: one of the same
    id with another signature was not judged."""
    return [(j.tx_id, j.signature_hash) for j in verdict.judgements if j.reason == Reason.OK]


def judges_valid(verdict: Verdict, tx_id: bytes, signature_hash: bytes) -> bool:
    """Does ``verdict`` say that the transaction ``tx_id`` with the signature whose
    SHA-256 is ``signature_hash`` (that very copy) is valid?"""
    return (tx_id, signature_hash) in judged_valid(verdict)


def judges_of(tx: Transaction, verdicts: Iterable[Verdict]) -> list[Verdict]:
    """The ``verdicts`` that judged ``tx``, that very copy, valid: once ``tx`` is known
    forged, each is a fraud proof."""
    signature_hash = sha256(tx.signature)
    return [v for v in verdicts if judges_valid(v, tx.id, signature_hash)]


def fraud_proofs_in(block: Block, chain_id: str) -> list[FraudProof]:
    """A committed block read by someone who checks every signature (a watcher with
    ``blocks watch --verify``): for each transaction that fails its stateless check
    (a forgery the devices let through), a proof against each of the block's verdicts
    that judged that very copy valid.  One signature check per transaction."""
    return [
        FraudProof(verdict, tx)
        for tx in block.txs
        if check_transaction_objective(tx, chain_id) is not Reason.OK
        for verdict in judges_of(tx, block.verdicts)
    ]


def check_verdict_binding(
    verdict: Verdict, block_height: int, registry: DeviceRegistry, params: ChainParams
) -> str | None:
    """The rules that need no signature; ``registry`` must hold ``registry_height``."""
    assignment = verdict.assignment
    # [REJECT] Its device is not banned (as of the parent of the block).
    if registry.is_banned(verdict.device):
        return "banned"
    # [REJECT] Its device is not revoked (as of the parent of the block): a revocation
    # takes effect at once, not when the assignment's registry leaves the window.
    if registry.is_revoked_at(verdict.device, block_height - 1):
        return "revoked"
    # [REJECT] Its registry is committed and at most assignment_window blocks old.
    if not is_registry_height_in_window(
        assignment.registry_height, block_height, params.assignment_window
    ):
        return "stale_registry"
    # [REJECT] Its device is registered then, and among the first 2k of the ranking
    # seeded by the assignment.
    if verdict.device not in registry.entitled(assignment.id, assignment.registry_height, params.k):
        return "not_entitled"
    # [REJECT] It judges the assignment's transactions: all of them, in order.
    if verdict.judgements_root != assignment.tx_root:
        return "tx_root_mismatch"
    return None


def check_verdict_signatures(
    verdict: Verdict, validators: Collection[bytes], signatures: AssignmentSignatures
) -> str | None:
    """The assignment is a validator's, signed by it; the verdict is signed by its device."""
    # [REJECT] The assignment's issuer is a validator.
    if verdict.assignment.issuer not in validators:
        return "unknown_issuer"
    # [REJECT] The issuer signed the assignment (verified once per assignment).
    if not signatures.is_valid(verdict.assignment):
        return "bad_assignment_signature"
    # [REJECT] The device signed the verdict.
    if not is_signature_valid(verdict):
        return "bad_signature"
    return None


def check_fraud_binding(
    proof: FraudProof, block_height: int, registry: DeviceRegistry, params: ChainParams
) -> str | None:
    """The fraud-proof rules that need no signature (see the module docstring)."""
    # [REJECT] Its verdict could justify a transaction in this block.
    problem = check_verdict_binding(proof.verdict, block_height, registry, params)
    if problem is not None:
        return problem
    # [REJECT] The verdict judges this very transaction (id and signature) valid.
    if not judges_valid(proof.verdict, proof.tx.id, sha256(proof.tx.signature)):
        return "not_judged_valid"
    return None


def check_fraud_evidence(
    proof: FraudProof,
    chain_id: str,
    validators: Collection[bytes],
    signatures: AssignmentSignatures,
) -> str | None:
    """The fraud-proof rules that need signatures: the verdict's, its assignment's, and
    the transaction's own check."""
    # [REJECT] The verdict is for this chain, its assignment a validator's, both signed.
    if proof.verdict.chain_id != chain_id:
        return "another_chain"
    problem = check_verdict_signatures(proof.verdict, validators, signatures)
    if problem is not None:
        return problem
    # [REJECT] The transaction really fails a check that needs neither time nor state.
    if check_transaction_objective(proof.tx, chain_id) is Reason.OK:
        return "transaction_valid"
    return None
