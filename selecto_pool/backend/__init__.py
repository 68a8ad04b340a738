"""The Django database backend: ``ENGINE: "selecto_pool.backend"``."""
