"""Settings for the embedded MQTT broker.

The broker is deliberately configured by a tiny frozen dataclass instead of amqtt's own
schema: the amqtt config format changed shape in 0.12 (plugins moved from entry points to a
``plugins`` mapping) and is likely to change again, so only :mod:`micromine.broker.embedded`
knows about it.  Everything else (CLI, devnet, tests) speaks :class:`BrokerConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_WS_PORT", "BrokerConfig"]

DEFAULT_HOST = "127.0.0.1"
"""Loopback by default: an accidental ``micromine broker`` must not open an anonymous,
unauthenticated broker to the whole network.  Operators opt in with ``--host 0.0.0.0``."""

DEFAULT_PORT = 1883
"""IANA-registered MQTT port, so stock clients work without flags."""

DEFAULT_WS_PORT = 9001
"""Conventional MQTT-over-WebSocket port (mosquitto's examples and most browser clients)."""

_MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where and how the embedded broker listens.

    Frozen so a config can be shared between the CLI, a devnet supervisor and a restart loop
    without anyone mutating it underneath the running broker.
    """

    host: str = DEFAULT_HOST
    """Address both listeners bind to.  IPv4 literal or host name; amqtt's bind parser keeps
    the brackets of an IPv6 literal, so IPv6 binds are not supported."""

    port: int = DEFAULT_PORT
    """Plain-TCP MQTT 3.1.1 listener port."""

    ws_port: int | None = DEFAULT_WS_PORT
    """MQTT-over-WebSocket listener port; ``None`` disables the WebSocket listener (devices
    never need it; it exists for browser dashboards)."""

    max_message_bytes: int | None = None
    """Largest application payload the operator expects, in bytes.

    amqtt 0.12.1 has no MQTT packet-size limit at all on TCP (a client may send up to the
    protocol maximum of 256 MiB), so this is *not* enforced there and protocol-level limits
    must be checked by the ledger/agent code itself.  It is used only to size the WebSocket
    frame limit, which amqtt otherwise leaves at the websockets default of 1 MiB (too small
    for our 2 MB payloads).  ``None`` means "no WebSocket frame limit either".
    """

    def __post_init__(self) -> None:
        """Reject configs that would only fail later, deep inside amqtt, with a worse error."""
        if not self.host:
            raise ValueError("host must not be empty")
        if ":" in self.host:
            raise ValueError(f"IPv6 literal {self.host!r} is not supported by amqtt's bind parser")
        for name, value in (("port", self.port), ("ws_port", self.ws_port)):
            if value is not None and not 1 <= value <= _MAX_PORT:
                raise ValueError(f"{name} must be in 1..{_MAX_PORT}, got {value}")
        if self.ws_port is not None and self.ws_port == self.port:
            raise ValueError(f"port and ws_port must differ (both {self.port})")
        if self.max_message_bytes is not None and self.max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {self.max_message_bytes}")

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the TCP listener, the form the agent/ledger CLIs accept."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str | None:
        """``ws://host:ws_port`` of the WebSocket listener, or ``None`` when it is disabled."""
        return None if self.ws_port is None else f"ws://{self.host}:{self.ws_port}"
