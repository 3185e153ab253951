"""Agreement among the validators on each block: Tendermint's Algorithm 1 as a pure state
machine (``tendermint.ConsensusCore``), its message bookkeeping and certificates.

Knows blocks only as values with a hash and a validity the app reports; nothing here
knows accounts, devices or transport.  See docs/CONSENSUS.md.
"""
