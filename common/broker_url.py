"""Broker addresses: the one parser of ``mqtt[s]://`` and ``ws[s]://`` URLs that every
command, configuration file and process uses, with errors that say what to write."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORTS", "BrokerAddress", "parse_broker_url"]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 9001, "wss": 443}
_TLS_SCHEMES = {"mqtts", "wss"}
_WS_SCHEMES = {"ws", "wss"}
_OTHER_TLS_NAMES = {"ssl", "tls"}
_MAX_PORT = 65535
_URL_SHAPE = "mqtt[s]://HOST[:PORT] or ws[s]://HOST[:PORT][/PATH]"


# --- broker addresses ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker listens.  ``path`` is only meaningful for WebSockets ("/" or more)."""

    scheme: str  # "mqtt", "mqtts", "ws" or "wss"
    host: str
    port: int
    path: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme in _TLS_SCHEMES

    @property
    def websocket(self) -> bool:
        return self.scheme in _WS_SCHEMES

    @property
    def url(self) -> str:
        """Canonical form, for logs and for handing the address to another process."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path if self.websocket else ''}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``mqtt[s]://host[:port]`` or ``ws[s]://host[:port][/path]``; ValueError says why not.

    Credentials, queries and fragments are rejected rather than ignored: silently dropping a
    password from a URL would make an operator believe it is being used.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"broker URL is empty; expected {_URL_SHAPE}")
    text = url.strip()
    if "://" not in text:
        raise ValueError(f"broker URL {url!r} has no scheme; expected {_URL_SHAPE}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in _OTHER_TLS_NAMES:
        raise ValueError(f"broker URL {url!r}: for TLS write mqtts:// (or wss://)")
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"broker URL {url!r}: unsupported scheme {scheme!r}; use mqtt, mqtts, ws or wss"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"broker URL {url!r}: credentials in the URL are not supported")
    if parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r}: query strings and fragments are not allowed")
    host = parts.hostname
    if not host:
        raise ValueError(f"broker URL {url!r} has no host; expected {_URL_SHAPE}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker URL {url!r}: port must be a number in 1..{_MAX_PORT}") from None
    if port is None:
        port = DEFAULT_PORTS[scheme]
    if not 1 <= port <= _MAX_PORT:
        raise ValueError(f"broker URL {url!r}: port must be in 1..{_MAX_PORT}")
    if scheme not in _WS_SCHEMES:
        if parts.path not in ("", "/"):
            raise ValueError(f"broker URL {url!r}: {scheme}:// URLs take no path (only ws:// does)")
        return BrokerAddress(scheme, host, port)
    return BrokerAddress(scheme, host, port, parts.path or "/")
