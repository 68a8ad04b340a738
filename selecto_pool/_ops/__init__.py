"""Layer 6: what commands, views and checks share: reports, metrics, signals."""
