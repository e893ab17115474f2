"""Engines run a list of shards: `local` (this process) and `ray` (actors across GPUs and nodes).

Every engine writes finished shards into the same parts folder (featcache.cache.parts); the driver
merges. A new engine (another scheduler) goes here, beside these two, and is chosen in run.py.
"""
