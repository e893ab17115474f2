"""The package version, recorded in every file featcache writes (a leaf: imports nothing)."""

__version__ = "0.1.0"
