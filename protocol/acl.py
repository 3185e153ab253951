"""Who may publish and subscribe where: one table, for the embedded broker and Mosquitto.

Roles come from the chain's genesis and the login:

    LEDGER     a key in genesis ``ledger_nodes``
    OPERATOR   a key in genesis ``operators``
    DEVICE     any other authenticated key that ``is_enrolled`` accepts (the seam where
               the device registry plugs in; open by default: every key is enrolled)
    CLIENT     an authenticated key that is not enrolled: a wallet, say
    ANONYMOUS  no username at all (refused at login under ``--no-anonymous``)

``TABLE`` maps each channel of the topic tree (protocol/topics.py) to who may publish
and who may subscribe there, each with a scope for the key level of the topic:

    OWN  the key in the topic is the client's own key (``verdicts/<own key>``)
    ANY  any single, well-formed key: no wildcard at that level
    ALL  any key, and for a subscription also the ``+`` wildcard there

Home Assistant (off unless the policy names a discovery prefix): a device may publish
its own discovery configs and state, and every role may read under the prefix:

    <prefix>/sensor|binary_sensor/micromine_<own key>/<object>/config    DEVICE, own key
    <prefix>/micromine/<own key>/state|availability                      DEVICE, own key
    subscriptions whose first levels are the prefix                      every role

Rules: only topics of this chain's tree exist (``micromine/<chain>/...``); a publication
is allowed when its channel grants the role publishing at a scope the topic's key meets.
A subscription filter is allowed when every channel it can match grants the role
subscribing, at a scope its key level meets (a ``+`` or ``#`` there needs ALL); a filter
that can match nothing of the tree is refused.  Pure: no I/O, no clock.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from micromine.protocol import topics
from micromine.protocol.topics import Channel


class Role(Enum):
    LEDGER = "ledger"
    OPERATOR = "operator"
    DEVICE = "device"
    CLIENT = "client"
    ANONYMOUS = "anonymous"


class Access(Enum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


class Scope(Enum):
    OWN = "own"
    ANY = "any"
    ALL = "all"


AUTHENTICATED = (Role.LEDGER, Role.OPERATOR, Role.DEVICE, Role.CLIENT)
_L, _O, _D = Role.LEDGER, Role.OPERATOR, Role.DEVICE
_OWN, _ANY, _ALL = Scope.OWN, Scope.ANY, Scope.ALL


def _each(roles: tuple[Role, ...], scope: Scope) -> dict[Role, Scope]:
    return dict.fromkeys(roles, scope)


@dataclass(frozen=True, slots=True)
class Rule:
    publish: dict[Role, Scope]
    subscribe: dict[Role, Scope]


# Operators read everything (monitoring) and, like every authenticated key, submit.
# A receipts topic is named by a random reply_to that only the submitter and the ledger
# nodes (the only subscribers of tx/submit) know: anyone may subscribe to one by name.
TABLE: dict[Channel, Rule] = {
    Channel.SUBMIT: Rule(_each(AUTHENTICATED, _ALL), {_L: _ALL, _O: _ALL}),
    Channel.RECEIPTS: Rule({_L: _ALL}, {**_each(AUTHENTICATED, _ANY), _O: _ALL}),
    Channel.WORK: Rule({_L: _ALL}, {_D: _OWN, _O: _ALL}),
    Channel.VERDICTS: Rule({_D: _OWN}, {_L: _ALL, _O: _ALL}),
    Channel.HELLO: Rule({_D: _OWN}, {_L: _ALL, _O: _ALL}),
    Channel.HEARTBEAT: Rule({_D: _OWN}, {_L: _ALL, _O: _ALL}),
    Channel.DEVICE_STATUS: Rule({_D: _OWN}, {_L: _ALL, _O: _ALL}),
    Channel.BLOCKS: Rule({_L: _ALL}, _each((*AUTHENTICATED, Role.ANONYMOUS), _ALL)),
    Channel.BLOCKS_JSON: Rule({_L: _ALL}, _each((*AUTHENTICATED, Role.ANONYMOUS), _ALL)),
    Channel.LEDGER_STATUS: Rule({_L: _OWN}, _each(AUTHENTICATED, _ALL)),
    Channel.CONSENSUS: Rule({_L: _OWN}, {_L: _ALL, _O: _ALL}),
    Channel.SYNC_REQUEST: Rule({_L: _ALL}, {_L: _ALL, _O: _ALL}),
    Channel.SYNC_REPLY: Rule({_L: _ALL}, {_L: _ALL, _O: _ALL}),
    # An operator publishes approvals under its own key; the ledger nodes collect them.
    Channel.APPROVALS: Rule({_O: _OWN}, {_L: _ALL, _O: _ALL}),
    # Account summaries say nothing the public blocks do not (rewards, and balances that
    # follow from them): readable like blocks/json.
    Channel.ACCOUNTS: Rule({_L: _ALL}, _each((*AUTHENTICATED, Role.ANONYMOUS), _ALL)),
    # Anyone logged in may report a proven lie (a watcher, a wallet); the nodes check
    # each report as a block's fraud proof.  Not anonymous: a report costs a node two
    # signature checks, and a login is what the broker's quotas count.
    Channel.FRAUDS: Rule(_each(AUTHENTICATED, _ALL), {_L: _ALL, _O: _ALL}),
}


def grants(channel: Channel, access: Access) -> dict[Role, Scope]:
    rule = TABLE[channel]
    return rule.publish if access is Access.PUBLISH else rule.subscribe


def is_open_enrollment(_key: bytes) -> bool:
    """The default enrollment policy: every authenticated key is a device."""
    return True


@dataclass(frozen=True, slots=True)
class Policy:
    """The roles of one chain.  ``is_enrolled`` is the registry check: every key
    under ``open`` enrollment; under ``approved`` the embedded broker passes the keys
    the chain's blocks approved and did not revoke (broker/enrollment.py)."""

    chain_id: str
    ledger_nodes: frozenset[bytes]
    operators: frozenset[bytes] = frozenset()
    is_enrolled: Callable[[bytes], bool] = field(default=is_open_enrollment)
    # Devices may announce themselves to Home Assistant under this discovery prefix
    # (device_agent/homeassistant.py); None: Home Assistant topics are outside the tree.
    homeassistant_prefix: str | None = None

    def __post_init__(self) -> None:
        prefix = self.homeassistant_prefix
        if prefix is not None and (
            not prefix
            or any(c in prefix for c in "+#\x00")
            or "" in prefix.split("/")
            or prefix.split("/")[0] == topics.ROOT
        ):
            raise ValueError(
                f"Home Assistant prefix {prefix!r}: needs non-empty levels, no wildcards, "
                f"and must not start with {topics.ROOT!r}"
            )

    def role_of(self, key: bytes | None) -> Role:
        if key is None:
            return Role.ANONYMOUS
        if key in self.ledger_nodes:
            return Role.LEDGER
        if key in self.operators:
            return Role.OPERATOR
        return Role.DEVICE if self.is_enrolled(key) else Role.CLIENT


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str  # "ok", or what refused it: for logs and counters


