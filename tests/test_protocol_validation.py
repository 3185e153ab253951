"""Stateless transaction validation: one Reason per rule, in the protocol's order."""

import dataclasses

import pytest
from framework import protocol_samples as s

from micromine.protocol import codec, validation
from micromine.protocol.kinds import Reason, ReceiptStatus
from micromine.protocol.limits import MAX_AMOUNT, MAX_FEE, MAX_TX_BYTES
from micromine.protocol.messages import Transaction
from micromine.protocol.validation import check_transaction, decode_transaction

NOW = s.NOW_MS


def check(tx: Transaction, min_fee: int = 0, now: int = NOW) -> Reason:
    return check_transaction(tx, s.CHAIN, now, min_fee)


def test_valid_transaction_is_ok() -> None:
    assert check(s.transaction()) is Reason.OK


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"chain_id": "othernet"}, Reason.WRONG_CHAIN),
        ({"amount": 0}, Reason.BAD_AMOUNT),
        ({"amount": MAX_AMOUNT + 1}, Reason.BAD_AMOUNT),
        ({"amount": 2**63 - 1}, Reason.BAD_AMOUNT),
        ({"fee": MAX_FEE + 1}, Reason.BAD_FEE),
        ({"recipient": s.ALICE.public}, Reason.SELF_TRANSFER),
        ({"expiry_ms": NOW - 1}, Reason.EXPIRED),
        ({"expiry_ms": 0}, Reason.EXPIRED),
    ],
    ids=lambda v: str(v)[:30],
)
def test_each_rule_gives_its_reason(overrides: dict[str, object], reason: Reason) -> None:
    tx = s.transaction(**overrides)  # properly signed, so only the named rule fails
    assert codec.is_signature_valid(tx)
    assert check(tx) is reason


def test_fee_below_minimum_is_bad_fee() -> None:
    assert check(s.transaction(fee=9), min_fee=10) is Reason.BAD_FEE
    assert check(s.transaction(fee=10), min_fee=10) is Reason.OK


def test_bad_signature() -> None:
    tx = s.transaction()
    assert check(dataclasses.replace(tx, signature=bytes(64))) is Reason.BAD_SIGNATURE
    # Signed by someone else.
    forged = dataclasses.replace(tx, signature=s.BOB.sign(tx.KIND, tx.chain_id, tx.id))
    assert check(forged) is Reason.BAD_SIGNATURE
    # A field changed after signing.
    assert check(dataclasses.replace(tx, amount=tx.amount + 1)) is Reason.BAD_SIGNATURE
    # Signed for another chain, then relabelled.
    other = s.transaction(chain_id="othernet")
    relabelled = dataclasses.replace(tx, signature=other.signature)
    assert check(relabelled) is Reason.BAD_SIGNATURE


def test_boundaries_are_inclusive() -> None:
    assert check(s.transaction(amount=1)) is Reason.OK
    assert check(s.transaction(amount=MAX_AMOUNT)) is Reason.OK
    assert check(s.transaction(fee=0)) is Reason.OK
    assert check(s.transaction(fee=MAX_FEE)) is Reason.OK
    assert check(s.transaction(expiry_ms=NOW)) is Reason.OK  # expires only once now > expiry
    assert check(s.transaction(expiry_ms=NOW), now=NOW + 1) is Reason.EXPIRED


def test_rules_apply_in_protocol_order() -> None:
    """A transaction breaking several rules gets the first one's reason."""
    everything_wrong = {
        "chain_id": "othernet",
        "amount": 0,
        "fee": MAX_FEE + 1,
        "recipient": s.ALICE.public,
        "expiry_ms": 0,
    }
    order = [Reason.WRONG_CHAIN, Reason.BAD_AMOUNT, Reason.BAD_FEE, Reason.SELF_TRANSFER,
             Reason.EXPIRED]  # fmt: skip
    remaining = dict(everything_wrong)
    for reason, field in zip(order, everything_wrong, strict=True):
        tx = dataclasses.replace(s.transaction(**remaining), signature=bytes(64))
        assert check(tx) is reason, field
        del remaining[field]
    unsigned = dataclasses.replace(s.transaction(**remaining), signature=bytes(64))
    assert check(unsigned) is Reason.BAD_SIGNATURE


def test_check_transaction_fields_skips_only_the_signature() -> None:
    fields_only = getattr(validation, "check_transaction_fields", None)
    if fields_only is None:
        pytest.skip("no check_transaction_fields in this version")
    unsigned = dataclasses.replace(s.transaction(), signature=bytes(64))
    assert fields_only(unsigned, s.CHAIN, NOW) is Reason.OK
    assert fields_only(s.transaction(amount=0), s.CHAIN, NOW) is Reason.BAD_AMOUNT
    assert fields_only(s.transaction(fee=1), s.CHAIN, NOW, 2) is Reason.BAD_FEE


def test_decode_transaction() -> None:
    tx = s.transaction()
    assert decode_transaction(codec.encode(tx)) == tx
    assert decode_transaction(b"\x00" * (MAX_TX_BYTES + 1)) is Reason.OVERSIZED
    assert decode_transaction(codec.encode(tx) + bytes(MAX_TX_BYTES)) is Reason.OVERSIZED
    assert decode_transaction(b"") is Reason.MALFORMED
    assert decode_transaction(b"not a transaction") is Reason.MALFORMED
    assert decode_transaction(codec.encode(tx)[:-1]) is Reason.MALFORMED
    assert decode_transaction(codec.encode(tx) + b"\x00") is Reason.MALFORMED
    assert decode_transaction(codec.encode(s.heartbeat())) is Reason.MALFORMED
    assert decode_transaction(s.with_field(tx, 6, b"\x18\x00")) is Reason.MALFORMED
    # Decoding does not judge: a badly signed but well-formed transaction decodes.
    unsigned = dataclasses.replace(tx, signature=bytes(64))
    assert decode_transaction(codec.encode(unsigned)) == unsigned


def test_reason_and_status_numbers_are_stable() -> None:
    assert {r.name: r.value for r in Reason} == {
        "OK": 0, "MALFORMED": 1, "OVERSIZED": 2, "BAD_SIGNATURE": 3, "WRONG_CHAIN": 4,
        "EXPIRED": 5, "BAD_AMOUNT": 6, "BAD_FEE": 7, "OVERSPEND": 8, "BAD_NONCE": 9,
        "NONCE_GAP": 10, "MEMPOOL_FULL": 11, "SENDER_LIMIT": 12, "NO_QUORUM": 13,
        "SELF_TRANSFER": 14, "CATCHING_UP": 15, "OTHER": 255,
    }  # fmt: skip
    assert {r.name: r.value for r in ReceiptStatus} == {
        "PENDING": 0, "COMMITTED": 1, "REJECTED": 2, "HELD": 3,
    }  # fmt: skip
