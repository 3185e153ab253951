"""The embedded broker's access control: login tokens and the topic ACL, as one amqtt plugin.

An adapter: it turns amqtt's hooks into calls of the pure rules in
``micromine.protocol.auth`` (``check_login``) and ``micromine.protocol.acl``
(``check_publish``, ``check_subscribe``) and counts and logs what they refuse.  It decides
nothing itself.

amqtt 0.12.1 calls (verified in ``amqtt/broker.py`` and ``amqtt/plugins/manager.py``):

* ``authenticate(session=)`` once per CONNECT; False answers CONNACK 5 (not authorized)
  and closes the connection.  Besides the token it checks the Last Will's topic against
  the publish ACL (amqtt publishes a Will without asking the topic plugin) and that the
  client id is not held by a connected client of another key.  ``MicromineBroker`` runs
  it before amqtt touches any other session, so a refused CONNECT cannot disturb a
  connected client (amqtt_fixes 6).
* ``topic_filtering(session=, topic=, action=)``: SUBSCRIBE with the filter (False gives
  the SUBACK return code 0x80 for that filter), PUBLISH with the topic (False drops the
  message silently, the publisher still gets its PUBACK: MQTT 3.1.1 has no publish error),
  RECEIVE for every delivery (always True here: subscriptions were checked already).

A PUBLISH is checked in this order, each refusal counted by reason and by client:
the client's publish quota (``rate_limited``: a token bucket per client, messages and
bytes, by role; protocol/quota.py ``ROLE_QUOTAS``, configurable), the ACL, and the
payload's size against the largest message of the topic's channel (``too_large``,
``quota.MAX_PAYLOAD``; the size comes from ``amqtt_fixes.publish_payload_size``).
Every publication attempt, refused or not, is charged to the quota: a client flooding
topics it may not use only exhausts its own budget.

Both hooks are one class (an auth and a topic plugin at once) so that they share the
policy, the replay cache and the counters.  A session has a username only if its token
was accepted, so the topic checks read the client's key from it; no username means
anonymous.  Any exception in a hook refuses the action and is logged: nothing a client
sends can take the broker down through here.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from micromine.broker.amqtt_fixes import publish_payload_size
from micromine.broker.enrollment import BrokerEnrollment
from micromine.common.genesis_file import load_genesis
from micromine.protocol import topics
from micromine.protocol.acl import (
    Decision,
    Policy,
    check_publish,
    check_subscribe,
    is_open_enrollment,
)
from micromine.protocol.auth import (
    LOGIN_WINDOW_MS,
    LoginRefusal,
    LoginRequest,
    Refused,
    ReplayCache,
    check_login,
    is_take_over_allowed,
    parse_key_hex,
)
from micromine.protocol.genesis import Genesis
from micromine.protocol.quota import MAX_PAYLOAD, Buckets, max_packet_for, parse_role_quotas

__all__ = ["AccessPlugin", "packet_limit_for", "policy_from_genesis"]

log = logging.getLogger("micromine.broker.access")

LOG_INTERVAL_S = 1.0
"""At most one log line per refusal reason per interval; the rest are only counted."""
TOTALS_INTERVAL_S = 10.0
"""The counters are logged (one JSON line) this often while publications are refused."""
MAX_COUNTED_CLIENTS = 1024
"""Clients named in the per-client counters; further ones are counted as "others"."""
MAX_BUCKETS = 16_384
"""Publish quotas held (one per client); see quota.Buckets for what happens past it."""


def policy_from_genesis(
    genesis: Genesis,
    enrollment: BrokerEnrollment | None = None,
    *,
    homeassistant_prefix: str | None = None,
) -> Policy:
    """The chain's roles; with ``enrollment``, a key is a device only if the chain's
    blocks say so (broker/enrollment.py), else every key is."""
    return Policy(
        genesis.chain_id,
        frozenset(genesis.ledger_nodes),
        frozenset(genesis.operators),
        is_enrolled=is_open_enrollment if enrollment is None else enrollment.is_enrolled,
        homeassistant_prefix=homeassistant_prefix,
    )


def packet_limit_for(policy: Policy, username: str | None) -> int:
    """Fix 8's limit for an authenticated session: the largest publication of its role."""
    key = parse_key_hex(username) if username else None
    return max_packet_for(policy.role_of(key))


