"""Fuzzing what the processes read from files and settings: the genesis file, key files,
the agent's and the ledger's settings (flags and environment), broker URLs.

Properties: each loader either returns a value or raises its one documented error
(GenesisError, KeyFileError, ConfigError / ValueError), which the commands turn into a
message and exit code 2; and a genesis that loads is one a ledger node can run: a node
started from it takes devices, submissions and ticks without raising.
"""

import argparse
import contextlib
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from framework.fuzz_support import fuzz_settings, json_values
from hypothesis import example, given
from hypothesis import strategies as st
from test_protocol_properties import mutate, mutations

from micromine.common.genesis_file import load_genesis
from micromine.common.keyfile import KeyFileError, load_key
from micromine.common.mqtt import parse_broker_url
from micromine.device_agent import add_agent_arguments
from micromine.device_agent.config import AgentConfig
from micromine.ledger_node.chain.blocks import ChainTip
from micromine.ledger_node.chain.state import Account
from micromine.ledger_node.config import LedgerConfig, add_ledger_arguments
from micromine.ledger_node.core.ledger import (
    DEFAULT_AUDIT_RATE,
    DEFAULT_COMMIT_AUDIT_RATE,
    LedgerCore,
)
from micromine.protocol import topics
from micromine.protocol.codec import encode, sign
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello, Heartbeat
from micromine.protocol.genesis import ChainParams, Genesis, GenesisError
from micromine.protocol.messages import Submission, Transaction
from micromine.protocol.topics import Channel

NODE = KeyPair(sha256(b"fuzz genesis node"))
SENDER = KeyPair(sha256(b"fuzz genesis sender"))
DEVICES = [KeyPair(sha256(b"fuzz genesis device %d" % i)) for i in range(3)]
VALID_GENESIS = Genesis(
    chain_id="fuzzchain",
    timestamp_ms=1_700_000_000_000,
    ledger_nodes=(NODE.public,),
    balances=((SENDER.public, 10**9),),
)
PARAM_NAMES = sorted(ChainParams.__dataclass_fields__)

param_values = st.one_of(
    st.integers(1, 64), st.integers(-2, 300), st.integers(),
    st.sampled_from([2**53, 86_400_000, 86_400_001]), json_values,
)  # fmt: skip


@st.composite
def genesis_documents(draw: Any) -> str:
    """Valid genesis JSON with some fields replaced, added or removed, or mutated text."""
    document: dict[str, Any] = json.loads(VALID_GENESIS.to_json())
    for _ in range(draw(st.integers(0, 3))):
        match draw(st.sampled_from(["param", "field", "drop", "balance", "nodes"])):
            case "param" if isinstance(document.get("params"), dict):
                name = draw(st.sampled_from([*PARAM_NAMES, "extra"]))
                document["params"][name] = draw(param_values)
            case "field":
                name = draw(st.sampled_from(["chain_id", "timestamp_ms", "ledger_nodes",
                                             "balances", "params"]))  # fmt: skip
                document[name] = draw(st.one_of(json_values, st.integers()))
            case "drop" if document:
                document.pop(draw(st.sampled_from(sorted(document))))
            case "balance" if isinstance(document.get("balances"), dict):
                account = draw(st.sampled_from([SENDER.public.hex(), "00" * 32, "AB" * 32, "zz"]))
                document["balances"][account] = draw(param_values)
            case "nodes" if isinstance(document.get("ledger_nodes"), list):
                extra = draw(st.sampled_from([NODE.public.hex(), "11" * 32, "1", ""]))
                document["ledger_nodes"].append(extra)
    text = json.dumps(document)
    if draw(st.integers(0, 3)) == 0:
        text = mutate(text.encode(), draw(mutations), b"[]{}:,0123456789e.-").decode("latin-1")
    return text


def parse_genesis(text: str) -> Genesis | None:
    try:
        return Genesis.from_json(text)
    except GenesisError:
        return None


def run_node(genesis: Genesis) -> None:
    """Start a ledger core from ``genesis`` and give it devices, a submission and time."""
    now = genesis.timestamp_ms + 1000
    accounts = {a: Account(b, 0) for a, b in genesis.balances}
    key = NODE if NODE.public in genesis.ledger_nodes else KeyPair(sha256(b"observer"))
    core = LedgerCore(genesis=genesis, key=key, rng=random.Random(1), accounts=accounts,
                      tip=ChainTip(0, genesis.hash, genesis.timestamp_ms), now_ms=now)  # fmt: skip
    core.start(now)
    chain = genesis.chain_id
    for device in DEVICES:
        hello = sign(DeviceHello(chain, device.public, "v", 64, 1), device)
        core.on_message(
            topics.device_topic(chain, device.public, Channel.HELLO), encode(hello), now
        )
    tx = sign(Transaction(chain, SENDER.public, NODE.public, 5, genesis.params.min_fee, 0,
                          min(now + 10**7, 2**53), ""), SENDER)  # fmt: skip
    core.on_message(topics.submit(chain), encode(Submission(chain, b"r" * 16, (encode(tx),))), now)
    for _ in range(20):
        now += 500
        for device in DEVICES:
            beat = sign(Heartbeat(chain, device.public, 1, 1, 0, 2), device)
            topic = topics.device_topic(chain, device.public, Channel.HEARTBEAT)
            core.on_message(topic, encode(beat), now)
        core.on_tick(now)


