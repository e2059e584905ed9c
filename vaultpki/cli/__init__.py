"""The command line: parses, calls the core and the adapters, prints."""
