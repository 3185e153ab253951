"""Shared pytest fixtures: real MQTT brokers on loopback (see ``tests/framework/brokers.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from framework.brokers import (
    BrokerProcess,
    EmbeddedBroker,
    MosquittoBroker,
    free_port,
    require_mosquitto,
)

_LOG_TAIL_LINES = 200

# The files that take longest (measured: `make test` prints the slowest tests), longest
# first.  `make test` hands whole files to its workers in collection order
# (--dist loadfile --no-loadscope-reorder), so these start first and no worker is left
# alone with one of them at the end.  Only the order changes; a stale list costs time.
LONG_FILES = (
    "test_consensus_sim.py",
    "test_receipts_recovery.py",
    "test_devnet.py",
    "test_fuzz_ledger.py",
    "test_compose.py",
    "test_barrage.py",
    "test_protocol_properties.py",
    "test_cluster_bench.py",
    "test_consensus_byzantine.py",
    "test_stopping.py",
    "test_agent_idle.py",
    "test_agent_budget.py",
    "test_deploy_by_hand.py",
    "test_agent_install.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of LONG_FILES first, in its order; the others after, as collected."""
    rank = {name: index for index, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


def _print_log_tail(broker: BrokerProcess) -> None:
    """Print the end of the broker log; pytest shows it only when the test failed."""
    lines = broker.log_text().splitlines()[-_LOG_TAIL_LINES:]
    print(f"--- {broker!r} (last {len(lines)} lines) ---")
    print("\n".join(lines))


@pytest.fixture
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A fresh ``python -m micromine.broker`` process (TCP + WebSocket) per test."""
    with EmbeddedBroker(log_dir=tmp_path_factory.mktemp("amqtt")) as broker:
        yield broker
        _print_log_tail(broker)


@pytest.fixture
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A fresh mosquitto process per test; skipped locally if mosquitto is missing.

    On CI (``CI`` set) a missing binary is a failure: silently skipping half the broker
    matrix there would hide exactly the regressions the matrix exists to catch.
    """
    path = require_mosquitto()
    with MosquittoBroker(log_dir=tmp_path_factory.mktemp("mosquitto"), path=path) as broker:
        yield broker
        _print_log_tail(broker)


@pytest.fixture(
    params=[
        pytest.param("amqtt", id="amqtt"),
        pytest.param("mosquitto", id="mosquitto", marks=pytest.mark.mosquitto),
    ]
)
def broker(request: pytest.FixtureRequest) -> BrokerProcess:
    """Each test using this runs twice: against the embedded broker and against mosquitto."""
    name = "embedded_broker" if request.param == "amqtt" else "mosquitto_broker"
    fixture: BrokerProcess = request.getfixturevalue(name)
    return fixture


@pytest.fixture(params=["amqtt", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def ws_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedBroker | MosquittoBroker]:
    """A broker with a WebSocket listener: ours, and mosquitto's for comparison.

    Keep payloads small with the mosquitto variant: libwebsockets fragments large messages
    and paho's WebSocket reader cannot reassemble fragments (paho issues #89, #500).
    """
    broker: EmbeddedBroker | MosquittoBroker
    if request.param == "amqtt":
        broker = EmbeddedBroker(log_dir=tmp_path_factory.mktemp("amqtt-ws"))
    else:
        broker = MosquittoBroker(
            ws_port=free_port(),
            log_dir=tmp_path_factory.mktemp("mosquitto-ws"),
            path=require_mosquitto(),
        )
    with broker:
        yield broker
        _print_log_tail(broker)
