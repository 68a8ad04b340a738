"""What the tests share besides fixtures, as psycopg's ``tests/pool/fix_pool.py``.

Fixtures live in ``tests/conftest.py``; every helper they or a test module
need lives here, so that no test module imports from ``conftest`` or from
another test module:

* ``database``: reaching the test database around the pool (connection
  arguments, URLs, an ``Observer``), ORM wrappers built outside ``DATABASES``;
* ``clients``: client threads, their outcomes, bounded waits;
* ``postgres``: the servers the session runs against, when one accepts,
  stops or shuts down;
* ``hostile``: a role with LOGIN and nothing else, aliases added at run time,
  waiting for this process's control responder;
* ``statements``: every connection of a pool, a backend's server memory;
* ``processes``: running the demo project in processes of its own, finding
  their children, and a function in a forked child (``report_from_fork``);
* ``proxy``: a TCP proxy that injects network faults;
* ``pgbouncer``: Debian's PgBouncer in front of a server;
* ``aio``: an async pool for a block, waits in a loop, the event loop's lag,
  an event loop in a thread of its own (``loop_thread``);
* ``worker`` and ``exiting``: programs those processes run
  (``python -m tests.support.worker``);
* ``celery_app`` and ``celery_settings``: a Celery app needing no service, and
  the Django settings of its prefork worker.
"""
