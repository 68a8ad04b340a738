"""A process that exits with connections still checked out (exit_timeout tests).

Run with DATABASE_URL set (its query string may carry ``exit_timeout``), and
one argument:

* ``idle``: an ORM query in the main thread, whose connection is still held;
* ``held``: and a daemon thread holding a connection it never gives back;
* ``finishing``: and a daemon thread in a transaction, which commits a row
  into ``exit_ledger`` 0.5 s after the main thread began to exit.

It prints two lines, each a word and a ``time.time()``: ``exiting`` when it
begins to exit, ``stopped`` when the pools' exit handler has returned (so a
test can tell the pool's wait from the interpreter's teardown, which takes
seconds on a loaded machine).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time

import django


def main(mode: str) -> None:
    # atexit runs its callbacks last in, first out: registered before any pool
    # exists, this one runs after the pools' own.
    atexit.register(lambda: print("stopped", time.time(), flush=True))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    django.setup()
    from django.db import connection

    from selecto_pool import get_pool

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    pool = get_pool("default")
    ready = threading.Event()
    exiting = threading.Event()

    def hold_forever() -> None:
        pool.getconn()
        ready.set()
        time.sleep(3600)

    def finish_late() -> None:
        conn = pool.getconn()
        try:
            with conn.transaction():
                conn.execute("INSERT INTO exit_ledger VALUES ('committed at exit')")
                ready.set()
                # 0.5 s after "exiting" was printed, however late this thread
                # gets the CPU back.
                exiting.wait(10)
                time.sleep(0.5)
        finally:
            pool.putconn(conn)

    if mode != "idle":
        target = hold_forever if mode == "held" else finish_late
        threading.Thread(target=target, daemon=True).start()
        ready.wait(10)
    print("exiting", time.time(), flush=True)
    exiting.set()


if __name__ == "__main__":
    main(sys.argv[1])
