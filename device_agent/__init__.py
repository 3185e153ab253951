"""The device agent: judges signed transaction batches for ledger nodes over MQTT.

``core`` is the pure protocol logic; ``service`` wraps it in I/O.  The agent stays light
enough for a Raspberry Pi: paho-mqtt, cbor2, PyNaCl and structlog only (no broker code).
The CLI wires ``micromine agent`` with :func:`add_agent_arguments` and :func:`run_agent`.
"""

from micromine.device_agent.cli import add_agent_arguments, run_agent

__all__ = ["add_agent_arguments", "run_agent"]
