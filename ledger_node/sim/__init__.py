"""Deterministic simulation of the shipped ledger node over a faulty network.

    run_seed(seed, SimConfig(...)) -> SimResult   one run; the seed names it exactly
    python -m micromine.ledger_node.sim --seeds N  many runs (see __main__.py)

Each run starts n real ledger nodes (node.LedgerNode: SQLite store, intake, LedgerCore,
Replica, ConsensusCore, all as shipped), real device agents (AgentCore) and a wallet,
connected by an in-memory broker, on a virtual clock, with seeded faults: message loss,
duplication, delay and partitions before GST, crashes part-way through an event,
several restarts, power loss (what was not synced is lost), silent nodes, and a
Byzantine validator that comes in through the node's own seam (core.ReplicaFactory).
Only the network, the disk and the clock are simulated.

    chain.py      the fixed cast: keys, genesis, the transfers a run submits
    faults.py     scenarios, the fault plan of a seed, the network
    broker.py     topic routing and retained messages
    disk.py       the SQLite database across crashes and power cuts
    hosts.py      the processes: SimLedger, SimDevice, SimWallet
    byzantine.py  ByzantineReplica, the lying consensus adapter
    check.py      the invariants
    world.py      the event loop of one run
See docs/CONSENSUS.md ("How each invariant is tested") for the scenario mix.
"""

from micromine.ledger_node.sim.world import SimConfig, SimResult, run_seed

__all__ = ["SimConfig", "SimResult", "run_seed"]
