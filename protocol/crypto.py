"""Ed25519 keys, domain-separated signatures and SHA-256 ids.

Every signature covers ``signing_bytes(kind, chain_id, digest)``:

    b"micromine\\x00" | version (1 byte) | kind tag (1 byte) |
    len(chain_id) (1 byte) | chain_id (ASCII) | digest (32 bytes)

so a signature made for one message kind, protocol version or chain can never verify
as another.  ``digest`` is the message id: SHA-256 of the canonical encoding of the
message without its signature (for a block, the header hash).
"""

import hashlib
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from micromine.protocol import PROTOCOL_VERSION
from micromine.protocol.limits import HASH_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN

DOMAIN_PREFIX = b"micromine\x00"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def signing_bytes(kind_tag: int, chain_id: str, digest: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers (see the module docstring)."""
    chain = chain_id.encode("ascii")
    if len(digest) != HASH_LEN:
        raise ValueError("digest must be 32 bytes")
    return DOMAIN_PREFIX + bytes([PROTOCOL_VERSION, kind_tag, len(chain)]) + chain + digest


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An Ed25519 signing key.  ``seed`` is the 32-byte secret; keep it out of logs."""

    seed: bytes
    # Deriving the key pair from the seed is a scalar multiplication, as dear as a
    # signature: done once here, not on every ``public`` and ``sign``.
    _signing: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    _public: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        signing = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "_signing", signing)
        object.__setattr__(self, "_public", bytes(signing.verify_key))

    def __repr__(self) -> str:  # never print the secret
        return f"KeyPair(public={self.public.hex()[:16]}…)"

    @property
    def public(self) -> bytes:
        return self._public

    def sign(self, kind_tag: int, chain_id: str, digest: bytes) -> bytes:
        signed = self._signing.sign(signing_bytes(kind_tag, chain_id, digest))
        return bytes(signed.signature)

    @classmethod
    def generate(cls) -> "KeyPair":
        return cls(bytes(nacl.signing.SigningKey.generate()))


def verify(public_key: bytes, kind_tag: int, chain_id: str, digest: bytes, sig: bytes) -> bool:
    """True when ``sig`` is ``public_key``'s signature of this kind, chain and digest."""
    if len(public_key) != PUBLIC_KEY_LEN or len(sig) != SIGNATURE_LEN:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(signing_bytes(kind_tag, chain_id, digest), sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True
