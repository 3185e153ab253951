"""Broker URL parsing: the forms operators type, and clear errors for the rest."""

from __future__ import annotations

import pytest

from micromine.common.mqtt import BrokerAddress, parse_broker_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1", BrokerAddress("mqtt", "127.0.0.1", 1883)),
        ("mqtt://127.0.0.1:18830", BrokerAddress("mqtt", "127.0.0.1", 18830)),
        ("mqtt://broker.local/", BrokerAddress("mqtt", "broker.local", 1883)),
        ("MQTT://Broker.Local:1", BrokerAddress("mqtt", "broker.local", 1)),
        ("  mqtt://localhost:65535  ", BrokerAddress("mqtt", "localhost", 65535)),
        ("mqtt://[::1]:1884", BrokerAddress("mqtt", "::1", 1884)),
        ("ws://127.0.0.1", BrokerAddress("ws", "127.0.0.1", 9001, "/")),
        ("ws://127.0.0.1:8080/mqtt", BrokerAddress("ws", "127.0.0.1", 8080, "/mqtt")),
        ("ws://host/", BrokerAddress("ws", "host", 9001, "/")),
        ("mqtts://host", BrokerAddress("mqtts", "host", 8883)),
        ("mqtts://host:18883", BrokerAddress("mqtts", "host", 18883)),
        ("wss://host/mqtt", BrokerAddress("wss", "host", 443, "/mqtt")),
    ],
)
def test_valid_urls(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("127.0.0.1:1883", "no scheme"),
        ("localhost", "no scheme"),
        ("ssl://host", "mqtts://"),
        ("tls://host", "mqtts://"),
        ("mqtts://host/path", "no path"),
        ("http://host", "unsupported scheme"),
        ("mqtt://", "no host"),
        ("mqtt://:1883", "no host"),
        ("mqtt://host:0", "port"),
        ("mqtt://host:65536", "port"),
        ("mqtt://host:abc", "port"),
        ("mqtt://user:pw@host", "credentials"),
        ("mqtt://host?x=1", "query"),
        ("ws://host/mqtt#frag", "query"),
        ("mqtt://host/path", "no path"),
    ],
)
def test_invalid_urls_say_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_broker_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "mqtt://127.0.0.1:1883",
        "ws://h:9001/",
        "ws://h:1/mqtt",
        "mqtt://[::1]:2",
        "mqtts://h:8883",
        "wss://h:443/mqtt",
    ],
)
def test_url_round_trips(url: str) -> None:
    address = parse_broker_url(url)
    assert address.url == url
    assert parse_broker_url(address.url) == address
