"""The pure core: plans and judges, never touches the world (no I/O imports; tests/test_architecture.py)."""
