"""The workloads: what each thread of a run repeats, with how many threads.

Pooled configurations all get the same number of connections, except that
selecto-pool gets half of them where a target says "with half the server
connections" (the 8-thread request cycle).
"""

from __future__ import annotations

from dataclasses import dataclass

from .configs import Config


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    #: The function of ``bench.cycles.BODIES`` run inside each request.
    body: str
    threads: int
    #: Connections of every pooled configuration.
    pool_size: int
    #: selecto-pool gets ``pool_size // 2`` (the "half the connections" target).
    selecto_half: bool = False

    def pool_size_for(self, config: Config) -> int:
        if config.selecto and self.selecto_half:
            return max(self.pool_size // 2, 1)
        return self.pool_size


WORKLOADS: dict[str, Workload] = {
    workload.name: workload
    for workload in (
        Workload(
            "request-8t",
            "request cycle, 3 ORM queries, 8 threads (selecto: 4 connections)",
            body="three_queries",
            threads=8,
            pool_size=8,
            selecto_half=True,
        ),
        Workload(
            "request-1t",
            "request cycle, 3 ORM queries, 1 thread",
            body="three_queries",
            threads=1,
            pool_size=4,
        ),
        Workload(
            "planning",
            "request cycle, one 8-table select_related query, 1 thread",
            body="planning_heavy",
            threads=1,
            pool_size=4,
        ),
        Workload(
            "contention",
            "request cycle, 3 ORM queries, 32 threads on 4 connections",
            body="three_queries",
            threads=32,
            pool_size=4,
        ),
        Workload(
            "checkout",
            "request cycle with ensure_connection() only (checkout + checkin)",
            body="checkout_only",
            threads=1,
            pool_size=4,
        ),
    )
}
