"""The `featcache` commands, one module per group, registered on the entry point in cli.py. They parse
arguments, call the library and print; every decision lives in the library."""
