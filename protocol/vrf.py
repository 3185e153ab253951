"""A verifiable random function: ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381, suite 0x03).

    prove(key, alpha)            -> proof (80 bytes: Gamma | c | s)
    verify(public, alpha, proof) -> output (64 bytes), or None
    proof_to_output(proof)       -> output, without checking the proof

Why a VRF, and not a signature: which devices judge a batch must be random to everyone
who could profit from choosing them (issue 14, docs/SECURITY.md 6.6).  An Ed25519
signature over the batch would be unpredictable to others, but not unique: its signer
picks the nonce, so a Byzantine validator could make as many valid signatures as it
likes and keep the one that ranks its own devices first.  A VRF output is a function of
the key and the input alone: one value per (key, input), checkable by anyone with the
public key, unpredictable without the secret.

The key is the node's Ed25519 key (the same 32-byte seed, the same public key), as the
RFC's edwards25519 suites allow.  Point arithmetic is libsodium's, through PyNaCl,
except two steps libsodium refuses because their points may lie outside the
prime-order subgroup: decoding the try-and-increment candidate and clearing its
cofactor, done here in plain integers (a few field operations per proof).  Pure: no
I/O, no clock.
"""

import hashlib

from nacl.bindings import (
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_sub,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)
from nacl.exceptions import RuntimeError as NaclRuntimeError

from micromine.protocol.crypto import KeyPair

SUITE = b"\x03"  # ECVRF-EDWARDS25519-SHA512-TAI
PROOF_LEN = 80  # Gamma (32) | c (16) | s (32)
OUTPUT_LEN = 64
_C_LEN = 16
_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493  # the prime order of the base point
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def prove(key: KeyPair, alpha: bytes) -> bytes:
    """The proof that ``verify(key.public, alpha, proof)`` accepts (deterministic)."""
    expanded = hashlib.sha512(key.seed).digest()
    x = _clamp(expanded[:32]) % _Q
    h = _encode_to_curve(key.public, alpha)
    gamma = _mul(x, h)
    k = int.from_bytes(hashlib.sha512(expanded[32:] + h).digest(), "little") % _Q
    c = _challenge(key.public, h, gamma, _mul_base(k), _mul(k, h))
    s = (k + int.from_bytes(c, "little") * x) % _Q
    return gamma + c + s.to_bytes(32, "little")


def verify(public: bytes, alpha: bytes, proof: bytes) -> bytes | None:
    """The output the proof proves for ``alpha`` under ``public``; None if it does not."""
    if len(proof) != PROOF_LEN or len(public) != 32:
        return None
    gamma, c, s_bytes = proof[:32], proof[32 : 32 + _C_LEN], proof[32 + _C_LEN :]
    s = int.from_bytes(s_bytes, "little")
    if s >= _Q or not _is_valid(public) or not _is_valid(gamma):
        return None
    try:
        h = _encode_to_curve(public, alpha)
        c_int = int.from_bytes(c, "little")
        u = crypto_core_ed25519_sub(_mul_base(s), _mul(c_int, public))
        v = crypto_core_ed25519_sub(_mul(s, h), _mul(c_int, gamma))
    except (NaclRuntimeError, ValueError):  # an identity point on the way: not a proof
        return None
    if _challenge(public, h, gamma, u, v) != c:
        return None
    return proof_to_output(proof)


def proof_to_output(proof: bytes) -> bytes:
    """The VRF output of a proof (already verified by the caller)."""
    gamma8 = _mul(8, proof[:32])
    return hashlib.sha512(SUITE + b"\x03" + gamma8 + b"\x00").digest()


def _challenge(y: bytes, h: bytes, gamma: bytes, u: bytes, v: bytes) -> bytes:
    return hashlib.sha512(SUITE + b"\x02" + y + h + gamma + u + v + b"\x00").digest()[:_C_LEN]


def _encode_to_curve(public: bytes, alpha: bytes) -> bytes:
    """Try-and-increment (RFC 9381 5.4.1.1), the salt being the public key."""
    for counter in range(256):
        digest = hashlib.sha512(SUITE + b"\x01" + public + alpha + bytes([counter, 0])).digest()
        point = _decode(digest[:32])
        if point is not None:
            cleared = _double(_double(_double(point)))  # times the cofactor, 8
            if cleared != (0, 1):
                return _encode(cleared)
    raise ValueError("no curve point in 256 tries")  # probability about 2^-256


def _mul(scalar: int, point: bytes) -> bytes:
    return crypto_scalarmult_ed25519_noclamp(scalar.to_bytes(32, "little"), point)


def _mul_base(scalar: int) -> bytes:
    return crypto_scalarmult_ed25519_base_noclamp(scalar.to_bytes(32, "little"))


def _is_valid(point: bytes) -> bool:
    """On the curve, canonical, in the prime-order subgroup, not of small order."""
    return crypto_core_ed25519_is_valid_point(point)


def _clamp(half: bytes) -> int:
    value = bytearray(half)
    value[0] &= 248
    value[31] &= 127
    value[31] |= 64
    return int.from_bytes(value, "little")


# Affine edwards25519 in integers, for the two steps libsodium refuses (module docstring).


def _decode(data: bytes) -> tuple[int, int] | None:
    """RFC 8032 5.1.3 point decoding; None when ``data`` is no point."""
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P == (-u) % _P:
        x = x * _SQRT_M1 % _P
    elif v * x * x % _P != u:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _double(point: tuple[int, int]) -> tuple[int, int]:
    x, y = point
    xy = x * y % _P
    denominator_x = (1 + _D * xy * xy) % _P
    denominator_y = (1 - _D * xy * xy) % _P
    return (
        2 * xy * pow(denominator_x, -1, _P) % _P,
        (y * y + x * x) * pow(denominator_y, -1, _P) % _P,
    )


def _encode(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")
