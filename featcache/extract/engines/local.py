"""The local engine: every shard of a list through one process's decode -> forward -> write pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...cache.parts import ShardSpec, shard_done
from ...errors import ExtractError
from ..pipeline import DecodedImages, StoredVision, collate
from ..writer import ShardWriter


@dataclass
class ShardJob:
    """What every engine needs to compute shards, besides the model: plain data, cheap to ship to workers."""

    dataset: object
    keys: list[str]
    parts: Path
    attrs: dict
    batch_size: int
    workers: int
    store_dtype: str
    store_vision: bool
    skip_bad: bool
    pairs: object = None
    """A featcache.extract.pairs.PairTable: question-conditioned states per (image, question) pair as well."""
    mm_store: str = "full"
    vision_source: str | None = None
    """A --store-vision cache whose ViT states replace decoding and the ViT (extract --from-vision)."""


def run_shards(job: ShardJob, todo: list[ShardSpec], backbone, progress: bool = False, done: int = 0,
               total: int | None = None, waits: dict[str, float] | None = None,
               merge_into: tuple[Path, str | None] | None = None, merged: dict | None = None,
               writer_process: bool | None = None) -> int:
    """Decode -> forward -> write every shard of `todo`; returns the number of images encoded.

    `waits`, if given, receives the seconds the feeding thread spent blocked on decoded batches
    ("decode_wait": the decode workers are the bottleneck) and on the copy-back/write thread
    ("writer_wait": the device or the disk is). With `merge_into` (out, compression) every shard also goes
    into the final file as it finishes (featcache.extract.writer), and `merged["failed"]` receives (failed
    image keys, failed question rows) once the file is in place."""
    dataset, keys, parts, attrs = job.dataset, job.keys, job.parts, job.attrs
    batch_size, workers, store_dtype, store_vision = job.batch_size, job.workers, job.store_dtype, job.store_vision
    total = total if total is not None else sum(len(s.keys) for s in todo)
    batches = [list(range(b, min(b + batch_size, s.stop))) for s in todo for b in range(s.start, s.stop, batch_size)]
    cuda = backbone.device.type == "cuda"
    if job.vision_source:
        loader = StoredVision(job.vision_source, keys, batches)
    else:
        loader = torch.utils.data.DataLoader(
            DecodedImages(dataset, keys, backbone.preprocessor), batch_sampler=batches, num_workers=workers,
            collate_fn=collate, pin_memory=cuda, prefetch_factor=4 if workers > 0 else None)
    batches_in = iter(loader)  # decode workers start now: their first batches overlap the writer's start
    pairs = job.pairs
    pair_shapes = {} if pairs is None else {
        "mm_pooled": (backbone.dims["query"],)} if job.mm_store == "pooled" else {
        "mm_query": (backbone.dims["query_tokens"], backbone.dims["query"])}
    writer = ShardWriter(todo, parts, attrs, store_dtype, backbone.image_feature_shapes(store_vision), pairs=pairs,
                         pair_shapes=pair_shapes, merge_into=merge_into, process=writer_process, on_gpu=cuda)
    encode = backbone.encode_vision if job.vision_source else backbone.encode_images
    bar = tqdm(total=total, initial=done, unit="img", desc="images", disable=not progress, dynamic_ncols=True)
    computed = 0
    waits = waits if waits is not None else {}
    waits.update(decode_wait=0.0, writer_wait=0.0)
    try:
        while True:
            t = time.perf_counter()
            batch = next(batches_in, None)
            waits["decode_wait"] += time.perf_counter() - t
            if batch is None:
                break
            index, pixels, good, errors = batch
            for i, err in zip(index, errors):
                if err and not job.skip_bad:
                    raise ExtractError(f"{err}\nImage {keys[i]!r} cannot be used; fix or remove it, or pass "
                                       f"--skip-bad to record it as failed. Finished work is kept in {parts}; "
                                       f"the same command resumes.")
            pair_rows, mm = None, None
            if pairs is not None:  # every question of the batch's good images, from the same ViT states
                pair_rows, owner = pairs.of_images([index[k] for k in good])
                mm = (owner, pairs.text[pair_rows].tolist(), job.mm_store)
            feats = encode(pixels, keep_vision=store_vision, to_numpy=False, pairs=mm) if good else {}
            t = time.perf_counter()
            writer.submit(index, good, errors, feats, pair_rows)  # copy back + write in the background
            waits["writer_wait"] += time.perf_counter() - t
            computed += len(good)
            bar.update(len(index))
        bar.close()
        failed = writer.close(finish=True)
        if merged is not None:
            merged["failed"] = failed
    except KeyboardInterrupt:
        _close_quietly(writer)
        saved = sum(shard_done(parts, s) for s in todo)
        raise ExtractError(f"interrupted: {saved} more shards are saved in {parts}; run the same command again "
                           f"to continue") from None
    except BaseException:
        if not writer.closed:
            _close_quietly(writer)  # keep the shards that were finished before the error
        raise
    finally:
        bar.close()
    return computed


def _close_quietly(writer) -> None:
    """Stop the writer after an error, keeping the shards it committed; the first error is the one reported (a
    writer that already failed would otherwise replace it with its own consequence)."""
    try:
        writer.close(finish=False)
    except Exception:  # noqa: BLE001
        pass
