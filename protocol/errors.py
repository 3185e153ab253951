"""The one exception that decoding or constructing a message can raise.

Callers on an untrusted path catch exactly ``DecodeError`` and count ``err.code``; any
other exception escaping a decoder is a bug (the property tests check this).
"""

from enum import IntEnum


class DecodeFailure(IntEnum):
    """Why bytes (or field values) are not a valid message.  Stable numbers: they appear
    in logs and metrics, and in docs/PROTOCOL.md."""

    TOO_LARGE = 1  # more bytes than the message kind allows
    NOT_CBOR = 2  # not well-formed CBOR, or truncated
    TOO_DEEP = 3  # nesting deeper than limits.MAX_DEPTH
    INDEFINITE_LENGTH = 4  # an indefinite-length string/array/map
    DUPLICATE_KEY = 5  # a map with a repeated key (no message uses maps at all)
    TRAILING_BYTES = 6  # bytes left after the first data item
    NOT_CANONICAL = 7  # decodes, but is not the canonical encoding of its value
    UNKNOWN_KIND = 8  # the leading tag names no message kind
    WRONG_KIND = 9  # a valid message, but not of the kind expected here
    BAD_SHAPE = 10  # not an array, or the wrong number of fields
    BAD_TYPE = 11  # a field of the wrong CBOR type (floats, maps and tags never appear)
    OUT_OF_RANGE = 12  # a field of the right type outside its documented range


class DecodeError(ValueError):
    """Raised for every malformed input.  ``code`` says which rule it broke."""

    def __init__(self, code: DecodeFailure, detail: str) -> None:
        super().__init__(f"{code.name.lower()}: {detail}")
        self.code = code
        self.detail = detail
