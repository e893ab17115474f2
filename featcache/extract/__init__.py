"""Extraction: each unique image through the frozen ViT + Q-Former once, each distinct question once,
into the feature cache.

    run.py        the run: identity checks, locks, resume, texts, shards, merge (`extract`, `merge_parts`)
    plan.py       what identifies a run, and the shards it is cut into
    pipeline.py   feeding the device: decode workers, uint8 batches, background shard writes, auto sizes
    engines/      who computes the shards: this process (local) or Ray actors
"""

from .run import ExtractReport, extract, merge_parts

__all__ = ["ExtractReport", "extract", "merge_parts"]
