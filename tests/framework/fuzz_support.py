"""What the fuzz tests (``tests/test_fuzz_*.py``) share: their settings and hostile inputs.

Budget: each fuzz test has a fixed number of examples, drawn from a fixed seed
(``derandomize``), so CI is fast and reproducible.  Setting ``MICROMINE_FUZZ_EXAMPLES``
gives every fuzz test that many examples from a random seed instead, for long runs
(``make fuzz``); a failure prints the blob that reproduces it.

Hostile inputs are built around valid encodings, so that they get past the first byte:
random bytes, truncations, byte-level mutations and splices, valid CBOR of any shape,
valid messages of other kinds, one field replaced by a value of the wrong type or range,
and over-size payloads.
"""

import dataclasses
import os
from typing import Any

import cbor2
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from test_protocol_properties import messages, mutate, mutations, trees

from micromine.protocol import codec
from micromine.protocol.limits import MAX_TIMESTAMP_MS, MAX_UINT

from .protocol_samples import raw_array, wire_items

EXAMPLES_ENV = "MICROMINE_FUZZ_EXAMPLES"


def fuzz_settings(max_examples: int) -> settings:
    """``max_examples`` from a fixed seed, or $MICROMINE_FUZZ_EXAMPLES from a random one."""
    common: dict[str, Any] = {
        "deadline": None,  # a whole pipeline per example; time is bounded by the count
        "database": None,  # no files under the work tree; reproduce with the printed blob
        "print_blob": True,
        # No "explain" phase: it traces every line under sys.settrace, which makes a failing
        # whole-pipeline example take minutes on Python 3.11.
        "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        "suppress_health_check": [
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    }
    override = os.environ.get(EXAMPLES_ENV)
    if override:
        return settings(max_examples=int(override), derandomize=False, **common)
    return settings(max_examples=max_examples, derandomize=True, **common)


# Any JSON value (for files and JSON payloads).
json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)  # fmt: skip

# Values that are the wrong CBOR type, or the right type out of range, for some field.
WRONG_VALUES = [
    cbor2.dumps(value)
    for value in (
        -1,
        -(2**64),
        MAX_UINT + 1,
        2**64 - 1,
        MAX_TIMESTAMP_MS + 1,
        2**31 + 1,
        0,
        256,
        b"",
        b"\x00" * 31,
        b"\x00" * 33,
        b"\x00" * 65,
        "",
        "A",
        "x" * 33,
        "Abc",
        True,
        False,
        None,
        1.5,
        float("nan"),
        [],
        [[]],
        {},
        {1: 2},
    )
] + [
    bytes([0xF7]),  # undefined
    bytes([0xC1, 0x00]),  # a tag
    bytes([0x9F, 0xFF]),  # an indefinite-length array
    bytes([0x62, 0xFF, 0xFE]),  # text that is not UTF-8
    bytes([0x18, 0x01]),  # 1, not in its shortest form
]


def with_wrong_field(message: Any, index: int, value: bytes) -> bytes:
    """``message``'s encoding with one field (not the kind tag) replaced by raw CBOR."""
    items = wire_items(message)
    items[1 + index % (len(items) - 1)] = value
    return raw_array(items)


def with_bad_signature(message: Any, signature: bytes) -> bytes:
    """A signed message, canonically encoded, whose signature is not its signer's."""
    if not hasattr(message, "signature"):
        return codec.encode(message)
    return codec.encode(dataclasses.replace(message, signature=signature))


def oversized(limit: int) -> bytes:
    """One byte over ``limit``: a CBOR byte string head followed by filler."""
    return b"\x5a" + (limit).to_bytes(4, "big") + b"\x00" * (limit - 4)


def hostile(valid: list[Any], max_bytes: int | None = None) -> st.SearchStrategy[bytes]:
    """Payloads for a decoder or handler that expects messages like ``valid`` (objects)."""
    encodings = [codec.encode(message) for message in valid]
    samples = st.sampled_from(encodings)
    strategies = [
        st.binary(max_size=300),
        samples.flatmap(lambda data: st.integers(0, len(data) - 1).map(lambda n: data[:n])),
        st.tuples(samples, mutations, samples).map(lambda t: mutate(*t)),
        st.tuples(samples, mutations, messages.map(codec.encode)).map(lambda t: mutate(*t)),
        trees.map(cbor2.dumps),
        messages.map(codec.encode),
        st.tuples(st.sampled_from(valid), st.integers(0, 12), st.sampled_from(WRONG_VALUES)).map(
            lambda t: with_wrong_field(*t)
        ),
        st.tuples(st.sampled_from(valid), st.binary(min_size=64, max_size=64)).map(
            lambda t: with_bad_signature(*t)
        ),
        samples.map(lambda data: data + b"\x00"),  # trailing bytes
    ]
    if max_bytes is not None:
        strategies.append(st.just(oversized(max_bytes)))
    return st.one_of(*strategies)
