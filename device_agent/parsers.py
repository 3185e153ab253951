"""Parsers for the agent's setting values, one per kind of value.

Each takes a string (from a flag or the environment) or a value of the TOML type (from
the file) and returns the typed value, or raises ValueError saying what is accepted; the
caller (:mod:`~micromine.device_agent.settings`) adds which setting and where from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from micromine.common.mqtt import parse_broker_url
from micromine.device_agent.idle import TimeWindow, parse_schedule
from micromine.protocol.errors import DecodeError
from micromine.protocol.fields import check_chain_id
from micromine.protocol.limits import PUBLIC_KEY_LEN

__all__ = [
    "Parser",
    "boolean",
    "broker_url",
    "chain_id",
    "cpu_budget",
    "integer",
    "one_of",
    "optional",
    "path",
    "public_key",
    "real",
    "schedule",
    "string",
]

# A parser takes a string (flag, environment) or a TOML value and returns the typed value,
# or raises ValueError saying what is accepted.
Parser = Callable[[Any], Any]
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def nonempty(value: Any) -> str:
    text = string(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def topic_prefix(value: Any) -> str:
    """An MQTT topic prefix a device publishes under: no wildcards, no empty ends."""
    text = string(value)
    if not text or text[0] == "/" or text[-1] == "/" or any(c in text for c in "+#\x00"):
        raise ValueError(
            f"{text!r} is not an MQTT topic prefix (non-empty, no wildcards, "
            "no leading or trailing '/')"
        )
    return text


def _is_none(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "none"


def optional(parse: Parser) -> Parser:
    """``"none"`` switches the setting off (None)."""

    def parse_optional(value: Any) -> Any:
        return None if _is_none(value) else parse(value)

    return parse_optional


def integer(low: int, high: int) -> Parser:
    def parse_int(value: Any) -> int:
        try:
            number = int(value) if isinstance(value, str | int) and value is not True else None
        except ValueError:
            number = None
        if value is False or number is None or not low <= number <= high:
            raise ValueError(f"must be an integer in {low}..{high}, got {value!r}")
        return number

    return parse_int


def real(low: float, high: float, *, low_open: bool = False, unit: str = "") -> Parser:
    span = f"{'(' if low_open else '['}{low:g}, {high:g}]{unit}"

    def parse_float(value: Any) -> float:
        try:
            ok = isinstance(value, str | int | float) and not isinstance(value, bool)
            number = float(value) if ok else float("nan")
        except ValueError:
            number = float("nan")
        # NaN fails both comparisons, so "nan" and non-numbers end here too.
        if not (low < number <= high if low_open else low <= number <= high):
            raise ValueError(f"must be a number in {span}, got {value!r}")
        return number

    return parse_float


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be true or false ({'/'.join(_TRUE)} or {'/'.join(_FALSE)})")


def one_of(*choices: str) -> Parser:
    accepted = ", ".join(choices[:-1]) + " or " + choices[-1]

    def parse_choice(value: Any) -> str:
        text = string(value).strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not {accepted}")
        return text

    return parse_choice


def path(value: Any) -> Path:
    text = string(value)
    if not text or "\x00" in text:
        raise ValueError(f"must be a file path, got {value!r}")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~name" of no such user
        raise ValueError(f"cannot expand {text!r}: no such user's home directory") from None


def broker_url(value: Any) -> str:
    text = string(value)
    parse_broker_url(text)  # ValueError says what is wrong with it
    return text


def chain_id(value: Any) -> str:
    text = string(value)
    try:
        check_chain_id(text)
    except DecodeError:
        raise ValueError(
            f"{text!r} is not a chain id "
            "(1..32 characters of a-z, 0-9 and '-', not starting with '-')"
        ) from None
    return text


def public_key(value: Any) -> bytes:
    try:
        key = bytes.fromhex(string(value).strip())
    except ValueError:
        raise ValueError(f"issuer {value!r} is not hex") from None
    if len(key) != PUBLIC_KEY_LEN:
        raise ValueError(f"issuer {value!r} is not a 32-byte public key (64 hex characters)")
    return key


def schedule(value: Any) -> tuple[TimeWindow, ...]:
    """``"22:00-07:00,12:00-13:30"``: local-time windows (idle.parse_schedule)."""
    return parse_schedule(string(value))


def cpu_budget(value: Any) -> float:
    budget: float = real(0, 100.0 * (os.cpu_count() or 1), low_open=True, unit=" % of one core")(
        value
    )
    return budget