@fuzz_settings(200)
@given(st.one_of(genesis_documents(), st.text(max_size=200)))
@example('{"chain_id": "x", "ledger_nodes": [], "timestamp_ms": 1e999}')  # OverflowError
@example("1" * 5000)  # ValueError from int(), not a JSONDecodeError
@example("[" * 100_000)  # RecursionError
@example(json.dumps({**json.loads(VALID_GENESIS.to_json()), "timestamp_ms": 2**53}))
@example(json.dumps({**json.loads(VALID_GENESIS.to_json()), "params": {"batch_timeout_ms": 2**53}}))
def test_genesis_json_loads_or_says_why_and_what_loads_runs(text: str) -> None:
    genesis = parse_genesis(text)
    if genesis is not None:
        run_node(genesis)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


KEY_TEXT = b"\n" + NODE.seed.hex().encode() + b"\n"
KEY_BYTES = b"0123456789abcdefABCDEF \t\n\x00\xff"
file_contents = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.just(KEY_TEXT), mutations, st.just(KEY_BYTES)).map(lambda t: mutate(*t)),
    st.just(VALID_GENESIS.to_json().encode() + b"\xff"),  # not UTF-8
)


@fuzz_settings(200)
@given(file_contents)
def test_key_and_genesis_files_load_or_say_why(files: Path, data: bytes) -> None:
    path = files / "input"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    try:
        key = load_key(path)
    except KeyFileError:
        pass
    else:
        assert key.seed.hex() == data.decode("ascii").strip().lower()
    with contextlib.suppress(GenesisError):
        load_genesis(path)


settings_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["mqtt://127.0.0.1:1883", "ws://h:9001/mqtt", "mqtt://[::1", "mqtt://h:0",
                     "mqtt://h:99999", "mqtts://h", "mqtt://u:p@h", "mqtt://h/x", "mqtt://h?q",
                     "devnet", "-x", "a" * 40, "10", "nan", "inf", "-1", "\x00"]),
)  # fmt: skip


@fuzz_settings(300)
@given(st.dictionaries(st.sampled_from(["broker", "chain", "capacity", "heartbeat", "issuer",
                                        "log-level", "key", "cpu-budget", "schedule", "window",
                                        "nice", "metrics-port", "max-host-cpu", "max-load",
                                        "state-dir", "login"]), settings_text, max_size=5),
       st.dictionaries(st.sampled_from(["MICROMINE_BROKER", "MICROMINE_CHAIN", "MICROMINE_KEY",
                                        "MICROMINE_ISSUER", "MICROMINE_IDLE_PRIORITY",
                                        "MICROMINE_SCHEDULE", "MICROMINE_CPU_BUDGET",
                                        "MICROMINE_LOG_JSON"]),
                       settings_text, max_size=3))  # fmt: skip
def test_agent_and_ledger_settings_load_or_say_why(
    flags: dict[str, str], environ: dict[str, str]
) -> None:
    argv = [part for name, value in flags.items() for part in (f"--{name}={value}",)]
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_agent_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return  # argparse reports bad flags itself (exit code 2)
    with contextlib.suppress(ValueError):  # ConfigError is a ValueError
        AgentConfig.from_args(args, environ)
    ledger_args = argparse.Namespace(broker=flags.get("broker"), key="k", genesis="g", db="d",
                                     tick_ms=50, log_level="info", log_json=False,
                                     audit_rate=DEFAULT_AUDIT_RATE,
                                     commit_audit_rate=DEFAULT_COMMIT_AUDIT_RATE)  # fmt: skip
    with contextlib.suppress(ValueError):
        LedgerConfig.from_args(ledger_args)


@fuzz_settings(300)
@given(settings_text)
def test_broker_url_parses_or_says_why(url: str) -> None:
    try:
        address = parse_broker_url(url)
    except ValueError:
        return
    assert 1 <= address.port <= 65535 and address.host


def test_add_ledger_arguments_is_what_the_settings_fuzzer_mirrors() -> None:
    parser = argparse.ArgumentParser()
    add_ledger_arguments(parser)
    names = {action.dest for action in parser._actions}
    assert {"broker", "key", "genesis", "db", "tick_ms", "log_level", "log_json"} <= names
