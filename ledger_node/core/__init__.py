"""One ledger node's own decisions: admission, dispatch to devices, the tally of their
verdicts, receipts, and the glue to consensus (``replica.Replica``).

``ledger.LedgerCore`` is a deterministic state machine: events in, actions out, time and
randomness given.  The process around it is ``ledger_node/node.py`` and ``service.py``.
"""
