"""``ENGINE: "selecto_pool.backend.prometheus"``: the pool, with django-prometheus's
query metrics (``django_db_execute_total``...)."""