_OK = Decision(True, "ok")
_WILDCARD = None  # the key level of a filter that is + or covered by #


def check_publish(policy: Policy, key: bytes | None, topic: str) -> Decision:
    """May the client with ``key`` (None: anonymous) publish on ``topic``?"""
    if "+" in topic or "#" in topic:
        return Decision(False, "wildcard_in_topic")
    ha_levels = _homeassistant_levels(policy, topic)
    if ha_levels is not None:
        return _check_homeassistant_publish(policy, key, ha_levels)
    parsed = topics.parse(policy.chain_id, topic)
    if parsed is None:
        return Decision(False, "outside_tree")
    return _check(policy, key, Access.PUBLISH, parsed.channel, parsed.key)


def check_subscribe(policy: Policy, key: bytes | None, topic_filter: str) -> Decision:
    """May the client with ``key`` (None: anonymous) subscribe to ``topic_filter``?"""
    if _homeassistant_levels(policy, topic_filter) is not None:
        return _OK  # discovery configs and agents' states: nothing secret
    covered = list(_covered(policy.chain_id, topic_filter))
    if not covered:
        return Decision(False, "outside_tree")
    for channel, topic_key in covered:
        decision = _check(policy, key, Access.SUBSCRIBE, channel, topic_key)
        if not decision.allowed:
            return decision
    return _OK


