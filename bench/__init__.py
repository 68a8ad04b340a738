"""On-demand benchmarks: selecto-pool against Django's stock options and others.

Run with ``python3 dev.py bench [--quick]``; never part of the test suite or
CI, because the figures only mean something on a quiet machine. The package is
also a Django app (``bench``) holding the models of the planning-heavy query.
See docs/benchmarks.md.
"""
