"""atheris harness: the genesis file.  ``Genesis.from_json`` on any text must return a
genesis or raise ``GenesisError``.  Run it with run.py."""

import contextlib

import atheris
import harness

with atheris.instrument_imports(include=["micromine"]):
    from micromine.protocol.genesis import Genesis, GenesisError

SEED = Genesis(
    chain_id="fuzzchain", timestamp_ms=1_700_000_000_000, ledger_nodes=(b"\x01" * 32,),
    balances=((b"\x02" * 32, 1000),),
)  # fmt: skip


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(GenesisError):
        Genesis.from_json(data.decode("utf-8", "surrogateescape"))


def seeds() -> list[bytes]:
    return [SEED.to_json().encode(), b'{"chain_id": "x", "ledger_nodes": []}']


if __name__ == "__main__":
    harness.main(test_one_input, seeds)
