"""The feature cache: its HDF5 format, in one file or as a parts folder, and the views heads read.

    file.py       format v1: CacheWriter, FeatureCache (lazy reader), FORMAT_VERSION, MATCH_KEYS
    parts.py      the parts folder extraction writes (shards, manifest, checksums)
    merged.py     the single file made from it: `merge` after the fact, `MergedWriter` shard by shard
    sharded.py    a finished parts folder read in place with the single file's API
    access.py     open_cache (either form), verify, info_text
    views.py      per-question feature views (itc, pooled, full, sim, image; mm, mm_pooled), factorised
    pooling.py    the mean over the query tokens (pooled views) and the dataset writers store it in
    synthetic.py  caches of synthetic features, for tests and benchmarks of the heads

Only h5py and numpy: reading a cache never imports torch or transformers (an import-linter contract).
"""

from .access import info_text, open_cache, verify
from .file import FORMAT_VERSION, MATCH_KEYS, CacheWriter, FeatureCache

__all__ = ["FORMAT_VERSION", "MATCH_KEYS", "CacheWriter", "FeatureCache", "info_text", "open_cache", "verify"]
