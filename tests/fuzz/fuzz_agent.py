"""atheris harness: the device agent's work handler, ``AgentCore.on_work``, on one agent
that lives across inputs.  It must answer with one Verdict or one counted Discarded, and
never raise.  Run it with run.py."""

import sys
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports(include=["micromine"]):
    from micromine.device_agent.core import AgentCore, Discarded
    from micromine.protocol import codec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import protocol_samples

AGENT = AgentCore(protocol_samples.DEVICE, protocol_samples.CHAIN, recent_batches=64)


def test_one_input(data: bytes) -> None:
    stats = AGENT.stats
    before = stats.malformed + stats.wrong_chain + stats.duplicates + stats.batches
    before += stats.bad_signature_batches + stats.unknown_issuer
    outputs = AGENT.on_work(data, protocol_samples.NOW_MS)
    after = stats.malformed + stats.wrong_chain + stats.duplicates + stats.batches
    after += stats.bad_signature_batches + stats.unknown_issuer
    if after != before + 1:
        raise AssertionError("an input was not counted exactly once")
    if len(outputs) == 1 and not isinstance(outputs[0], Discarded):
        raise AssertionError("a lone output that is not a Discarded")


def seeds() -> list[bytes]:
    return [codec.encode(protocol_samples.work_batch()), b"\x87\x03"]


if __name__ == "__main__":
    harness.main(test_one_input, seeds)
