"""Canonical CBOR encoding and strict decoding of untrusted bytes.

Encoding follows RFC 8949 section 4.2.1 (core deterministic encoding): shortest-form
integers and lengths, definite lengths only.  Our messages use only unsigned integers,
byte strings, text strings, booleans and arrays, so map key ordering never arises.

Decoding is strict where cbor2 is permissive by default: a size cap before parsing,
a depth cap, no indefinite lengths, no duplicate map keys, no tags (cbor2's semantic
tag decoders -- dates, regexps, MIME, value sharing, string references -- never run on
untrusted bytes; any tag is BAD_TYPE), nothing after the first item.
Canonical form is checked by the message codec by re-encoding (see codec.py), which
rejects every non-shortest integer or length without a hand-written scanner.
"""

import io
from collections.abc import Iterator, Mapping
from typing import Any

import cbor2

from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.limits import MAX_DEPTH


class _TagRefusedError(Exception):
    """Raised inside cbor2 for any tag; surfaces as the ``__cause__`` of its error."""


def _refuse_tag(value: Any, immutable: bool) -> Any:
    raise _TagRefusedError


class _RefuseAllTags(Mapping[int, Any]):
    """A semantic-decoder table that claims every tag number and refuses it.

    An empty dict would not do: cbor2 falls back to its built-in decoders for tags
    missing from the table.
    """

    def __getitem__(self, tag: int) -> Any:
        if type(tag) is not int:
            raise KeyError(tag)
        return _refuse_tag

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_NO_TAGS = _RefuseAllTags()


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
        semantic_decoders=_NO_TAGS,
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )
    try:
        value = decoder.decode()
    except cbor2.CBORDecodeError as exc:  # includes CBORDecodeEOF
        if isinstance(exc.__cause__, _TagRefusedError):
            raise DecodeError(DecodeFailure.BAD_TYPE, "tags never appear in messages") from None
        raise DecodeError(_classify(str(exc)), str(exc)) from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        # Defensive: cbor2 wraps its own errors in CBORDecodeError, but anything else
        # escaping the parser still only means "not our CBOR".
        raise DecodeError(DecodeFailure.NOT_CBOR, f"{type(exc).__name__}: {exc}") from None
    if stream.tell() != len(data):
        raise DecodeError(DecodeFailure.TRAILING_BYTES, f"{len(data) - stream.tell()} extra")
    return value


def _classify(message: str) -> DecodeFailure:
    # cbor2 reports these rules only through its message text.  The duplicate-key
    # message quotes the key, which is attacker-chosen text, so it is matched first and
    # the other two by phrases that quote nothing from the input.
    lowered = message.lower()
    if "duplicate map key" in lowered:
        return DecodeFailure.DUPLICATE_KEY
    if "encountered indefinite length" in lowered:
        return DecodeFailure.INDEFINITE_LENGTH
    if "nesting depth" in lowered:
        return DecodeFailure.TOO_DEEP
    return DecodeFailure.NOT_CBOR
