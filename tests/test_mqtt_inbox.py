"""The paho-free parts of the MQTT link: backoff, inbox, config validation."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from micromine.common.inbox import Backoff, Inbox, Incoming, LinkEvent, LinkEventKind
from micromine.common.mqtt import LinkConfig, MqttLink, TlsFiles, Will


def test_backoff_grows_stays_in_bounds_and_resets() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(1))
    delays = [backoff.next() for _ in range(40)]
    assert all(0.5 <= d <= 30.0 for d in delays)
    assert max(delays[:2]) <= 4.5  # at most 3x per step
    assert max(delays) > 10  # it does grow
    backoff.reset()
    assert backoff.next() <= 1.5


def test_backoff_is_jittered_across_clients() -> None:
    firsts = {round(Backoff(0.5, 30.0, random.Random(seed)).next(), 6) for seed in range(20)}
    assert len(firsts) == 20


def message(n: int) -> Incoming:
    return Incoming("t", bytes([n]), 0.0)


def test_inbox_bounds_messages_but_never_drops_events_and_keeps_order() -> None:
    inbox = Inbox(2)
    connected = LinkEvent(LinkEventKind.CONNECTED, 0.0)
    assert inbox.put_message(message(1))
    inbox.put_event(connected)
    assert inbox.put_message(message(2))
    assert not inbox.put_message(message(3))
    inbox.put_event(LinkEvent(LinkEventKind.DISCONNECTED, 0.0))
    assert len(inbox) == 2
    got = [inbox.get(0) for _ in range(5)]
    assert got[:4] == [message(1), connected, message(2), got[3]]
    assert isinstance(got[3], LinkEvent)
    assert got[4] is None
    assert len(inbox) == 0


def test_inbox_serves_urgent_topics_first_in_their_own_order() -> None:
    inbox = Inbox(4, urgent_prefixes=("c/",))
    flow = [Incoming("t", b"1", 0.0), Incoming("t", b"2", 0.0)]
    urgent = [Incoming("c/a", b"3", 0.0), Incoming("c/b", b"4", 0.0)]
    for item in (flow[0], urgent[0], flow[1], urgent[1]):
        assert inbox.put_message(item)
    assert not inbox.put_message(Incoming("c/a", b"5", 0.0))  # one bound for both lanes
    assert [inbox.get(0) for _ in range(5)] == [*urgent, *flow, None]
    assert len(inbox) == 0


def test_inbox_wake_unblocks_a_waiting_get() -> None:
    inbox = Inbox(10)
    result: list[object] = []
    started = threading.Event()

    def consumer() -> None:
        started.set()
        result.append(inbox.get(30))

    thread = threading.Thread(target=consumer)
    thread.start()
    started.wait(5)
    while thread.is_alive():
        inbox.wake()
        thread.join(0.05)
    assert result == [None]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_id": ""},
        {"broker_url": "mqtt://h", "tls": TlsFiles(Path("ca.pem"))},
        {"keepalive_s": 1},
        {"inbox_max": 0},
        {"reconnect_min_s": 5.0, "reconnect_max_s": 1.0},
        {"subscriptions": (("a/b", 3),)},
        {"will": Will("t", b"", qos=5)},
    ],
)
def test_link_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"client_id": "c", "broker_url": "mqtt://127.0.0.1:1"}
    with pytest.raises(ValueError):
        LinkConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_publish_on_a_link_that_never_connected_does_not_raise() -> None:
    link = MqttLink(LinkConfig("c", "mqtt://127.0.0.1:1"))
    assert link.publish("a/b", b"x", qos=0) is False
    assert link.publish("a/b", b"x", qos=1) is True  # queued for the first connection
    assert link.publish("a/b", b"x", qos=1, wait=0.1) is False
    link.close()
    assert link.publish("a/b", b"x", qos=1) is False
    stats = link.stats
    assert (stats.publish_failed, stats.publish_queued) == (2, 2)
    assert link.get(0) is None
