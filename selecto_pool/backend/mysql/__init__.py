"""The MySQL and MariaDB ENGINE: ``"selecto_pool.backend.mysql"``."""
