"""The sync daemon: one pass, the loop, reload, probe, metrics, clock."""
