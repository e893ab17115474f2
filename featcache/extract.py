"""One extraction run: each unique image through ViT + Q-Former once, each distinct question once.

Work is committed in shards under `OUT.parts/` by atomic renames, so Ctrl-C or kill -9 loses at
most the shard in flight; running the same command again skips finished shards. Shards have fixed
image ranges and batches never cross them, so a resumed run computes exactly the batches an
uninterrupted one would and the assembled file is the same.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import DEFAULT_MAX_TEXT_LENGTH, DEFAULT_MODEL, Backbone, load_backbone
from .cache import CacheWriter, FeatureCache
from .datasets import VQADataset
from .errors import CacheFormatError, ExtractError
from .pipeline import DecodedImages, ShardWriter, auto_batch_size, auto_workers, collate, save_atomic

IDENTITY_KEYS = ("model_fingerprint", "store_vision", "compute_dtype", "preprocessing", "image_decoding",
                 "image_size", "image_mean", "image_std", "image_resample", "max_text_length", "dataset_name",
                 "dataset_digest", "store_dtype", "shard_size")
"""A resumed run, or an existing file, must agree on these with the run asked for."""


@dataclass
class ExtractReport:
    path: Path
    n_images: int
    n_questions: int
    n_texts: int
    images_computed: int
    seconds: float
    failed_images: list[str] = field(default_factory=list)
    failed_questions: list[int] = field(default_factory=list)
    resumed: bool = False
    already_complete: bool = False
    truncated_questions: int = 0
    """Questions longer than max_text_length tokens (cut; flagged in /questions/truncated)."""
    truncated_examples: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images_computed / self.seconds if self.seconds > 0 else 0.0


def _check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ExtractError(f"cannot write {out}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK):
        raise ExtractError(f"cannot write {out}: folder {parent} is not writable (choose another --out)")
    if out.is_dir():
        raise ExtractError(f"cannot write {out}: it is a folder; --out must be a file path such as {out}/cache.h5")


def _mismatch(a: dict, b: dict) -> list[str]:
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in IDENTITY_KEYS
            if json.dumps(a.get(k)) != json.dumps(b.get(k))]


def extract(dataset: VQADataset, out: str | Path, model: str | Backbone = DEFAULT_MODEL, device: str = "auto",
            dtype: str | None = None, batch_size: int | str = 32, workers: int | str = "auto",
            store_dtype: str = "float16",
            compression: str | None = None, shard_size: int = 256, text_batch_size: int = 128,
            overwrite: bool = False, skip_bad: bool = False, store_vision: bool = False,
            max_text_length: int = DEFAULT_MAX_TEXT_LENGTH, compile: bool = False, jpeg_draft: bool = False,
            progress: bool = True) -> ExtractReport:
    """Extract features of `dataset` into the HDF5 file `out` (see docs/FORMAT.md).

    batch_size and workers may be "auto" (see featcache.pipeline); `compile` runs the ViT through
    torch.compile (worth it on a GPU for large runs: it compiles once per batch shape)."""
    started = time.perf_counter()
    out = Path(out)
    _check_writable(out)
    if store_dtype not in ("float16", "float32"):
        raise ExtractError(f"--store-dtype must be float16 or float32, got {store_dtype!r}")
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1) or shard_size < 1:
        raise ExtractError(f"--batch-size must be a positive integer or auto, got {batch_size!r}")
    if workers != "auto" and (not isinstance(workers, int) or workers < 0):
        raise ExtractError(f"--workers must be 0 or more, or auto, got {workers!r}")
    if max_text_length < 2:
        raise ExtractError(f"--max-text-length must be at least 2 tokens, got {max_text_length}")
    backbone = model if isinstance(model, Backbone) else load_backbone(model, device=device, dtype=dtype,
                                                                      max_text_length=max_text_length)
    backbone.preprocessor.jpeg_draft = jpeg_draft  # a decoding choice of this run, recorded in image_decoding
    if compile:
        backbone.compile_vision()
    if workers == "auto":
        workers = auto_workers(backbone.device)
    if batch_size == "auto":
        batch_size = auto_batch_size(backbone, store_vision)
    shard_size = max(batch_size, (shard_size // batch_size) * batch_size)  # batches never cross shards
    run = {**backbone.provenance(), "dataset_name": dataset.name, "dataset_source": dataset.source,
           "dataset_digest": dataset.digest(), "store_dtype": store_dtype, "shard_size": shard_size,
           "store_vision": store_vision,
           "compression": compression or "none"}

    keys = dataset.images()
    n_q = len(dataset.questions)
    if out.exists() and not overwrite:
        try:
            with FeatureCache(out) as existing:
                diff = _mismatch(existing.attrs, run)
        except CacheFormatError as exc:
            raise ExtractError(f"{out} exists and is not a readable cache ({exc}); pass --overwrite to replace it")
        if diff:
            raise ExtractError(f"{out} exists and was made differently:\n  " + "\n  ".join(diff)
                               + "\nPass --overwrite to replace it, or choose another --out.")
        return ExtractReport(out, len(keys), n_q, 0, 0, time.perf_counter() - started, already_complete=True)

    parts = out.with_name(out.name + ".parts")
    state_file = parts / "run.json"
    resumed = False
    if parts.exists() and overwrite:
        shutil.rmtree(parts)
    if state_file.exists():
        prior = json.loads(state_file.read_text())
        diff = _mismatch(prior, run)
        if diff:
            raise ExtractError(f"an unfinished run for {out} ({parts}) used other settings:\n  " + "\n  ".join(diff)
                               + "\nRe-run with its settings to finish it, or pass --overwrite to start afresh.")
        run["created"] = prior["created"]
        resumed = True
    else:
        run["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        parts.mkdir(exist_ok=True)
        state_file.write_text(json.dumps(run, indent=1))

    # -- validate before spending compute ----------------------------------------------------------
    q_errors = [""] * n_q
    for i, q in enumerate(dataset.questions):
        if not q.text.strip():
            if not skip_bad:
                raise ExtractError(f"question row {i} (image {q.image!r}) is empty; fix the dataset or pass "
                                   f"--skip-bad to record it as failed and go on")
            q_errors[i] = "empty question"
    missing = dataset.missing_images()
    if missing and not skip_bad:
        shown = ", ".join(f"{k!r} -> {dataset.image_paths[k]}" for k in missing[:5])
        raise ExtractError(f"{len(missing)} image file(s) not found, e.g. {shown}. Fix the paths (--images DIR "
                           f"sets the folder for relative names) or pass --skip-bad to record them as failed.")

    # -- distinct question texts -------------------------------------------------------------------
    texts = list(dict.fromkeys(q.text for q, err in zip(dataset.questions, q_errors) if not err))
    text_file = parts / "texts.npz"
    cut = set()
    if backbone.has_text:
        cut = {t for t, n in zip(texts, backbone.token_counts(texts)) if n > backbone.max_text_length}
    if backbone.has_text and not text_file.exists():
        chunks = [backbone.encode_texts(texts[i:i + text_batch_size]) for i in range(0, len(texts), text_batch_size)]
        joined = {k: np.concatenate([c[k] for c in chunks]).astype(store_dtype) for k in ("text_cls", "text_proj")}
        save_atomic(text_file, texts=np.array(texts, dtype=str), **joined)

    # -- images, shard by shard --------------------------------------------------------------------
    n_shards = math.ceil(len(keys) / shard_size)
    shard_path = [parts / f"images-{j:06d}.npz" for j in range(n_shards)]
    todo = [j for j in range(n_shards) if not shard_path[j].exists()]
    batches = [list(range(s, min(s + batch_size, (j + 1) * shard_size, len(keys))))
               for j in todo for s in range(j * shard_size, min((j + 1) * shard_size, len(keys)), batch_size)]
    cuda = backbone.device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        DecodedImages(dataset, keys, backbone.preprocessor), batch_sampler=batches, num_workers=workers,
        collate_fn=collate, pin_memory=cuda, prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False)
    done = len(keys) - sum(min(shard_size, len(keys) - j * shard_size) for j in todo)
    bar = tqdm(total=len(keys), initial=done, unit="img", desc="images", disable=not progress, dynamic_ncols=True)
    writer = ShardWriter(len(keys), shard_size, shard_path, store_dtype, backbone.image_feature_shapes(store_vision))
    computed = 0
    try:
        for index, pixels, good, errors in loader:
            for i, err in zip(index, errors):
                if err and not skip_bad:
                    raise ExtractError(f"{err}\nImage {keys[i]!r} cannot be used; fix or remove it, or pass "
                                       f"--skip-bad to record it as failed. Finished work is kept in {parts}; "
                                       f"the same command resumes.")
            feats = backbone.encode_images(pixels, keep_vision=store_vision, to_numpy=False) if good else {}
            writer.submit(index, good, errors, feats)  # copy back + write in the background
            computed += len(good)
            bar.update(len(index))
        writer.close()
    except KeyboardInterrupt:
        writer.close()
        saved = sum(p.exists() for p in shard_path)
        raise ExtractError(f"interrupted: {saved} of {n_shards} shards are saved in {parts}; run the same "
                           f"command again to continue") from None
    except BaseException:
        writer.close()  # keep the shards that were finished before the error
        raise
    finally:
        bar.close()

    failed_images, failed_questions = _assemble(out, run, dataset, keys, texts, q_errors, shard_path, text_file,
                                                backbone.has_text, store_dtype, compression, cut)
    shutil.rmtree(parts)
    n_cut = sum(q.text in cut for q in dataset.questions)
    return ExtractReport(out, len(keys), n_q, len(texts), computed, time.perf_counter() - started,
                         failed_images, failed_questions, resumed, truncated_questions=n_cut,
                         truncated_examples=sorted(cut)[:3])


def _assemble(out: Path, run: dict, dataset: VQADataset, keys: list[str], texts: list[str], q_errors: list[str],
              shard_path: list[Path], text_file: Path, has_text: bool, store_dtype: str,
              compression: str | None, truncated: set[str]) -> tuple[list[str], list[int]]:
    """Write the final HDF5 from the shards, to a temporary name renamed into place at the end."""
    n_q = len(dataset.questions)
    with np.load(shard_path[0]) as first:
        image_arrays = {k: first[k].shape[1:] for k in ("query", "query_proj", "vision") if k in first}
    question_arrays = {}
    if has_text:
        with np.load(text_file) as t:
            text_feats = {k: t[k] for k in ("text_cls", "text_proj")}
            if list(t["texts"]) != texts:
                raise ExtractError(f"{text_file} does not match the dataset's questions; pass --overwrite")
        question_arrays = {k: v.shape[1:] for k, v in text_feats.items()}
    attrs = {k: v for k, v in run.items() if k not in ("store_dtype", "compression")}
    attrs.update(n_texts=len(texts))

    tmp = out.with_name(out.name + ".tmp")
    writer = CacheWriter(tmp, attrs, len(keys), n_q, image_arrays, question_arrays, store_dtype, compression)
    image_errors: list[str] = []
    start = 0
    for path in shard_path:
        with np.load(path) as shard:
            n = len(shard["error"])
            errors = [str(e) for e in shard["error"]]
            writer.write("images", start, {"key": keys[start:start + n], "error": errors,
                                           **{k: shard[k] for k in image_arrays}})
            image_errors += errors
            start += n
    row = {k: i for i, k in enumerate(keys)}
    image_row = np.array([row[q.image] for q in dataset.questions], dtype=np.int64)
    q_errors = [qe or (f"image failed: {image_errors[r]}" if image_errors[r] else "")
                for qe, r in zip(q_errors, image_row)]
    writer.write("questions", 0, {
        "text": [q.text for q in dataset.questions], "answer": [q.answer for q in dataset.questions],
        "split": [q.split for q in dataset.questions], "image_row": image_row, "error": q_errors,
        "truncated": np.array([q.text in truncated for q in dataset.questions], dtype=np.uint8)})
    if has_text:
        text_row = {t: i for i, t in enumerate(texts)}
        idx = np.array([text_row.get(q.text, -1) for q in dataset.questions])
        for name, feats in text_feats.items():
            gathered = feats[np.maximum(idx, 0)]
            gathered[idx < 0] = 0
            writer.write("questions", 0, {name: gathered})
    writer.close()
    os.replace(tmp, out)
    return [k for k, e in zip(keys, image_errors) if e], [i for i, e in enumerate(q_errors) if e]
