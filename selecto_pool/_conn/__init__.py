"""Layer 2: one psycopg connection: liveness, statement cache, reset, outages."""
