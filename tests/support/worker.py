"""A worker process for the operations tests: ORM queries in a loop.

Run with DATABASE_URL set. Every 0.2 s it does a query, then prints (one JSON
line) how many prepared statements each connection of its pool holds, read
from the server's ``pg_prepared_statements`` on each connection.
"""

from __future__ import annotations

import json
import os
import time

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    django.setup()
    from django.db import connections

    from selecto_pool import get_pool
    from testproject.library.models import Author

    pool = get_pool("default")
    pool.wait(timeout=10)  # all connections open, so none is added later
    size = pool.options.pool_size
    held = [pool.getconn() for _ in range(size)]
    for number, conn in enumerate(held):
        # SQL-level PREPARE: Django's connections have psycopg's preparing off.
        conn.execute(f"PREPARE selecto_probe_{number} AS SELECT 1")
    for conn in held:
        pool.putconn(conn)
    while True:
        Author.objects.count()
        connections.close_all()
        held = [pool.getconn() for _ in range(size)]
        counts = [
            conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
            for conn in held
        ]
        for conn in held:
            pool.putconn(conn)
        print(json.dumps({"prepared": counts}), flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
