"""A worker process with the ORM's pool and an async direct pool, for the
operations tests: ``poolstats`` and ``clearcache`` must see the async pool.

Run with DATABASE_URL set. It opens the ORM's pool of ``default`` (whose
control connection answers the commands) and, in an event loop,
``astart_pool(name="async-worker")`` whose two connections prepare a
statement each. Every 0.2 s it prints (one JSON line) how many statements
each connection of the async pool has prepared on the server.
"""

from __future__ import annotations

import asyncio
import json
import os

import django

NAME = "async-worker"
COUNT_PREPARED = "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql"


async def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    django.setup()
    from django.db import connections

    import selecto_pool as sp

    await asyncio.to_thread(lambda: sp.get_pool("default").wait(timeout=10))
    pool = await sp.astart_pool(
        os.environ["DATABASE_URL"],
        name=NAME,
        pool_size=2,
        max_overflow=0,
        prepare_threshold=0,
    )
    await pool.wait(timeout=10)
    held = [await sp.acheckout(pool) for _ in range(2)]
    for conn in held:
        await conn.execute("SELECT %s::int", [1])  # prepared at once
    while True:
        counts = []
        for conn in held:
            cursor = await conn.execute(COUNT_PREPARED, prepare=False)
            counts.append((await cursor.fetchone() or [0])[0])
        for conn in held:
            await sp.acheckin(pool, conn)
        print(json.dumps({"prepared": counts}), flush=True)
        await asyncio.sleep(0.2)
        held = [await sp.acheckout(pool) for _ in range(2)]
        await asyncio.to_thread(connections.close_all)


if __name__ == "__main__":
    asyncio.run(main())
