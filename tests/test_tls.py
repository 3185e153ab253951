"""TLS end to end: a real agent process connects over mqtts://, gets a batch and answers.

Certificates are made at test time with trustme (a CA, and a server certificate for
127.0.0.1).  On the embedded broker the agent logs in with tokens through its TLS
listener; on Mosquitto with its static password through the listener that
``micromine broker mosquitto-config --tls-cert ...`` configured.  The test plays the
ledger node: it publishes a signed WorkBatch on the agent's work topic and waits for the
Verdict on the agent's verdicts topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from framework.access_helpers import (
    KEYS,
    Secured,
    mosquitto_config,
    now_ms,
    write_genesis,
    write_key,
)
from framework.brokers import (
    ConfiguredMosquitto,
    EmbeddedBroker,
    free_port,
    require_mosquitto,
)
from framework.protocol_samples import CHAIN, DEVICE, LEDGER, assignment, work_batch

from micromine.common.mqtt import Incoming, LinkConfig, Login, LoginMode, MqttLink, TlsFiles
from micromine.processes import FULL_SPEED_AGENT, ManagedProcess, python_module, wait_until
from micromine.protocol import topics
from micromine.protocol.codec import decode, encode, is_signature_valid
from micromine.protocol.messages import Verdict

pytestmark = pytest.mark.integration


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    return paths


@pytest.fixture(params=["amqtt", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def tls_broker(
    request: pytest.FixtureRequest, tmp_path: Path, certificates: dict[str, Path]
) -> Iterator[tuple[Secured, int]]:
    tls_port = free_port()
    tls_flags = ("--tls-cert", str(certificates["cert"]), "--tls-key", str(certificates["key"]))
    if request.param == "amqtt":
        genesis = write_genesis(tmp_path)
        broker: EmbeddedBroker | ConfiguredMosquitto = EmbeddedBroker(
            log_dir=tmp_path, tls_port=tls_port, extra_args=("--genesis", str(genesis), *tls_flags)
        )
    else:
        port = free_port()
        conf = mosquitto_config(tmp_path, port, "--tls-port", str(tls_port), *tls_flags)
        broker = ConfiguredMosquitto(conf, port, extra_ports=(tls_port,), path=require_mosquitto())
    broker.start()
    yield Secured(request.param, broker, tmp_path), tls_port
    broker.close()
    print(broker.log_text()[-3000:])


def test_agent_over_tls_gets_work_and_answers(
    tmp_path: Path, tls_broker: tuple[Secured, int], certificates: dict[str, Path]
) -> None:
    secured, tls_port = tls_broker
    url = f"mqtts://127.0.0.1:{tls_port}"
    login = LoginMode.TOKEN if secured.kind == "amqtt" else LoginMode.PASSWORD
    tls = TlsFiles(certificates["ca"])
    ledger = MqttLink(LinkConfig(
        client_id="ledger-tls", broker_url=url, login=Login(LEDGER, CHAIN, login), tls=tls,
        subscriptions=((topics.verdicts(CHAIN, DEVICE.public), 1),
                       (topics.device_topic(CHAIN, DEVICE.public, topics.Channel.HELLO), 1)),
    ))  # fmt: skip
    agent = ManagedProcess(
        "agent-tls",
        python_module(
            "micromine.device_agent", "--broker", url, "--chain", CHAIN, "--log-json",
            "--key", str(write_key(tmp_path / "agent.key", KEYS["device"])),
            "--tls-ca", str(certificates["ca"]), "--login", login.value, *FULL_SPEED_AGENT,
        ),
        tmp_path / "agent.log",
    )  # fmt: skip
    received: list[Incoming] = []

    def drain() -> bool:
        item = ledger.get(0.1)
        while item is not None:
            if isinstance(item, Incoming):
                received.append(item)
            item = ledger.get(0)
        return any(i.topic == topics.verdicts(CHAIN, DEVICE.public) for i in received)

    with ledger:
        assert ledger.wait_connected(15), "the ledger's TLS connection"
        agent.start()
        try:
            hello = topics.device_topic(CHAIN, DEVICE.public, topics.Channel.HELLO)
            wait_until(
                lambda: drain() or any(i.topic == hello for i in received),
                30,
                message=lambda: f"the agent's hello over TLS; log: {agent.log_tail()}",
            )
            batch = work_batch(assignment=assignment(deadline_ms=now_ms() + 60_000))
            ledger.publish(topics.work(CHAIN, DEVICE.public), encode(batch), 1, wait=5)
            wait_until(drain, 30, message=lambda: f"a verdict; agent log: {agent.log_tail()}")
        finally:
            agent.stop()
    verdict = next(
        decode(i.payload, Verdict)
        for i in received
        if i.topic.startswith(f"micromine/{CHAIN}/verdicts")
    )
    assert verdict.batch_id == batch.id and is_signature_valid(verdict)
    assert verdict.device == DEVICE.public


def test_a_plain_connection_to_the_tls_port_is_refused(tls_broker: tuple[Secured, int]) -> None:
    # (A client that does not trust the broker's CA fails too, but paho 2.2 leaks the
    # socket of a failed handshake until garbage collection: a ResourceWarning here.)
    _, tls_port = tls_broker
    link = MqttLink(LinkConfig(client_id="plain", broker_url=f"mqtt://127.0.0.1:{tls_port}"))
    with link:
        assert not link.wait_connected(2)
