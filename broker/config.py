"""Settings for the embedded MQTT broker.

The broker is deliberately configured by a tiny frozen dataclass instead of amqtt's own
schema: the amqtt config format changed shape in 0.12 (plugins moved from entry points to a
``plugins`` mapping) and is likely to change again, so only :mod:`micromine.broker.embedded`
knows about it.  Everything else (CLI, devnet, tests) speaks :class:`BrokerConfig`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from micromine.common.genesis_file import load_genesis
from micromine.protocol.acl import Policy
from micromine.protocol.auth import LOGIN_WINDOW_MS
from micromine.protocol.quota import parse_role_quotas

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "DEFAULT_WS_PORT",
    "BrokerConfig",
    "add_broker_arguments",
    "config_from_args",
]

DEFAULT_HOST = "127.0.0.1"
"""Loopback by default: an accidental ``micromine broker`` must not open an anonymous,
unauthenticated broker to the whole network.  Operators opt in with ``--host 0.0.0.0``."""

DEFAULT_PORT = 1883
"""IANA-registered MQTT port, so stock clients work without flags."""

DEFAULT_WS_PORT = 9001
"""Conventional MQTT-over-WebSocket port (mosquitto's examples and most browser clients)."""

DEFAULT_TLS_PORT = 8883
"""IANA-registered MQTT over TLS port."""

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

    port: int | None = DEFAULT_PORT
    """Plain-TCP MQTT 3.1.1 listener port; ``None`` disables it (only with TLS on)."""

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

    genesis: Path | None = None
    """The chain's genesis file.  With it the broker checks login tokens and the topic ACL
    of protocol/acl.py (broker/access.py); without it the broker is open: anyone may
    publish and subscribe anything (logged as a warning at start)."""

    allow_anonymous: bool = True
    """With ``genesis``: clients without a username may read blocks and blocks/json."""

    login_window_ms: int = LOGIN_WINDOW_MS
    """With ``genesis``: tolerance either side of the broker's clock for a token's time."""

    tls_port: int | None = None
    """MQTT over TLS listener port (needs ``tls_cert`` and ``tls_key``); None: no TLS."""

    tls_cert: Path | None = None
    """PEM certificate (chain) of the TLS listeners."""

    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""

    tls_ca: Path | None = None
    """PEM CA bundle to verify client certificates by, when clients present one."""

    publish_rates: tuple[str, ...] = ()
    """With ``genesis``: publish quotas per role over protocol/quota.py ``ROLE_QUOTAS``,
    each ``ROLE=RATE[/BURST][,BYTES_PER_S[/BURST]]`` (``device=20/100``)."""

    enrollment_state: Path | None = None
    """With ``genesis``: a file that keeps the enrollment decisions the broker learned
    from blocks across restarts (broker/enrollment.py)."""

    homeassistant_prefix: str | None = None
    """With ``genesis``: let devices publish Home Assistant discovery under this prefix
    (protocol/acl.py); None: Home Assistant topics are refused like any outside the tree."""

    def __post_init__(self) -> None:
        """Reject configs that would only fail later, deep inside amqtt, with a worse error."""
        if not self.host:
            raise ValueError("host must not be empty")
        if ":" in self.host:
            raise ValueError(f"IPv6 literal {self.host!r} is not supported by amqtt's bind parser")
        ports = (("port", self.port), ("ws_port", self.ws_port), ("tls_port", self.tls_port))
        for name, value in ports:
            if value is not None and not 1 <= value <= _MAX_PORT:
                raise ValueError(f"{name} must be in 1..{_MAX_PORT}, got {value}")
        used = [value for _, value in ports if value is not None]
        if len(used) != len(set(used)):
            raise ValueError(f"the listener ports must differ, got {used}")
        if self.port is None and self.tls_port is None:
            raise ValueError("no listener: give a port or a TLS port")
        if (self.tls_port is None) != (self.tls_cert is None) or (
            (self.tls_cert is None) != (self.tls_key is None)
        ):
            raise ValueError("TLS needs a port, a certificate and its key together")
        if self.tls_ca is not None and self.tls_port is None:
            raise ValueError("a TLS CA file needs a TLS listener")
        if self.genesis is None and not self.allow_anonymous:
            raise ValueError("--no-anonymous needs --genesis (nobody could log in)")
        if self.login_window_ms <= 0:
            raise ValueError("login_window_ms must be positive")
        if self.publish_rates:
            if self.genesis is None:
                raise ValueError("--publish-rate needs --genesis (roles come from it)")
            parse_role_quotas(list(self.publish_rates))  # ValueError says which is wrong
        if self.enrollment_state is not None and self.genesis is None:
            raise ValueError("--enrollment-state needs --genesis (its chain and operators)")
        if self.homeassistant_prefix is not None:
            if self.genesis is None:
                raise ValueError(
                    "--homeassistant-prefix needs --genesis (an open broker allows it)"
                )
            Policy("x", frozenset(), homeassistant_prefix=self.homeassistant_prefix)
        if self.max_message_bytes is not None and self.max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {self.max_message_bytes}")

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the TCP listener (``mqtts://`` of the TLS one without it)."""
        if self.port is None:
            return f"mqtts://{self.host}:{self.tls_port}"
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        """``mqtts://host:tls_port`` of the TLS listener, or ``None`` without TLS."""
        return None if self.tls_port is None else f"mqtts://{self.host}:{self.tls_port}"

    @property
    def ws_url(self) -> str | None:
        """``ws://host:ws_port`` of the WebSocket listener, or ``None`` when it is disabled."""
        if self.ws_port is None:
            return None
        scheme = "wss" if self.port is None else "ws"  # it inherits TLS from the default
        return f"{scheme}://{self.host}:{self.ws_port}"


def _optional_port(value: str) -> int | None:
    """``0`` (or ``off``) disables a listener."""
    if value.lower() in {"0", "off", "none"}:
        return None
    return int(value)


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """The embedded broker's flags, shared with ``micromine broker``."""
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=_optional_port,
        default=DEFAULT_PORT,
        help="MQTT TCP port; 0 disables it (needs TLS) (default: %(default)s)",
    )
    parser.add_argument(
        "--ws-port",
        type=_optional_port,
        default=DEFAULT_WS_PORT,
        help="MQTT-over-WebSocket port; 0 disables (default: %(default)s)",
    )
    parser.add_argument(
        "--genesis",
        type=Path,
        metavar="FILE",
        help="check login tokens and the topic ACL for this chain; without it "
        "the broker is open to anyone (a warning says so)",
    )
    parser.add_argument(
        "--no-anonymous",
        action="store_true",
        help="refuse clients without a login (default: they may read blocks)",
    )
    parser.add_argument(
        "--login-window",
        type=float,
        metavar="S",
        help="seconds a token's time may differ from the broker's clock (300)",
    )
    parser.add_argument(
        "--tls-port",
        type=int,
        metavar="PORT",
        help=f"MQTT over TLS port (default {DEFAULT_TLS_PORT} with --tls-cert)",
    )
    parser.add_argument(
        "--publish-rate",
        action="append",
        default=[],
        metavar="ROLE=RATE[/BURST][,BYTES[/BURST]]",
        help="with --genesis: a role's publish quota per client, over the defaults "
        "(ledger 5000/20000; operator 200/1000; device and client 50/200 and 2 MiB/s; "
        "anonymous 10/20); repeatable",
    )
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM server certificate")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM key of --tls-cert")
    parser.add_argument(
        "--enrollment-state",
        type=Path,
        metavar="FILE",
        help="with --genesis: keep the device approvals learned from blocks in FILE, so a "
        "restarted broker still knows them (needed under enrollment 'approved')",
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="PEM CA to verify client certificates by (optional)",
    )
    add_homeassistant_argument(parser)