HOMEASSISTANT_COMPONENTS = ("sensor", "binary_sensor")
HOMEASSISTANT_LEAVES = ("state", "availability")


def _homeassistant_levels(policy: Policy, topic: str) -> list[str] | None:
    """The levels below the Home Assistant prefix, or None if ``topic`` is not under it."""
    prefix = policy.homeassistant_prefix
    if prefix is None:
        return None
    head = prefix.split("/")
    levels = topic.split("/")
    if levels[: len(head)] != head or len(levels) == len(head):
        return None
    return levels[len(head) :]


def _check_homeassistant_publish(policy: Policy, key: bytes | None, rest: list[str]) -> Decision:
    role = policy.role_of(key)
    if role is not Role.DEVICE or key is None:
        return Decision(False, f"{role.value}_may_not_publish_homeassistant")
    own = key.hex()
    match rest:
        case [component, node, object_id, "config"] if (
            component in HOMEASSISTANT_COMPONENTS and node == f"micromine_{own}" and object_id
        ):
            return _OK
        case ["micromine", device, leaf] if device == own and leaf in HOMEASSISTANT_LEAVES:
            return _OK
    return Decision(False, "device_not_own_homeassistant")


def _check(
    policy: Policy, key: bytes | None, access: Access, channel: Channel, topic_key: bytes | None
) -> Decision:
    role = policy.role_of(key)
    scope = grants(channel, access).get(role)
    refused = Decision(False, f"{role.value}_may_not_{access.value}_{channel.name.lower()}")
    if scope is None:
        return refused
    keyed = channel.value.pattern.count("+") > 0
    if not keyed or scope is Scope.ALL:
        return _OK
    if topic_key is _WILDCARD:
        return Decision(False, f"wildcard_needs_all_{channel.name.lower()}")
    if scope is Scope.OWN and topic_key != key:
        return Decision(False, f"{role.value}_not_own_{channel.name.lower()}")
    return _OK


def _covered(chain_id: str, topic_filter: str) -> Iterator[tuple[Channel, bytes | None]]:
    """Each channel ``topic_filter`` can match, with the key it names (None: any key)."""
    levels = topic_filter.split("/")
    root = [topics.ROOT, chain_id]
    if levels[:2] != root or any(
        ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+")
        for i, level in enumerate(levels)
    ):
        return  # another root or chain, a wildcard at the root, or a malformed filter
    rest = levels[2:]
    for channel in Channel:
        pattern = channel.value.pattern.split("/")
        if rest and rest[-1] == "#":
            head = rest[:-1]
            if len(head) > len(pattern):
                continue
        else:
            head = rest
            if len(head) != len(pattern):
                continue
        matched = True
        named: str | None = None
        for f, p in zip(head, pattern, strict=False):
            if p == "+":
                named = None if f == "+" else f
            elif f not in ("+", p):
                matched = False
                break
        if not matched:
            continue
        if named is None:
            yield channel, _WILDCARD
            continue
        # A literal at the key level: the topic it spells must parse as this channel
        # (``sync/request`` is no sync reply; a malformed key names nothing).
        concrete = "/".join(named if p == "+" else p for p in pattern)
        parsed = topics.parse(chain_id, f"{topics.ROOT}/{chain_id}/{concrete}")
        if parsed is not None and parsed.channel is channel:
            yield channel, parsed.key
