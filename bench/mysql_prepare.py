"""Would server-side prepared statements pay on MariaDB?

    python -m bench.mysql_prepare [--iterations N] [--rounds N]

Django's MySQL driver (mysqlclient) binds parameters on the client and sends
text queries; MariaDB can prepare statements, but mysqlclient can't use its
binary protocol. This measures what preparing could save, on a private
MariaDB with the benchmark's tables and data: the ORM statements of the
benchmark's request bodies (three queries of a typical view, and the 8-table
join), captured with their parameters as Django sends them, each run

* as Django runs it: one text query, parameters bound by mysqlclient
  (in Python, at every execution);
* the same text query bound once beforehand: the server's and the
  network's part alone;
* prepared once with SQL ``PREPARE``, then ``EXECUTE ... USING`` the values
  (bound once beforehand too).

It reports client wall time and server CPU (``/proc`` of ``mariadbd``) per
execution, medians of rounds interleaved so that drift hits all alike. SQL
``EXECUTE`` parses its own short statement, which the binary protocol would
not: the saving measured is a slight underestimate of the protocol's.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Any

import django
from django.conf import settings

from .sampler import process_seconds
from .server import DATABASE, mysql_connect


def _configure(url: str) -> None:
    import environ

    settings.configure(
        DATABASES={"default": environ.Env.db_url_config(url)},
        INSTALLED_APPS=["testproject.library", "bench"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def _statements() -> list[tuple[str, str, tuple[Any, ...]]]:
    """(name, SQL with %s, parameters) of each statement of the bodies."""
    from django.db import connection

    from . import cycles

    captured: list[tuple[str, tuple[Any, ...]]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        captured.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)

    rng = random.Random(1)
    with connection.execute_wrapper(capture):
        cycles.three_queries(rng)
        cycles.planning_heavy(rng)
    names = ["get by pk", "select_related join", "aggregate", "8-table join"]
    return [
        (name, sql, params) for name, (sql, params) in zip(names, captured, strict=True)
    ]


def _timed(
    conn: Any, server_pid: int, run: Any, iterations: int
) -> tuple[float, float]:
    """(client wall us, server CPU us) per execution of ``run``."""
    cpu = process_seconds(server_pid) or 0.0
    started = time.perf_counter()
    for _ in range(iterations):
        run()
    wall = time.perf_counter() - started
    server = (process_seconds(server_pid) or 0.0) - cpu
    return wall / iterations * 1e6, server / iterations * 1e6


def measure(
    url: str, server_pid: int, iterations: int, rounds: int
) -> list[dict[str, Any]]:
    conn = mysql_connect(url)
    cursor = conn.cursor()
    rows = []
    for number, (name, sql, params) in enumerate(_statements()):
        literals = ", ".join(conn.literal(value).decode() for value in params)
        cursor.execute(f"PREPARE s{number} FROM %s", [sql.replace("%s", "?")])
        execute = f"EXECUTE s{number}" + (f" USING {literals}" if params else "")

        bound = sql % tuple(conn.literal(value).decode() for value in params)

        def django(sql: str = sql, params: tuple[Any, ...] = params) -> None:
            cursor.execute(sql, params)
            cursor.fetchall()

        def text(bound: str = bound) -> None:
            cursor.execute(bound)
            cursor.fetchall()

        def prepared(execute: str = execute) -> None:
            cursor.execute(execute)
            cursor.fetchall()

        runs = {"django": django, "text": text, "prepared": prepared}
        samples: dict[str, list[tuple[float, float]]] = {kind: [] for kind in runs}
        for round_number in range(rounds):
            order = list(runs.items())
            shift = round_number % len(order)
            for kind, run in order[shift:] + order[:shift]:
                run()  # warm
                samples[kind].append(_timed(conn, server_pid, run, iterations))
        row: dict[str, Any] = {"statement": name}
        for kind, values in samples.items():
            row[f"{kind}_wall_us"] = statistics.median(v[0] for v in values)
            row[f"{kind}_server_us"] = statistics.median(v[1] for v in values)
        rows.append(row)
    conn.close()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'':<20} {'client wall us per execution':^30}"
        f" {'server CPU us per execution':^30}",
        f"{'statement':<20} {'django':>7} {'text':>7} {'prep':>7} {'ratio':>6}"
        f" {'django':>7} {'text':>7} {'prep':>7} {'ratio':>6}",
    ]
    for row in rows:
        cells = [row["statement"].ljust(20)]
        for measure in ("wall", "server"):
            values = [row[f"{kind}_{measure}_us"] for kind in KINDS]
            cells += [f"{value:>7.0f}" for value in values]
            cells.append(f"{values[2] / max(values[1], 1e-9):>6.2f}")
        lines.append(" ".join(cells))
    lines.append("ratio: prepared over text bound beforehand")
    return "\n".join(lines)


KINDS = ("django", "text", "prepared")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mysql_prepare")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    from .server import provision_mysql

    with provision_mysql() as target:
        _configure(target.url)
        from . import fixtures

        print("creating the benchmark tables and data...", flush=True)
        fixtures.create()
        assert target.server_pid is not None
        rows = measure(target.url, target.server_pid, args.iterations, args.rounds)
    print(f"{args.rounds} rounds of {args.iterations} executions, medians ({DATABASE})")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
