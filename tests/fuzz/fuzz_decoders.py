"""atheris harness: the decoders of untrusted bytes.

The first byte picks what the rest is decoded as: a message of one kind (or any kind)
by ``codec.decode``, a submitted item by ``decode_transaction``, raw strict CBOR by
``cbor.decode``, or a topic by ``topics.parse``.  Anything but a ``DecodeError`` (or,
for the two that never raise, anything at all) is a crash.  Run it with run.py.
"""

import sys
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports(include=["micromine"]):
    from micromine.protocol import cbor, codec, topics
    from micromine.protocol.errors import DecodeError
    from micromine.protocol.limits import MAX_ANY_MESSAGE_BYTES
    from micromine.protocol.validation import decode_transaction

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework import protocol_samples

KINDS = [None, *codec.MESSAGE_TYPES.values()]
TARGETS = len(KINDS) + 3  # the kinds, then decode_transaction, cbor.decode, topics.parse


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target, payload = data[0] % TARGETS, data[1:]
    if target < len(KINDS):
        try:
            message = codec.decode(payload, KINDS[target])
        except DecodeError:
            return
        if codec.encode(message) != payload:
            raise AssertionError("accepted a non-canonical encoding")
    elif target == len(KINDS):
        decode_transaction(payload)
    elif target == len(KINDS) + 1:
        try:
            cbor.decode(payload, MAX_ANY_MESSAGE_BYTES)
        except DecodeError:
            return
    else:
        parsed = topics.parse(protocol_samples.CHAIN, payload.decode("utf-8", "replace"))
        if parsed is not None and parsed.key is not None and len(parsed.key) not in (16, 32):
            raise AssertionError("a topic key of the wrong length")


def seeds() -> list[bytes]:
    """Every valid sample, once per target that can take it."""
    encodings = [codec.encode(m) for m in protocol_samples.all_messages()]
    found = [bytes([i]) + e for i in range(len(KINDS) + 2) for e in encodings]
    topic = topics.work(protocol_samples.CHAIN, protocol_samples.DEVICE.public).encode()
    return [*found, bytes([TARGETS - 1]) + topic]


if __name__ == "__main__":
    harness.main(test_one_input, seeds)
