"""Engines run a list of shards: `local` (this process) and `ray` (actors across GPUs and nodes).

Every engine writes finished shards into the same parts folder (featcache.shards); the driver merges.
"""
