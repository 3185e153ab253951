"""``python -m micromine.broker``: run the embedded broker in its own process.

Exists so integration tests (and anyone without the ``micromine`` CLI on PATH) can start a
broker as a real separate process that is killed with a signal, exactly like production.
Only the flags the ``micromine broker`` sub-command also accepts are offered, so the two stay
interchangeable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from micromine.broker.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WS_PORT, BrokerConfig
from micromine.broker.embedded import main_run


def _ws_port(value: str) -> int | None:
    """``--ws-port 0`` (or ``off``) disables the WebSocket listener."""
    if value.lower() in {"0", "off", "none"}:
        return None
    return int(value)


def parse_args(argv: Sequence[str] | None = None) -> BrokerConfig:
    """Turn command-line flags into a validated :class:`BrokerConfig` (exit 2 if invalid)."""
    parser = argparse.ArgumentParser(
        prog="python -m micromine.broker",
        description="Embedded MQTT 3.1.1 broker (amqtt) for micromine devnets and tests.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="MQTT TCP port")
    parser.add_argument(
        "--ws-port",
        type=_ws_port,
        default=DEFAULT_WS_PORT,
        help="MQTT-over-WebSocket port; 0 disables (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        return BrokerConfig(host=args.host, port=args.port, ws_port=args.ws_port)
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and run the broker until SIGINT/SIGTERM."""
    return main_run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
