"""The MQTT topic tree, with each topic's QoS and retain flag.  Nothing else names topics.

    micromine/<chain>/tx/submit                      Submission      QoS 1
    micromine/<chain>/receipts/<reply_to hex>        Receipts        QoS 1
    micromine/<chain>/work/<device hex>              WorkBatch       QoS 1
    micromine/<chain>/verdicts/<device hex>          Verdict         QoS 1
    micromine/<chain>/devices/<device hex>/hello     DeviceHello     QoS 1, retained
    micromine/<chain>/devices/<device hex>/heartbeat Heartbeat       QoS 0
    micromine/<chain>/devices/<device hex>/status    DeviceStatus    QoS 1, retained (and Last Will)
    micromine/<chain>/blocks                         Block (CBOR)    QoS 1, latest retained
    micromine/<chain>/blocks/json                    block as JSON   QoS 1, latest retained
    micromine/<chain>/ledger/<node hex>/status       JSON status     QoS 1, retained
    micromine/<chain>/consensus/<node hex>           Proposal, Prevote, Precommit  QoS 1
    micromine/<chain>/sync/request                   SyncRequest     QoS 1
    micromine/<chain>/sync/<reply_to hex>            Block (CBOR)    QoS 1
    micromine/<chain>/approvals/<operator hex>       DeviceApproval  QoS 1
    micromine/<chain>/accounts/<device hex>          JSON account summary  QoS 1, retained

Keys appear in topics as lowercase hex.  Every publisher sets the flags from here, so a
subscriber can rely on them.
"""

import re
from dataclasses import dataclass
from enum import Enum, unique

ROOT = "micromine"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    qos: int
    retain: bool
    # The topic below micromine/<chain>/, with + for the key level.  Besides documenting
    # the tree it keeps every Channel's value distinct: Enum members with equal values
    # are aliases of one member, so without it WORK would *be* SUBMIT.
    pattern: str


@unique
class Channel(Enum):
    SUBMIT = TopicSpec(qos=1, retain=False, pattern="tx/submit")
    RECEIPTS = TopicSpec(qos=1, retain=False, pattern="receipts/+")
    WORK = TopicSpec(qos=1, retain=False, pattern="work/+")
    VERDICTS = TopicSpec(qos=1, retain=False, pattern="verdicts/+")
    # Retained: a ledger node that starts after a device connected still learns of it
    # and can register it (a device is only given work once the chain registered it).
    HELLO = TopicSpec(qos=1, retain=True, pattern="devices/+/hello")
    HEARTBEAT = TopicSpec(qos=0, retain=False, pattern="devices/+/heartbeat")
    DEVICE_STATUS = TopicSpec(qos=1, retain=True, pattern="devices/+/status")
    BLOCKS = TopicSpec(qos=1, retain=True, pattern="blocks")
    BLOCKS_JSON = TopicSpec(qos=1, retain=True, pattern="blocks/json")
    LEDGER_STATUS = TopicSpec(qos=1, retain=True, pattern="ledger/+/status")
    CONSENSUS = TopicSpec(qos=1, retain=False, pattern="consensus/+")
    SYNC_REQUEST = TopicSpec(qos=1, retain=False, pattern="sync/request")
    SYNC_REPLY = TopicSpec(qos=1, retain=False, pattern="sync/+")
    APPROVALS = TopicSpec(qos=1, retain=False, pattern="approvals/+")
    # Informational JSON, retained: what the latest block that rewarded a device left in
    # its account, so an agent learns its rewards without storing the chain.
    ACCOUNTS = TopicSpec(qos=1, retain=True, pattern="accounts/+")
    # FraudReports from anyone logged in (a watcher that checked a block), to the nodes.
    FRAUDS = TopicSpec(qos=1, retain=False, pattern="frauds")

    @property
    def qos(self) -> int:
        return self.value.qos

    @property
    def retain(self) -> bool:
        return self.value.retain


