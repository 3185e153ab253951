"""atheris harness: the device agent's work handler, ``AgentCore.on_work``, on an agent
that lives across inputs (replaced every ``INPUTS_PER_AGENT`` inputs, before its work
rate limit would answer everything with RATE_LIMITED: all inputs come at one time).  It
must answer with one Verdict or one counted Discarded, and never raise.  Run it with
run.py."""

import sys
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports(include=["micromine"]):
    from micromine.device_agent.core import AgentCore, Discarded
    from micromine.protocol import codec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework import protocol_samples

INPUTS_PER_AGENT = 100  # below the agent's burst of batches (WORK_RATE)


def new_agent() -> AgentCore:
    return AgentCore(protocol_samples.DEVICE, protocol_samples.CHAIN, recent_batches=64)


STATE = {"agent": new_agent(), "inputs": 0}


def test_one_input(data: bytes) -> None:
    STATE["inputs"] += 1
    if STATE["inputs"] % INPUTS_PER_AGENT == 0:
        STATE["agent"] = new_agent()
    agent = STATE["agent"]
    stats = agent.stats
    before = stats.malformed + stats.wrong_chain + stats.duplicates + stats.batches
    before += stats.bad_signature_batches + stats.unknown_issuer + stats.rate_limited
    before += stats.tx_root_mismatches
    outputs = agent.on_work(data, protocol_samples.NOW_MS)
    after = stats.malformed + stats.wrong_chain + stats.duplicates + stats.batches
    after += stats.bad_signature_batches + stats.unknown_issuer + stats.rate_limited
    after += stats.tx_root_mismatches
    if after != before + 1:
        raise AssertionError("an input was not counted exactly once")
    if len(outputs) == 1 and not isinstance(outputs[0], Discarded):
        raise AssertionError("a lone output that is not a Discarded")


def seeds() -> list[bytes]:
    return [codec.encode(protocol_samples.work_batch()), b"\x83\x03"]


if __name__ == "__main__":
    harness.main(test_one_input, seeds)
