"""Layer 1: settings parsed and validated once, into frozen dataclasses (no I/O)."""