@dataclass(frozen=True, slots=True)
class Publish:
    """A message to send: what the pure cores return and the MQTT adapters carry out.

    Build it with ``Publish.on`` so the QoS and retain flags always come from the channel.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool

    @classmethod
    def on(cls, channel: Channel, topic: str, payload: bytes) -> "Publish":
        return cls(topic, payload, channel.qos, channel.retain)


def _base(chain_id: str) -> str:
    if not chain_id or any(c in chain_id for c in "/+#\x00"):
        raise ValueError(f"chain id {chain_id!r} cannot be a topic level")
    return f"{ROOT}/{chain_id}"


def submit(chain_id: str) -> str:
    return f"{_base(chain_id)}/tx/submit"


def receipts(chain_id: str, reply_to: bytes) -> str:
    return f"{_base(chain_id)}/receipts/{reply_to.hex()}"


def work(chain_id: str, device: bytes) -> str:
    return f"{_base(chain_id)}/work/{device.hex()}"


def verdicts(chain_id: str, device: bytes) -> str:
    return f"{_base(chain_id)}/verdicts/{device.hex()}"


def all_verdicts(chain_id: str) -> str:
    return f"{_base(chain_id)}/verdicts/+"


def device_topic(chain_id: str, device: bytes, channel: Channel) -> str:
    leaf = _DEVICE_LEAF_OF.get(channel)
    if leaf is None:
        raise ValueError(f"{channel} is not a device channel")
    return f"{_base(chain_id)}/devices/{device.hex()}/{leaf}"


def all_devices(chain_id: str) -> str:
    """Subscription filter for every device's hello, heartbeat and status."""
    return f"{_base(chain_id)}/devices/+/+"


def blocks(chain_id: str) -> str:
    return f"{_base(chain_id)}/blocks"


def blocks_json(chain_id: str) -> str:
    return f"{_base(chain_id)}/blocks/json"


def frauds(chain_id: str) -> str:
    return f"{_base(chain_id)}/frauds"


def consensus(chain_id: str, node: bytes) -> str:
    return f"{_base(chain_id)}/consensus/{node.hex()}"


def all_consensus(chain_id: str) -> str:
    return f"{_base(chain_id)}/consensus/+"


def sync_request(chain_id: str) -> str:
    return f"{_base(chain_id)}/sync/request"


def sync_reply(chain_id: str, reply_to: bytes) -> str:
    return f"{_base(chain_id)}/sync/{reply_to.hex()}"


def ledger_status(chain_id: str, node: bytes) -> str:
    return f"{_base(chain_id)}/ledger/{node.hex()}/status"


def approvals(chain_id: str, operator: bytes) -> str:
    return f"{_base(chain_id)}/approvals/{operator.hex()}"


def all_approvals(chain_id: str) -> str:
    return f"{_base(chain_id)}/approvals/+"


def accounts(chain_id: str, device: bytes) -> str:
    return f"{_base(chain_id)}/accounts/{device.hex()}"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """What an incoming topic names: the channel and, for per-key topics, the key."""

    channel: Channel
    key: bytes | None


_DEVICE_LEAVES = {
    "hello": Channel.HELLO,
    "heartbeat": Channel.HEARTBEAT,
    "status": Channel.DEVICE_STATUS,
}
_DEVICE_LEAF_OF = {channel: leaf for leaf, channel in _DEVICE_LEAVES.items()}


def parse(chain_id: str, topic: str) -> ParsedTopic | None:
    """Classify a topic of this chain; None for anything outside the tree."""
    prefix = _base(chain_id) + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix) :].split("/")
    match parts:
        case ["tx", "submit"]:
            return ParsedTopic(Channel.SUBMIT, None)
        case ["blocks"]:
            return ParsedTopic(Channel.BLOCKS, None)
        case ["frauds"]:
            return ParsedTopic(Channel.FRAUDS, None)
        case ["blocks", "json"]:
            return ParsedTopic(Channel.BLOCKS_JSON, None)
        case ["receipts", key]:
            return _keyed(Channel.RECEIPTS, key, 16)
        case ["work", key]:
            return _keyed(Channel.WORK, key, 32)
        case ["verdicts", key]:
            return _keyed(Channel.VERDICTS, key, 32)
        case ["devices", key, leaf] if leaf in _DEVICE_LEAVES:
            return _keyed(_DEVICE_LEAVES[leaf], key, 32)
        case ["ledger", key, "status"]:
            return _keyed(Channel.LEDGER_STATUS, key, 32)
        case ["consensus", key]:
            return _keyed(Channel.CONSENSUS, key, 32)
        case ["sync", "request"]:
            return ParsedTopic(Channel.SYNC_REQUEST, None)
        case ["sync", key]:
            return _keyed(Channel.SYNC_REPLY, key, 16)
        case ["approvals", key]:
            return _keyed(Channel.APPROVALS, key, 32)
        case ["accounts", key]:
            return _keyed(Channel.ACCOUNTS, key, 32)
    return None


_LOWER_HEX = re.compile(r"[0-9a-f]+")


def _keyed(channel: Channel, key_hex: str, length: int) -> ParsedTopic | None:
    # Exactly 2*length lowercase hex digits: bytes.fromhex alone would also skip spaces
    # and accept uppercase, so a malformed level could yield a key of the wrong length.
    if len(key_hex) != 2 * length or not _LOWER_HEX.fullmatch(key_hex):
        return None
    return ParsedTopic(channel, bytes.fromhex(key_hex))