def add_homeassistant_argument(parser: argparse.ArgumentParser) -> None:
    """``--homeassistant-prefix``, for the embedded broker and the Mosquitto generator."""
    parser.add_argument(
        "--homeassistant-prefix",
        metavar="PREFIX",
        help="with --genesis: let devices publish Home Assistant discovery under PREFIX "
        "(usually homeassistant) and anyone read it; default: refused",
    )


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    """A validated :class:`BrokerConfig`; ValueError (or GenesisError) says what is wrong."""
    if args.genesis is not None:
        load_genesis(args.genesis)  # a bad genesis fails here, not inside amqtt
    tls_port = args.tls_port
    if tls_port is None and args.tls_cert is not None:
        tls_port = DEFAULT_TLS_PORT
    extra = {} if args.login_window is None else {"login_window_ms": int(args.login_window * 1000)}
    return BrokerConfig(
        host=args.host,
        port=args.port,
        ws_port=args.ws_port,
        genesis=args.genesis,
        allow_anonymous=not args.no_anonymous,
        tls_port=tls_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        publish_rates=tuple(getattr(args, "publish_rate", ()) or ()),
        enrollment_state=getattr(args, "enrollment_state", None),
        homeassistant_prefix=getattr(args, "homeassistant_prefix", None),
        **extra,
    )
