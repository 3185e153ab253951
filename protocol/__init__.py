"""The micromine wire protocol: pure message types, canonical CBOR, signatures, topics.

Nothing in this package touches a socket, a file or a clock: it takes values and bytes
and returns values and bytes, so the ledger, the agent, the simulator and a firmware
author's test harness all share exactly one definition of the protocol.
"""

PROTOCOL_VERSION = 1
