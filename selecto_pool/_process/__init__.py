"""Layer 4: process-wide state: the registry of pools, exit, the control channel."""
