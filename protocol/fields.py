"""Field checks shared by every message's ``__post_init__``.

Each check raises ``DecodeError`` with BAD_TYPE (wrong CBOR type) or OUT_OF_RANGE, so a
message object that exists is structurally valid, however it was made.  Booleans are
not integers here, even though Python says ``isinstance(True, int)``.
"""

import re
from collections.abc import Sequence
from typing import Any

from micromine.protocol.errors import DecodeError, DecodeFailure
from micromine.protocol.limits import MAX_CHAIN_ID_LEN, MAX_UINT

_CHAIN_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


def check_uint(name: str, value: Any, maximum: int = MAX_UINT, minimum: int = 0) -> None:
    if type(value) is not int:
        raise DecodeError(DecodeFailure.BAD_TYPE, f"{name} must be an unsigned integer")
    if not minimum <= value <= maximum:
        raise DecodeError(DecodeFailure.OUT_OF_RANGE, f"{name}={value} not in {minimum}..{maximum}")


def check_bytes(name: str, value: Any, length: int) -> None:
    if type(value) is not bytes:
        raise DecodeError(DecodeFailure.BAD_TYPE, f"{name} must be a byte string")
    if len(value) != length:
        raise DecodeError(DecodeFailure.OUT_OF_RANGE, f"{name} must be {length} bytes")


def check_max_bytes(name: str, value: Any, maximum: int) -> None:
    if type(value) is not bytes:
        raise DecodeError(DecodeFailure.BAD_TYPE, f"{name} must be a byte string")
    if len(value) > maximum:
        raise DecodeError(DecodeFailure.OUT_OF_RANGE, f"{name} longer than {maximum} bytes")


def check_text(name: str, value: Any, max_utf8_bytes: int) -> None:
    if type(value) is not str:
        raise DecodeError(DecodeFailure.BAD_TYPE, f"{name} must be a text string")
    if len(value.encode("utf-8", "surrogatepass")) > max_utf8_bytes:
        raise DecodeError(DecodeFailure.OUT_OF_RANGE, f"{name} longer than {max_utf8_bytes}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DecodeError(DecodeFailure.OUT_OF_RANGE, f"{name} is not valid UTF-8") from None


def check_chain_id(value: Any) -> None:
    check_text("chain_id", value, MAX_CHAIN_ID_LEN)
    if not value or not _CHAIN_ID.fullmatch(value):
        raise DecodeError(DecodeFailure.OUT_OF_RANGE, "chain_id must match [a-z0-9][a-z0-9-]*")


def check_bool(name: str, value: Any) -> None:
    if type(value) is not bool:
        raise DecodeError(DecodeFailure.BAD_TYPE, f"{name} must be a boolean")


def check_tuple(name: str, value: Any, min_len: int, max_len: int) -> None:
    """Sequences are held as tuples so that messages stay immutable and hashable."""
    if type(value) is not tuple:
        raise DecodeError(DecodeFailure.BAD_TYPE, f"{name} must be a tuple")
    if not min_len <= len(value) <= max_len:
        raise DecodeError(
            DecodeFailure.OUT_OF_RANGE, f"{name} has {len(value)} items, not {min_len}..{max_len}"
        )


def array(name: str, value: Any, length: int | None = None) -> Sequence[Any]:
    """A decoded CBOR array (cbor2 gives a list), optionally of an exact length."""
    if type(value) is not list:
        raise DecodeError(DecodeFailure.BAD_SHAPE, f"{name} must be an array")
    if length is not None and len(value) != length:
        raise DecodeError(
            DecodeFailure.BAD_SHAPE, f"{name} must have {length} items, has {len(value)}"
        )
    return value