def client_label(session: Any) -> str:
    """How the counters name a client: its key's first 16 hex digits, or anonymous."""
    username = getattr(session, "username", None)
    return username[:16] if username else "anonymous"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class AccessPlugin(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]  # amqtt is untyped
    """Token login and topic ACL for one chain (see the module docstring)."""

    @dataclass
    class Config:
        genesis: str = ""
        """The chain's genesis file: its chain id, ledger nodes and operators."""
        allow_anonymous: bool = True
        """Anonymous clients may read the public topics (blocks, blocks/json)."""
        window_ms: int = LOGIN_WINDOW_MS
        """Tolerance either side of the broker's clock for a token's time."""
        publish_rates: list[str] = field(default_factory=list)
        """Publish quotas per role over the defaults: ``ROLE=RATE[/BURST][,BYTES[/BURST]]``
        (protocol/quota.py ``parse_role_quotas``)."""
        enrollment_state: str = ""
        """A file that keeps the enrollment decisions learned from blocks across restarts
        (broker/enrollment.py); empty: kept in memory only."""
        homeassistant_prefix: str = ""
        """Devices may publish Home Assistant discovery under it (protocol/acl.py);
        empty: refused."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        config: AccessPlugin.Config = self.context.config
        genesis = load_genesis(Path(config.genesis))
        state = Path(config.enrollment_state) if config.enrollment_state else None
        self.enrollment = BrokerEnrollment(genesis, state)
        self.blocks_topic = topics.blocks(genesis.chain_id)
        self.policy = policy_from_genesis(
            genesis, self.enrollment, homeassistant_prefix=config.homeassistant_prefix or None
        )
        self.allow_anonymous = config.allow_anonymous
        self.window_ms = config.window_ms
        self.quotas = parse_role_quotas(list(config.publish_rates))
        self.buckets = Buckets(MAX_BUCKETS)
        self.cache = ReplayCache()
        self.refused: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        # (client, "ok" or the refusal reason) -> publications: what each client sent
        self.publishes: Counter[tuple[str, str]] = Counter()
        self._clients: set[str] = set()
        self._last_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
        self._last_totals = time.monotonic()
        self._totals_due = False
        log.warning(
            "access control on: chain %s, %d ledger node(s), %d operator(s), anonymous %s",
            self.policy.chain_id,
            len(self.policy.ledger_nodes),
            len(self.policy.operators),
            "read-only" if self.allow_anonymous else "refused",
        )

    # -- amqtt hooks ------------------------------------------------------------------------

    async def authenticate(self, *, session: Any) -> bool:
        try:
            return self._authenticate(session)
        except Exception as exc:  # fail closed, never up into amqtt
            self._refuse("login", "plugin_error", repr(exc), session)
            return False

    async def on_broker_message_broadcast(self, *, client_id: str, message: Any) -> None:
        """A publication the ACL let through; blocks (only ledger keys may publish them)
        carry the enrollment decisions the ACL's device role depends on."""
        if getattr(message, "topic", None) != self.blocks_topic:
            return
        try:
            self.enrollment.learn_from_block(bytes(message.data))
        except Exception as exc:  # never up into amqtt
            self._refuse("enrollment", "plugin_error", repr(exc), None)

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if action == Action.RECEIVE:
            return True  # the subscription was checked; this runs for every delivery
        try:
            return self._filter(session, topic or "", action)
        except Exception as exc:
            self._refuse(str(action), "plugin_error", repr(exc), session)
            return False

    async def close(self) -> None:
        self._log_totals()

    def totals(self) -> dict[str, Any]:
        """The counters as one JSON-friendly document."""
        by_client: dict[str, dict[str, int]] = {}
        for (client, reason), count in sorted(self.publishes.items()):
            by_client.setdefault(client, {})[reason] = count
        return {
            "accepted": dict(self.accepted),
            "refused": dict(self.refused),
            "publishes": by_client,
        }

    def _log_totals(self) -> None:
        self._last_totals = time.monotonic()
        self._totals_due = False
        log.warning("access totals %s", json.dumps(self.totals(), separators=(",", ":")))

    # -- translation --------------------------------------------------------------------------

    def _authenticate(self, session: Any) -> bool:
        username = session.username
        key: bytes | None = None
        if username:
            request = LoginRequest(username, session.password, session.client_id or "")
            result = check_login(
                request, self.policy.chain_id, _now_ms(), self.cache, window_ms=self.window_ms
            )
            if isinstance(result, Refused):
                self._refuse("login", result.reason.value, result.detail, session)
                return False
            key = result
        elif not self.allow_anonymous:
            self._refuse("login", LoginRefusal.ANONYMOUS_DISABLED.value, "", session)
            return False
        holder = self.context.get_session(session.client_id) if session.client_id else None
        if holder is not None and holder.transitions.is_connected():
            holder_key = parse_key_hex(holder.username) if holder.username else None
            if not is_take_over_allowed(holder_key, key):
                detail = f"held by {(holder.username or 'anonymous')[:16]}"
                self._refuse("login", LoginRefusal.CLIENT_ID_TAKEN.value, detail, session)
                return False
        if session.will_flag:
            decision = check_publish(self.policy, key, session.will_topic or "")
            if not decision.allowed:
                detail = f"{session.will_topic!r}: {decision.reason}"
                self._refuse("login", LoginRefusal.WILL_NOT_ALLOWED.value, detail, session)
                return False
        self.accepted[self.policy.role_of(key).value] += 1
        return True

    def _filter(self, session: Any, topic: str, action: Action | None) -> bool:
        username = session.username if session is not None else None
        key = parse_key_hex(username) if username else None
        if username and key is None:  # cannot happen: check_login refused such a name
            self._refuse(str(action), "bad_session", "", session)
            return False
        decision: Decision
        if action == Action.PUBLISH:
            decision = self._check_publish(session, key, topic)
            self._count_publish(session, decision)
        elif action == Action.SUBSCRIBE:
            decision = check_subscribe(self.policy, key, topic)
        else:
            decision = Decision(False, "unknown_action")
        if not decision.allowed:
            self._refuse(str(action), decision.reason, topic, session)
        return decision.allowed

    def _check_publish(self, session: Any, key: bytes | None, topic: str) -> Decision:
        """Quota, then ACL, then size: every attempt is charged to the client's quota."""
        size = publish_payload_size() or 0
        role = self.policy.role_of(key)
        client = key if key is not None else ("anonymous", getattr(session, "client_id", ""))
        if not self.buckets.allow(client, self.quotas[role], size, _now_ms(), group=role):
            return Decision(False, "rate_limited")
        decision = check_publish(self.policy, key, topic)
        if not decision.allowed:
            return decision
        parsed = topics.parse(self.policy.chain_id, topic)
        if parsed is not None and size > MAX_PAYLOAD[parsed.channel]:
            return Decision(False, f"too_large_{parsed.channel.name.lower()}")
        return decision

    def _count_publish(self, session: Any, decision: Decision) -> None:
        label = client_label(session)
        if label not in self._clients:
            if len(self._clients) >= MAX_COUNTED_CLIENTS:
                label = "others"
            self._clients.add(label)
        self.publishes[label, decision.reason] += 1
        if self._totals_due and time.monotonic() - self._last_totals >= TOTALS_INTERVAL_S:
            self._log_totals()
        self._totals_due = self._totals_due or not decision.allowed

    def _refuse(self, what: str, reason: str, detail: str, session: Any) -> None:
        """Count every refusal; log the first of each kind and then one line per interval."""
        name = f"{what}:{reason}"
        self.refused[name] += 1
        now = time.monotonic()
        if now - self._last_log.get(name, -LOG_INTERVAL_S) < LOG_INTERVAL_S:
            self._unlogged[name] += 1
            return
        self._last_log[name] = now
        log.warning(
            "refused %s: %s (client %r, user %s, %s; %d such in all, %d not logged)",
            what,
            reason,
            getattr(session, "client_id", None),
            (getattr(session, "username", None) or "anonymous")[:16],
            detail[:160],
            self.refused[name],
            self._unlogged.pop(name, 0),
        )
