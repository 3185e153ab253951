"""protocol/vrf.py: ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381).  What makes it usable as
the seed of a judges' ranking: a proof verifies exactly for its key and input, the
output is one value per (key, input), and anything else fails closed."""

from hypothesis import given, settings
from hypothesis import strategies as st

from micromine.protocol import vrf
from micromine.protocol.crypto import KeyPair, sha256

KEYS = [KeyPair(sha256(b"vrf key %d" % i)) for i in range(3)]
Q = 2**252 + 27742317777372353535851937790883648493


@settings(max_examples=40, deadline=None)
@given(alpha=st.binary(max_size=200), index=st.integers(0, 2))
def test_a_proof_verifies_for_its_key_and_input_only(alpha: bytes, index: int) -> None:
    key, other = KEYS[index], KEYS[(index + 1) % 3]
    proof = vrf.prove(key, alpha)
    assert len(proof) == vrf.PROOF_LEN
    output = vrf.verify(key.public, alpha, proof)
    assert output is not None and len(output) == vrf.OUTPUT_LEN
    assert output == vrf.proof_to_output(proof)
    assert vrf.verify(other.public, alpha, proof) is None
    assert vrf.verify(key.public, alpha + b"\x00", proof) is None


def test_one_output_per_key_and_input() -> None:
    """Deterministic, unlike a signature whose signer may pick its nonce: proving again
    gives the same proof, and different inputs or keys give unrelated outputs."""
    outputs = {
        vrf.verify(key.public, alpha, vrf.prove(key, alpha))
        for key in KEYS
        for alpha in (b"", b"batch 1", b"batch 2")
    }
    assert len(outputs) == 9
    assert vrf.prove(KEYS[0], b"batch 1") == vrf.prove(KEYS[0], b"batch 1")


@settings(max_examples=60, deadline=None)
@given(position=st.integers(0, vrf.PROOF_LEN - 1), bit=st.integers(0, 7))
def test_any_flipped_bit_fails(position: int, bit: int) -> None:
    proof = bytearray(vrf.prove(KEYS[0], b"alpha"))
    proof[position] ^= 1 << bit
    assert vrf.verify(KEYS[0].public, b"alpha", bytes(proof)) is None


def test_malformed_proofs_and_keys_fail_closed() -> None:
    key, alpha = KEYS[0], b"alpha"
    proof = vrf.prove(key, alpha)
    gamma, c = proof[:32], proof[32:48]
    s = int.from_bytes(proof[48:], "little")
    for bad in (
        proof[:-1],  # short
        proof + b"\x00",  # long
        gamma + c + (s + Q).to_bytes(32, "little"),  # s not reduced: a second encoding
        bytes(32) + proof[32:],  # Gamma not a point of the group
        b"\x01" + bytes(31) + proof[32:],  # Gamma the identity
    ):
        assert vrf.verify(key.public, alpha, bad) is None
    assert vrf.verify(bytes(32), alpha, proof) is None  # no key
    assert vrf.verify(b"\x01" + bytes(31), alpha, proof) is None  # the identity as key
