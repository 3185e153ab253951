"""Per-client publish quotas and payload caps in the embedded broker (broker/access.py,
amqtt_fixes 7 and 8), with real paho clients."""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from framework.access_helpers import OPERATOR, Secured, start_secured
from framework.protocol_samples import CHAIN, DEVICE

from micromine.processes import wait_until
from micromine.protocol import topics
from micromine.protocol.limits import MAX_MESSAGE_BYTES
from micromine.protocol.topics import Channel

pytestmark = pytest.mark.integration

ME = DEVICE.public


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Secured]:
    running = start_secured("amqtt", tmp_path, None, "--publish-rate", "device=5/5")
    yield running
    running.broker.close()
    print(running.broker.log_text()[-5000:])


def access_totals(log: str) -> dict[str, Any]:
    """The last counters line the access plugin logged."""
    lines = re.findall(r"access totals (\{.*\})", log)
    assert lines, log[-3000:]
    totals: dict[str, Any] = json.loads(lines[-1])
    return totals


def test_oversized_and_flooding_publications_are_refused(embedded: Secured) -> None:
    watcher = embedded.peer(OPERATOR, "watcher")
    assert watcher.subscribe(f"micromine/{CHAIN}/#") == 1
    device = embedded.peer(DEVICE, "mmd-device")
    heartbeat = topics.device_topic(CHAIN, ME, Channel.HEARTBEAT)
    device.publish(heartbeat, bytes(MAX_MESSAGE_BYTES["heartbeat"] + 1))  # too large
    device.publish(heartbeat, b"fits")
    watcher.wait_for(heartbeat, b"fits")
    assert not watcher.received(heartbeat, bytes(MAX_MESSAGE_BYTES["heartbeat"] + 1))
    verdicts = topics.verdicts(CHAIN, ME)
    for i in range(30):  # the burst of 5 is spent: most of these are over the quota
        device.publish(verdicts, b"flood %d" % i)
    # The broker takes one client's publications in order: once a marker is through,
    # every flood message before it was decided.  Markers are over the quota too, until
    # the bucket refills.
    markers = 0
    while not watcher.received(verdicts, b"marker"):
        device.publish(verdicts, b"marker")
        markers += 1
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: watcher.received(verdicts, b"marker"), 0.25)
        assert markers < 40
    passed = [i for i in range(30) if watcher.received(verdicts, b"flood %d" % i)]
    assert 1 <= len(passed) < 10, passed
    device.close()
    watcher.close()
    embedded.broker.stop()
    log = embedded.broker.log_text()
    assert "refused publish: too_large_heartbeat" in log
    assert "refused publish: rate_limited" in log
    mine = access_totals(log)["publishes"][ME.hex()[:16]]
    assert mine["too_large_heartbeat"] == 1
    assert mine["ok"] == 1 + len(passed) + 1  # "fits", the flood that passed, the marker
    assert sum(mine.values()) == 2 + 30 + markers  # every attempt counted once


def test_a_packet_above_the_role_limit_closes_the_connection(embedded: Secured) -> None:
    device = embedded.peer(DEVICE, "mmd-device")
    info = device.client.publish(topics.submit(CHAIN), bytes(2 * 1024 * 1024), qos=0)
    with contextlib.suppress(RuntimeError):
        # paho raises "client is not currently connected" when the broker hangs up
        # before the whole packet is written (seen at load 6): what this test wants.
        info.wait_for_publish(10)
    wait_until(lambda: not device.client.is_connected(), 10, message="the broker to hang up")
    device.close()
    # The broker still serves everyone else.
    watcher = embedded.peer(OPERATOR, "watcher")
    watcher.close()
    assert "refused a packet above the size limit" in embedded.broker.log_text()


def test_an_oversized_connect_is_refused(embedded: Secured) -> None:
    with socket.create_connection((embedded.host, embedded.port), timeout=10) as sock:
        sock.sendall(b"\x10\xc0\x84\x3d")  # CONNECT, remaining length 1000000
        assert sock.recv(1) == b""  # closed before any CONNACK, body never read
    watcher = embedded.peer(OPERATOR, "watcher")
    watcher.close()
    assert "refused a packet above the size limit from before CONNECT" in (
        embedded.broker.log_text()
    )
