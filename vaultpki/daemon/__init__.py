"""The sync daemon: one pass (``sync_pass``), the loop (``sync_loop``), the post-renewal actions (``actions``:
reloading the database with ``reload``, ``reload_signal``, ``reload_command``, ``processes``), the verify probe,
metrics and the clock."""
