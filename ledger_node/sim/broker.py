"""The simulated broker: who is subscribed to what, and the retained messages.

Only the routing of an MQTT broker, which is all the processes rely on: topic filters
with ``+`` and ``#``, one copy per matching subscriber (a client subscribed to its own
topics hears its own publications, as on a real broker), retained messages kept per
topic and handed to a client when it subscribes, and a client's subscriptions dropped
when it disconnects (clean sessions, as every micromine process uses).  When and whether
a copy arrives is the network's business (faults.Network), not the broker's.

A broker restart (``restart``) drops every subscription, as a real one without
persistence does; ``keep_retained`` says whether it kept its retained messages.
"""

from collections.abc import Iterable


def matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    filter_levels, topic_levels = pattern.split("/"), topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels) or (level != "+" and level != topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)


class SimBroker:
    def __init__(self) -> None:
        self._filters: dict[int, tuple[str, ...]] = {}  # client -> its topic filters
        self._retained: dict[str, bytes] = {}
        self._routes: dict[str, tuple[int, ...]] = {}  # topic -> subscribers (a cache)

    def subscribe(self, client: int, filters: Iterable[str]) -> list[tuple[str, bytes]]:
        """``client``'s (re)connection with these filters: the retained messages it gets."""
        self._filters[client] = tuple(filters)
        self._routes.clear()
        return [
            (topic, payload)
            for topic, payload in sorted(self._retained.items())
            if any(matches(pattern, topic) for pattern in self._filters[client])
        ]

    def connected(self, client: int) -> bool:
        return client in self._filters

    def disconnect(self, client: int) -> None:
        if self._filters.pop(client, None) is not None:
            self._routes.clear()

    def publish(self, topic: str, payload: bytes, retain: bool) -> tuple[int, ...]:
        """The clients a publication goes to, in client order."""
        if retain:
            self._retained[topic] = payload
        found = self._routes.get(topic)
        if found is None:
            found = self._routes[topic] = tuple(
                client
                for client, patterns in sorted(self._filters.items())
                if any(matches(pattern, topic) for pattern in patterns)
            )
        return found

    def restart(self, *, keep_retained: bool) -> None:
        self._filters.clear()
        self._routes.clear()
        if not keep_retained:
            self._retained.clear()
