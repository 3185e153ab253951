"""What every micromine process shares below its own logic: the MQTT link and broker
URLs, key files and genesis files, and logging.

The broker, the device agent and the ledger node import this; it imports only
``micromine.protocol`` (import-linter's contracts in pyproject.toml keep it so).  See
docs/ARCHITECTURE.md.
"""
