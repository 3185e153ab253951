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

from micromine.broker.config import BrokerConfig, add_broker_arguments, config_from_args
from micromine.broker.embedded import main_run
from micromine.common.signals import until_stopped
from micromine.protocol.genesis import GenesisError


def parse_args(argv: Sequence[str] | None = None) -> BrokerConfig:
    """Turn command-line flags into a validated :class:`BrokerConfig` (exit 2 if invalid)."""
    parser = argparse.ArgumentParser(
        prog="python -m micromine.broker",
        description="Embedded MQTT 3.1.1 broker (amqtt) for micromine devnets and tests.",
    )
    add_broker_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except (ValueError, GenesisError) as exc:
        parser.error(str(exc))


@until_stopped
def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and run the broker until SIGINT/SIGTERM."""
    return main_run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
