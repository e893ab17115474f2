"""What an extraction run is: the attributes that identify it, and the shards it is cut into.

A shard is a fixed set of image keys. The sorted unique keys are cut where a key's hash says so
(content-defined boundaries, on average `shard_size` keys apart, at most 4x that), so a shard's
contents, and its identity (a digest of its keys and their image sources), depend only on its own
images: removing a row, renaming the manifest or adding images elsewhere leaves finished shards valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ..cache.parts import ShardSpec

IDENTITY_KEYS = ("model_fingerprint", "store_vision", "compute_dtype", "preprocessing", "image_decoding",
                 "image_size", "image_mean", "image_std", "image_resample", "max_text_length", "dataset_name",
                 "dataset_digest", "store_dtype", "shard_size", "features", "mm_store", "mm_prompt")
"""An existing file must agree on these with the run asked for."""
PARTS_KEYS = tuple(k for k in IDENTITY_KEYS if k not in ("dataset_name", "dataset_digest", "shard_size"))
"""Shards in OUT.parts/ are reused by a run that agrees on these: the dataset may change around them."""
MAX_SHARD_FACTOR = 4


def _ends_shard(key: str, shard_size: int) -> bool:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") % shard_size == 0


def plan_shards(keys: list[str], sources: Mapping[str, str], shard_size: int) -> list[ShardSpec]:
    """Cut the sorted keys into shards at content-defined boundaries; `sources` (key -> what the image
    is made from: its path, plus the augmentation) enters each shard's digest."""
    plan, current = [], []

    def close() -> None:
        h = hashlib.sha256()
        for k in current:
            h.update(f"{k}\x1f{sources[k]}\x1e".encode())
        plan.append(ShardSpec(sum(len(s.keys) for s in plan), tuple(current), h.hexdigest()[:20]))

    for key in sorted(keys):
        current.append(key)
        if _ends_shard(key, shard_size) or len(current) >= MAX_SHARD_FACTOR * shard_size:
            close()
            current = []
    if current:
        close()
    return plan
