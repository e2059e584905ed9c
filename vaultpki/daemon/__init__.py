"""The sync daemon: one pass (``sync_pass``), the loop (``sync_loop``), reloading the database (``reload``,
``reload_signal``, ``reload_command``, ``processes``), the verify probe, metrics and the clock."""
