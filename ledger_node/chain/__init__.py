"""The chain's rules: what a valid block is and what it does to the state.

Pure and identical on every node (proposer and validators run the same
``transition.state_transition``); no clock, randomness or I/O.  See docs/ARCHITECTURE.md.
"""
