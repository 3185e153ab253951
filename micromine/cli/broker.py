"""``micromine broker``: the embedded MQTT broker (amqtt); ``micromine broker
mosquitto-config``: a Mosquitto configuration for the same access policy."""

import argparse
import sys

from micromine.common.signals import until_stopped


def add_to(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from micromine.broker.config import add_broker_arguments

    broker = commands.add_parser("broker", help="run the embedded MQTT broker (amqtt)")
    add_broker_arguments(broker)
    broker.set_defaults(run=cmd_broker)
    broker_commands = broker.add_subparsers(metavar="ACTION")
    mosquitto = broker_commands.add_parser(
        "mosquitto-config", help="write a Mosquitto configuration for the same access policy"
    )
    from micromine.broker.mosquitto import add_mosquitto_arguments

    add_mosquitto_arguments(mosquitto)
    mosquitto.set_defaults(run=cmd_mosquitto_config)


@until_stopped
def cmd_broker(args: argparse.Namespace) -> int:
    from micromine.broker.config import config_from_args
    from micromine.protocol.genesis import GenesisError

    try:
        config = config_from_args(args)
    except (ValueError, GenesisError) as exc:
        print(f"micromine broker: {exc}", file=sys.stderr)
        return 2
    try:
        from micromine.broker.embedded import main_run
    except ImportError:
        print("micromine broker: needs the broker extra: pip install 'micromine[broker]'",
              file=sys.stderr)  # fmt: skip
        return 2
    return main_run(config)


def cmd_mosquitto_config(args: argparse.Namespace) -> int:
    from micromine.broker.mosquitto import run_mosquitto_config

    return run_mosquitto_config(args)
