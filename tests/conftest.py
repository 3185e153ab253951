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
