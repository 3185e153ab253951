"""The test framework: what the tests share, beside the tests themselves.

In the manner of bitcoin's ``test/functional/test_framework``: real processes on
loopback, driven through their real interfaces, and waits on conditions with deadlines
(``micromine.processes.wait_until``), never bare sleeps.

| module | what it holds |
| --- | --- |
| ``brokers`` | real MQTT brokers as processes: the embedded one (amqtt) and Mosquitto |
| ``cluster`` | nodes and agents on a test's broker (``micromine.cluster``); watcher, wallets |
| ``access_helpers`` | brokers with access control on, and MQTT peers that log in to them |
| ``compose_runner`` | docker-compose.yml's services as local processes |
| ``tagged_processes`` | finding (and killing) a test's processes by an environment tag |
| ``protocol_samples`` | one valid sample of every message, for the pure tests |
| ``fuzz_support`` | hypothesis settings and hostile inputs for the fuzz tests |
| ``byzantine_ledger`` | a Byzantine ledger node, run as a script by test_consensus_byzantine.py |

pytest puts ``tests/`` on ``sys.path`` (it has no ``__init__.py``; conftest.py is
there), so a test imports ``from framework.brokers import EmbeddedBroker``.
"""
