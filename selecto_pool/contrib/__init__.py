"""Integrations with other Django packages, each imported only when a project
names it (so none of those packages is a dependency of selecto-pool)."""
