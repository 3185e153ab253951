"""Genesis operators: optional, and absent from the hash when there are none."""

import pytest
from framework.protocol_samples import CHAIN, DEVICE, LEDGER, key

from micromine.protocol.genesis import Genesis, GenesisError

OPERATOR = key("operator")


def genesis(**changes: object) -> Genesis:
    fields: dict[str, object] = {
        "chain_id": CHAIN,
        "timestamp_ms": 1,
        "ledger_nodes": (LEDGER.public,),
        "balances": ((DEVICE.public, 5),),
    }
    fields.update(changes)
    return Genesis(**fields)  # type: ignore[arg-type]


def test_without_operators_the_wire_form_and_hash_are_unchanged() -> None:
    plain = genesis()
    assert len(plain.to_wire()) == 7  # the form genesis is hashed in without operators
    assert "operators" not in plain.to_json()
    assert Genesis.from_json(plain.to_json()).hash == plain.hash


def test_operators_round_trip_and_change_the_hash() -> None:
    with_ops = genesis(operators=(OPERATOR.public,))
    assert with_ops.hash != genesis().hash
    assert Genesis.from_json(with_ops.to_json()) == with_ops


@pytest.mark.parametrize(
    "operators", [(b"short",), (OPERATOR.public, OPERATOR.public), (LEDGER.public,)]
)
def test_bad_operator_lists_are_refused(operators: tuple[bytes, ...]) -> None:
    with pytest.raises(GenesisError):
        genesis(operators=operators)
