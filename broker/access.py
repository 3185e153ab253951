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

Both hooks are one class (an auth and a topic plugin at once) so that they share the
policy, the replay cache and the counters.  A session has a username only if its token
was accepted, so the topic checks read the client's key from it; no username means
anonymous.  Any exception in a hook refuses the action and is logged: nothing a client
sends can take the broker down through here.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from micromine.ledger_node.genesis import Genesis
from micromine.protocol.acl import Decision, Policy, check_publish, check_subscribe
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

__all__ = ["AccessPlugin", "policy_from_genesis"]

log = logging.getLogger("micromine.broker.access")

LOG_INTERVAL_S = 1.0
"""At most one log line per refusal reason per interval; the rest are only counted."""


def policy_from_genesis(genesis: Genesis) -> Policy:
    return Policy(genesis.chain_id, frozenset(genesis.ledger_nodes), frozenset(genesis.operators))


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

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        config: AccessPlugin.Config = self.context.config
        genesis = Genesis.load(Path(config.genesis))
        self.policy = policy_from_genesis(genesis)
        self.allow_anonymous = config.allow_anonymous
        self.window_ms = config.window_ms
        self.cache = ReplayCache()
        self.refused: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
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
        log.info("access totals: accepted %s, refused %s", dict(self.accepted), dict(self.refused))

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
            decision = check_publish(self.policy, key, topic)
        elif action == Action.SUBSCRIBE:
            decision = check_subscribe(self.policy, key, topic)
        else:
            decision = Decision(False, "unknown_action")
        if not decision.allowed:
            self._refuse(str(action), decision.reason, topic, session)
        return decision.allowed

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
