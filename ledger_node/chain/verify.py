"""The honest validity rules for a block: the state transition plus the signatures.

    verify_block(state, block, validators=)  -> transition.state_transition plus the
                                                signature checks, or InvalidBlockError

Every ledger node runs ``verify_block`` on a proposal before prevoting for it, and on a
block learned with its certificate; the proposer builds blocks (blocks.build_block)
with the same ``state_transition``, so they pass it by construction.  Everything here
is deterministic: the same parent state and block give the same answer on every node,
which is what lets n nodes agree on validity.

Transaction signatures are *not* checked here unless the chain asks for it
(``recheck_tx_signatures``): that is the devices' work.  What a node checks instead is
who vouched for each transaction: q "valid" verdicts, each signed by a device that the
chain had registered and that the rendezvous ranking of a validator's signed assignment
entitled to judge it, and each bound to that assignment's transactions
(verdicts.py, protocol/assignment.py, registry.py).  So a node verifies one signature
per verdict (one per device per batch) and one per assignment, not one per transaction.
"""

from collections.abc import Sequence

from micromine.ledger_node.chain.chain_state import ChainState
from micromine.ledger_node.chain.transition import InvalidBlockError, Transition, state_transition
from micromine.ledger_node.chain.verdicts import (
    AssignmentSignatures,
    check_fraud_evidence,
    check_verdict_signatures,
)
from micromine.protocol.block import Block
from micromine.protocol.codec import is_signature_valid


def verify_block(
    state: ChainState,
    block: Block,
    *,
    validators: Sequence[bytes],
    signatures: AssignmentSignatures | None = None,
) -> Transition:
    """The checks that need signatures, then ``state_transition``: the block's
    transition from ``state``, or InvalidBlockError.  ``signatures`` remembers verified
    assignment signatures across calls."""
    signatures = signatures if signatures is not None else AssignmentSignatures()
    header = block.header
    # [REJECT] The proposer is a validator.
    if header.proposer not in validators:
        raise InvalidBlockError("proposer is not a validator")
    # [REJECT] Each verdict is for this chain and listed once; its assignment is a
    # validator's, signed by it; the verdict is signed by its device (verdicts.py).
    if len({v.id for v in block.verdicts}) != len(block.verdicts):
        raise InvalidBlockError("a verdict appears twice")
    for verdict in block.verdicts:
        if verdict.chain_id != header.chain_id:
            raise InvalidBlockError(f"verdict from {verdict.device.hex()[:16]} is forged")
        problem = check_verdict_signatures(verdict, validators, signatures)
        if problem is not None:
            raise InvalidBlockError(
                f"verdict from {verdict.device.hex()[:16]} is forged: {problem}"
            )
    # [REJECT] Each fraud proof's verdict is signed, under a validator's signed
    # assignment, and its transaction really fails a check that needs neither time
    # nor state (verdicts.py): a device that said "valid" lied.
    for proof in block.frauds:
        problem = check_fraud_evidence(proof, header.chain_id, validators, signatures)
        if problem is not None:
            raise InvalidBlockError(f"fraud proof against {proof.device.hex()[:16]}: {problem}")
    # [REJECT] Each registration is signed by the device it registers.
    for hello in block.registrations:
        if not is_signature_valid(hello):
            raise InvalidBlockError(f"registration of {hello.device.hex()[:16]} is forged")
    # [REJECT] Each approval is signed by its operator.
    for approval in block.approvals:
        if not is_signature_valid(approval):
            raise InvalidBlockError(f"approval of {approval.device.hex()[:16]} is forged")
    transition = state_transition(state, block)
    # [REJECT] Each transaction is signed by its sender, when the chain asks validators
    # to check (ChainParams.recheck_tx_signatures): one verification per transaction per
    # node, the safety net until audits and fraud proofs guard the devices' work.  Last,
    # so that the cheaper rules (entitlement among them) refuse what they can first.
    if state.params.recheck_tx_signatures:
        for tx in block.txs:
            if not is_signature_valid(tx):
                raise InvalidBlockError(f"tx {tx.id.hex()[:16]} has a bad signature")
    return transition
