"""Extraction: each unique image through the frozen ViT + Q-Former once, each distinct question once,
into the feature cache.

    options.py    the public `extract` and its four groups of settings (Compute, Storage, Spread, Features)
    run.py        the run: identity checks, resume, texts, shards, merge (`extract_with`, `merge_parts`)
    guards.py     what a run checks before it writes: the output folder, locks, storable text
    plan.py       what identifies a run, and the shards it is cut into
    pipeline.py   feeding the device: decode workers, uint8 batches, background shard writes, auto sizes
    engines/      who computes the shards: this process (local) or Ray actors
"""

from .options import Compute, Features, Spread, Storage, extract
from .run import ExtractReport, merge_parts

__all__ = ["Compute", "ExtractReport", "Features", "Spread", "Storage", "extract", "merge_parts"]
