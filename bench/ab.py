"""Client CPU per operation, configurations side by side: ``python -m bench --ab``.

Separate processes differ by 15-20 % in speed on a shared or virtual
machine, more than the pools differ. Here every configuration is an alias of
one process, and their operations run in interleaved rounds (ABCD, DCBA,
...), timed with ``time.process_time()``: the client's CPU only, so the
server's share and waiting are left out. The operations:

- ``checkout``: ``ensure_connection()`` then ``close_if_unusable_or_obsolete()``,
  which is how Django ends a request: a checkout and a checkin through Django;
- ``pool``: the pool's own ``getconn()`` + ``putconn()``, for the configurations
  that have one (selecto-pool's from ``selecto_pool.get_pool()``, Django's from
  ``DatabaseWrapper.pool``). ``checkout`` less ``pool`` is Django's share;
- ``three_queries``: the request body of ``bench.cycles``, then the checkin.

Only public API is used, so that it outlives refactorings of selecto_pool's
internals.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

ROUNDS = 7
#: How many of each operation make one timed round.
OPERATIONS: dict[str, int] = {"checkout": 20_000, "pool": 20_000, "three_queries": 500}


def _operations(alias: str, rng: random.Random) -> dict[str, Callable[[], None]]:
    """What to time on ``alias``, each a function (run after django.setup())."""
    from django.db import connections

    from . import cycles
    from .configs import CONFIGS

    wrapper = connections[alias]

    def checkout() -> None:
        wrapper.ensure_connection()
        wrapper.close_if_unusable_or_obsolete()

    def three_queries() -> None:
        cycles.three_queries(rng, alias)
        wrapper.close_if_unusable_or_obsolete()

    found = {"checkout": checkout, "three_queries": three_queries}
    checkout()  # opens the pool, if there is one
    pool: Any
    if CONFIGS[alias].selecto:
        import selecto_pool

        pool = selecto_pool.get_pool(alias)
    else:
        pool = getattr(wrapper, "pool", None)  # None: not Django's pool
    if pool is not None:
        found["pool"] = lambda: pool.putconn(pool.getconn())
    return found


def measure(configs: list[str]) -> dict[str, dict[str, list[float]]]:
    """{operation: {config: [us per operation, one per round]}}, in one process.

    Each configuration is the alias of its name (see ``bench.worker.configure``).
    """
    rng = random.Random(1)
    operations = {name: _operations(name, rng) for name in configs}
    for name in configs:  # warm up: pools full, statements prepared
        for operation, count in OPERATIONS.items():
            if operation in operations[name]:
                for _ in range(count // 10):
                    operations[name][operation]()
    samples: dict[str, dict[str, list[float]]] = {
        operation: {name: [] for name in configs if operation in operations[name]}
        for operation in OPERATIONS
    }
    for round_number in range(ROUNDS):
        order = configs if round_number % 2 == 0 else configs[::-1]
        for operation, count in OPERATIONS.items():
            for name in order:
                if operation not in operations[name]:
                    continue
                run = operations[name][operation]
                started = time.process_time()
                for _ in range(count):
                    run()
                elapsed = time.process_time() - started
                samples[operation][name].append(round(elapsed / count * 1e6, 2))
    return samples


def table(samples: dict[str, dict[str, list[float]]]) -> str:
    lines = [f"client CPU per operation, median of {ROUNDS} interleaved rounds"]
    for operation, by_config in samples.items():
        if not by_config:
            continue
        reference = statistics.median(next(iter(by_config.values())))
        for name, values in by_config.items():
            median = statistics.median(values)
            lines.append(
                f"  {operation:14} {name:16} {median:9.2f} us "
                f"(min {min(values):9.2f})  x first {median / reference:5.2f}"
            )
    return "\n".join(lines)
