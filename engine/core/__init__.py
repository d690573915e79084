"""The pure core: events, state machines, decisions and projections.

Nothing in this package does I/O, reads a clock or draws random ids; time, ids and
randomness come in as parameters. `tests/core/test_purity.py` checks the imports.
"""
