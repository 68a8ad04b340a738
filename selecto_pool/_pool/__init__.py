"""Layer 3: one pool, on psycopg_pool; knows nothing of Django's ORM."""
