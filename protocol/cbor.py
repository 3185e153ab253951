"""Canonical CBOR encoding and strict decoding of untrusted bytes.

Encoding follows RFC 8949 section 4.2.1 (core deterministic encoding): shortest-form
integers and lengths, definite lengths only.  Our messages use only unsigned integers,
byte strings, text strings, booleans and arrays, so map key ordering never arises.

Decoding is strict where cbor2 is permissive by default: a size cap before parsing,
a depth cap, no indefinite lengths, no duplicate map keys, nothing after the first item.
Canonical form is checked by the message codec by re-encoding (see codec.py), which
rejects every non-shortest integer or length without a hand-written scanner.
"""

import io
from typing import Any

import cbor2

from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.limits import MAX_DEPTH


def encode(value: Any) -> bytes:
    """Deterministically encode a tree of ints, bytes, str, bool and lists."""
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes, max_bytes: int) -> Any:
    """Parse exactly one CBOR data item from ``data`` under the strict rules above."""
    if len(data) > max_bytes:
        raise DecodeError(DecodeFailure.TOO_LARGE, f"{len(data)} bytes > {max_bytes}")
    if not data:
        raise DecodeError(DecodeFailure.NOT_CBOR, "empty input")
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream,
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )
    try:
        value = decoder.decode()
    except cbor2.CBORDecodeError as exc:  # includes CBORDecodeEOF
        raise DecodeError(_classify(str(exc)), str(exc)) from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        # cbor2's semantic tag decoders (dates, decimals, regexps...) raise these on
        # garbage arguments; we never use tags, so any of them means "not our CBOR".
        raise DecodeError(DecodeFailure.NOT_CBOR, f"{type(exc).__name__}: {exc}") from None
    if stream.tell() != len(data):
        raise DecodeError(DecodeFailure.TRAILING_BYTES, f"{len(data) - stream.tell()} extra")
    return value


def _classify(message: str) -> DecodeFailure:
    lowered = message.lower()
    if "indefinite" in lowered:
        return DecodeFailure.INDEFINITE_LENGTH
    if "duplicate" in lowered:
        return DecodeFailure.DUPLICATE_KEY
    if "depth" in lowered:
        return DecodeFailure.TOO_DEEP
    return DecodeFailure.NOT_CBOR
