"""One extraction run: each unique image through ViT + Q-Former once, each distinct question once.

Work is committed in shards under `OUT.parts/` (see featcache.cache.parts) by atomic renames, so Ctrl-C or
kill -9 loses at most the shards in flight; running the same command again skips finished shards.
Batches never cross shards, so a resumed run computes exactly the batches an uninterrupted one would
and the merged file is the same. With `shard_index`/`num_shards` a process does only its share of the
shards (SLURM arrays, Kubernetes jobs); `featcache merge` then writes the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..cache import FeatureCache
from ..cache.answers import benchmark_columns
from ..cache.merged import merge
from ..cache.parts import no_space, read_manifest, shard_done, write_json_atomic
from ..datasets import VQADataset
from ..errors import CacheFormatError, ExtractError
from ..models.backbone import DEFAULT_MAX_TEXT_LENGTH, DEFAULT_MODEL, Backbone, load_backbone
from .engines.local import ShardJob, run_shards
from .guards import check_storable, check_writable, lock, refuse_if_other_locks
from .pipeline import auto_batch_size, auto_workers, save_atomic
from .pairs import DEFAULT_MM_PROMPT, FEATURES, MM_STORES, PairSources, bytes_per_pair, check_prompt, pair_table
from .plan import IDENTITY_KEYS, PARTS_KEYS, plan_shards
from .sources import check_vision_source


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
    shards: int = 0
    shards_done_before: int = 0
    """Shards found finished in OUT.parts/ (from an interrupted run, or another --shard-index)."""
    cuda_graphs: str = ""
    """With --cuda-graphs: "on", or "off: why" (the run went eagerly)."""
    n_pairs: int = 0
    """Distinct (image, question) pairs with question-conditioned states (--features multimodal)."""
    merged: bool = True
    """False for a --shard-index run: its shards are written, `featcache merge` makes the file."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage (prepare: model load, checks, texts, plan; images: decode + forward + shard writes,
    of which images_decode_wait blocked on decoding and images_writer_wait on the device / disk; merge:
    the single file), so a user sees where a run's time went."""

    @property
    def images_per_second(self) -> float:
        return self.images_computed / self.seconds if self.seconds > 0 else 0.0


def _mismatch(a: dict, b: dict, keys: tuple[str, ...] = IDENTITY_KEYS) -> list[str]:
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if json.dumps(a.get(k)) != json.dumps(b.get(k))]


class _ImageSources:
    """key -> what its image is made from (locator | augmentation), computed when asked: a 10M-image plan then
    needs no second table of 10M strings beside the dataset's own."""

    def __init__(self, dataset: VQADataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: str) -> str:
        return f"{self.dataset.image_identity(key)}|{self.dataset.augmented.get(key, '')}"


def extract_with(dataset: VQADataset, out: str | Path, model: str | Backbone = DEFAULT_MODEL, device: str = "auto",
            dtype: str | None = None, batch_size: int | str = 32, workers: int | str = "auto",
            store_dtype: str = "float16", compression: str | None = None, shard_size: int = 1024,
            text_batch_size: int = 128, overwrite: bool = False, skip_bad: bool = False, store_vision: bool = False,
            max_text_length: int = DEFAULT_MAX_TEXT_LENGTH, compile: bool = False, jpeg_draft: bool = False,
            shard_index: int | None = None, num_shards: int | None = None, engine: str = "local",
            ray_address: str | None = None, gpus_per_worker: float = 1.0, workers_per_node: int | None = None,
            merge_output: bool = True, progress: bool = True, features: str = "unimodal", mm_store: str = "full",
            mm_prompt: str = DEFAULT_MM_PROMPT, from_vision: str | Path | None = None,
            cuda_graphs: bool = False, writer: str = "auto") -> ExtractReport:
    """Extract features of `dataset` into the HDF5 file `out` (see docs/FORMAT.md): the flat form of the public
    `featcache.extract.extract` (featcache/extract/options.py), whose groups name these settings.

    batch_size and workers may be "auto" (see featcache.extract.pipeline); `compile` runs the ViT through
    torch.compile (worth it on a GPU for large runs: it compiles once per batch shape). With
    shard_index/num_shards only shards j with j % num_shards == shard_index are computed and nothing
    is merged. With merge_output=False the sharded form (OUT.parts/) is kept as the result:
    `open_cache` reads it in place. engine="ray" spreads the shards over Ray actors (featcache.extract.engines.ray).
    features="multimodal" also stores the Q-Former's query states with each question read beside the queries
    (featcache.extract.pairs), `mm_store` "full" (32 x 768 per pair) or "pooled" (their mean); `from_vision`
    takes the ViT states from a --store-vision cache of the same model instead of running the ViT. `cuda_graphs`
    replays the image forward as a CUDA graph (featcache.models.graphs; eager where capture fails, recorded in
    the attribute `cuda_graphs`). `writer` "process" writes shards and the final file in a forked process (the
    default on a GPU, where the feeding thread needs the GIL), "thread" in a thread of this one (the default on a
    CPU, where the forward needs every core; featcache.extract.writer)."""
    started = time.perf_counter()
    out = Path(out)
    check_writable(out)
    if store_dtype not in ("float16", "float32"):
        raise ExtractError(f"--store-dtype must be float16 or float32, got {store_dtype!r}")
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise ExtractError(f"--batch-size must be a positive integer or auto, got {batch_size!r}")
    if shard_size < 1:
        raise ExtractError(f"--shard-size must be positive, got {shard_size}")
    if workers != "auto" and (not isinstance(workers, int) or workers < 0):
        raise ExtractError(f"--workers must be 0 or more, or auto, got {workers!r}")
    if (shard_index is None) != (num_shards is None) or (num_shards is not None and not 0 <= shard_index < num_shards):
        raise ExtractError(f"--shard-index and --num-shards go together, with 0 <= index < count; got "
                           f"{shard_index} and {num_shards}")
    if max_text_length < 2:
        raise ExtractError(f"--max-text-length must be at least 2 tokens, got {max_text_length}")
    if engine not in ("local", "ray"):
        raise ExtractError(f"--engine must be local or ray, got {engine!r}")
    if features not in FEATURES or mm_store not in MM_STORES:
        raise ExtractError(f"--features must be one of {FEATURES} and --mm-store one of {MM_STORES}, got "
                           f"{features!r} and {mm_store!r}")
    multimodal = features == "multimodal"
    if multimodal:
        check_prompt(mm_prompt)
        if dataset.task == "classify":
            raise ExtractError(f"--features multimodal reads each question with the image; {dataset.name} is an image "
                               f"classification dataset (no questions): use the default --features unimodal")
    backbone = model if isinstance(model, Backbone) else load_backbone(model, device=device, dtype=dtype,
                                                                      max_text_length=max_text_length)
    if backbone.preprocessor.jpeg_draft != jpeg_draft:  # a decoding choice of this run (recorded in image_decoding),
        preprocessor = copy.copy(backbone.preprocessor)  # made on a copy: the caller's backbone stays as it was
        preprocessor.jpeg_draft = jpeg_draft
        backbone = replace(backbone, preprocessor=preprocessor)
    if writer not in ("auto", "process", "thread"):
        raise ExtractError(f"--writer must be auto, process or thread, got {writer!r}")
    if cuda_graphs and (compile or from_vision or engine != "local"):
        raise ExtractError("--cuda-graphs captures the local image forward: it does not combine with --compile, "
                           "--from-vision or --engine ray; choose one")
    if multimodal and not backbone.has_multimodal:
        raise ExtractError(f"--features multimodal needs a Q-Former that can read the question: {backbone.model_id} "
                           f"({backbone.model_class}) has no Q-Former text path (the generative BLIP-2 checkpoints "
                           f"have none). Use a retrieval checkpoint such as {DEFAULT_MODEL}, or an InstructBLIP "
                           f"checkpoint such as Salesforce/instructblip-flan-t5-xl")
    vision_source = check_vision_source(from_vision, backbone, dataset) if from_vision else None
    if compile and not vision_source:
        backbone.compile_vision()
    if workers == "auto":
        workers = auto_workers(backbone.device)
    for i, q in enumerate(dataset.questions):  # before the digest, which encodes them
        check_storable(i, q)
    run = {**backbone.provenance(), "dataset_name": dataset.name, "dataset_source": dataset.source,
           "dataset_digest": dataset.digest(), "task": dataset.task, "store_dtype": store_dtype, "shard_size": shard_size,
           "store_vision": store_vision, "compression": compression or "none",
           **({"metric": dataset.metric} if dataset.metric else {})}  # the benchmark's scoring (featcache.scoring)
    if multimodal:  # recorded only when asked for: unimodal caches keep the attributes they always had
        run.update(features=features, mm_store=mm_store, mm_prompt=mm_prompt)
    if vision_source:
        run["vision_from"] = vision_source
    keys = sorted(dataset.images())  # the cache's image order: the shard plan's
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
    parts.mkdir(exist_ok=True)
    # the lock first: --overwrite clears the parts folder only once no other run (nor shard worker) holds it
    held = lock(parts, "lock" if shard_index is None else f"lock-{shard_index}-of-{num_shards}", out)
    try:
        if overwrite and shard_index is None:
            refuse_if_other_locks(parts, out)
            for child in parts.iterdir():
                if child.name != "lock":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        engine_options = dict(engine=engine, model=model, ray_address=ray_address, gpus_per_worker=gpus_per_worker,
                              workers_per_node=workers_per_node, merge_output=merge_output,
                              mm=(mm_store, mm_prompt) if multimodal else None, vision_source=vision_source,
                              cuda_graphs=cuda_graphs, writer=writer)
        return _extract_locked(dataset, out, parts, backbone, run, keys, batch_size, workers, store_dtype,
                               compression, shard_size, text_batch_size, skip_bad, store_vision, shard_index,
                               num_shards, progress, started, **engine_options)
    finally:
        held.close()


def _extract_locked(dataset, out, parts, backbone, run, keys, batch_size, workers, store_dtype, compression,
                    shard_size, text_batch_size, skip_bad, store_vision, shard_index, num_shards, progress,
                    started, engine, model, ray_address, gpus_per_worker, workers_per_node,
                    merge_output, mm, vision_source, cuda_graphs, writer) -> ExtractReport:
    state_file = parts / "run.json"
    resumed = state_file.exists()
    if resumed:
        prior = json.loads(state_file.read_text())
        diff = _mismatch(prior, run, PARTS_KEYS)
        if diff:
            raise ExtractError(f"an unfinished run for {out} ({parts}) used another model or settings:\n  "
                               + "\n  ".join(diff) + "\nRe-run with its settings to finish it, or pass --overwrite "
                               "to start afresh.")
        run["created"] = prior["created"]
    else:
        run["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json_atomic(state_file, run)
    n_q = len(dataset.questions)

    # -- validate before spending compute ----------------------------------------------------------
    q_errors = [""] * n_q
    classify = dataset.task == "classify"  # rows are labelled images: no question to encode
    for i, q in enumerate(dataset.questions):
        if not classify and not q.text.strip():
            if not skip_bad:
                raise ExtractError(f"question row {i} (image {q.image!r}) is empty; fix the dataset or pass "
                                   f"--skip-bad to record it as failed and go on")
            q_errors[i] = "empty question"
    missing = dataset.missing_images()
    if missing and not skip_bad:
        def where(k: str) -> str:
            path = dataset.image_paths[k]
            odd = dataset.reader is None and os.path.lexists(path)  # there, but a folder, FIFO or device
            return f"{k!r} -> {path}" + (" (not a regular file)" if odd else "")

        shown = ", ".join(where(k) for k in missing[:5])
        what, fix = (("image(s) missing (rows without an image)", "Fix the dataset") if dataset.reader is not None
                     else ("image file(s) not found or not regular files",
                           "Fix the paths (--images DIR sets the folder for relative names)"))
        raise ExtractError(f"{len(missing)} {what}, e.g. {shown}. {fix} or pass --skip-bad to record them as "
                           f"failed.")

    # -- distinct question texts (cheap), then the question table and the manifest -------------------
    texts = [] if classify else list(dict.fromkeys(q.text for q, err in zip(dataset.questions, q_errors) if not err))
    cut: set[str] = set()
    texts_file = ""
    if backbone.has_text and texts:
        cut = {t for t, n in zip(texts, backbone.token_counts(texts)) if n > backbone.max_text_length}
        texts_file = "texts-" + hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16] + ".npz"
        if not (parts / texts_file).exists():
            chunks = [backbone.encode_texts(texts[i:i + text_batch_size]) for i in range(0, len(texts), text_batch_size)]
            joined = {k: np.concatenate([c[k] for c in chunks]).astype(store_dtype) for k in ("text_cls", "text_proj")}
            save_atomic(parts / texts_file, texts=np.array(texts, dtype=str), **joined)
    row_of = {k: i for i, k in enumerate(keys)}
    text_row = {t: i for i, t in enumerate(texts)}
    qs = dataset.questions
    pairs = None
    if mm:  # the distinct (image, question) pairs, numbered in image order (featcache.extract.pairs)
        usable = np.array([not e for e in q_errors], dtype=bool)
        pairs = pair_table(np.array([row_of[q.image] for q in qs], dtype=np.int64), [q.text for q in qs], usable,
                           mm[1])
        distinct = list(dict.fromkeys(pairs.text.tolist()))
        counts = [len(ids) for ids in backbone.mm_tokenizer(distinct, truncation=False)["input_ids"]]
        long = {t for t, n in zip(distinct, counts) if n > backbone.max_text_length}
        cut |= {q.text for q, ok in zip(qs, usable) if ok and mm[1].format(q.text) in long}
    save_atomic(parts / "questions.npz", text=np.array([q.text for q in qs], dtype=str),
                answer=np.array([q.answer for q in qs], dtype=str), split=np.array([q.split for q in qs], dtype=str),
                image_row=np.array([row_of[q.image] for q in qs], dtype=np.int64),
                error=np.array(q_errors, dtype=str), truncated=np.array([q.text in cut for q in qs], dtype=np.uint8),
                text_row=np.array([text_row.get(q.text, -1) if not e else -1 for q, e in zip(qs, q_errors)]),
                **benchmark_columns(qs), **({"pair_row": pairs.pair_row} if pairs is not None else {}))
    sources = _ImageSources(dataset) if pairs is None else PairSources(_ImageSources(dataset), keys, pairs)
    plan = plan_shards(keys, sources, shard_size)
    shapes = backbone.image_feature_shapes(store_vision)
    bytes_per_image = sum(int(np.prod(s)) for s in shapes.values()) * np.dtype(store_dtype).itemsize
    pair_shape = (() if pairs is None else (backbone.dims["query"],) if mm[0] == "pooled"
                  else (backbone.dims["query_tokens"], backbone.dims["query"]))
    pair_bytes = bytes_per_pair(pair_shape, store_dtype) if pairs is not None else 0

    def pair_entry(s) -> dict:
        if pairs is None:
            return {}
        lo, hi = pairs.block(s.start, s.stop)
        return {"pair_start": lo, "n_pairs": hi - lo}

    attrs = {k: v for k, v in run.items() if k not in ("store_dtype", "compression")}
    attrs.update(n_texts=len(texts))
    if batch_size == "auto":
        batch_size = auto_batch_size(backbone, store_vision)
    if cuda_graphs:  # the image forward as one graph launch per batch, or eagerly where capture fails
        attrs["cuda_graphs"] = backbone.use_cuda_graphs(batch_size, store_vision)
    write_json_atomic(parts / "manifest.json", {
        "attrs": attrs, "store_dtype": store_dtype, "n_images": len(keys), "n_questions": n_q,
        "texts_file": texts_file, "bytes_per_image": bytes_per_image, "model_fingerprint": run["model_fingerprint"],
        **({"n_pairs": pairs.n_pairs, "bytes_per_pair": pair_bytes} if pairs is not None else {}),
        "shards": [{"file": s.path(parts).name, "digest": s.digest, "start": s.start, "stop": s.stop,
                    "n_images": len(s.keys), "first_key": s.keys[0], "last_key": s.keys[-1], **pair_entry(s)}
                   for s in plan]})

    # -- images, shard by shard --------------------------------------------------------------------
    mine = [s for j, s in enumerate(plan) if shard_index is None or j % num_shards == shard_index]
    todo = [s for s in mine if not shard_done(parts, s)]
    merging = shard_index is None and merge_output
    prepared = time.perf_counter()
    todo_pairs = sum(pair_entry(s).get("n_pairs", 0) for s in todo)
    needed = sum(len(s.keys) for s in todo) * bytes_per_image + (len(keys) * bytes_per_image if merging else 0) + \
        pair_bytes * (todo_pairs + (pairs.n_pairs if merging and pairs is not None else 0))
    if shutil.disk_usage(parts).free < needed:
        raise no_space(parts, needed)
    done = sum(len(s.keys) for s in mine) - sum(len(s.keys) for s in todo)
    job = ShardJob(dataset, keys, parts, attrs, batch_size, workers, store_dtype, store_vision, skip_bad, pairs,
                   mm[0] if mm else "full", vision_source)
    waits: dict[str, float] = {}
    streamed: dict = {}
    if engine == "ray":
        from .engines.ray import run_ray

        computed = run_ray(job, todo, model, backbone, ray_address, gpus_per_worker, workers_per_node, progress,
                           done, done + sum(len(s.keys) for s in todo))
    else:  # a merging run appends each shard to the final file as it finishes (featcache.extract.writer)
        computed = run_shards(job, todo, backbone, progress, done, done + sum(len(s.keys) for s in todo), waits,
                              merge_into=(out, compression) if merging else None, merged=streamed,
                              writer_process=None if writer == "auto" else writer == "process")
    imaged = time.perf_counter()
    stages = {"prepare": round(prepared - started, 3), "images": round(imaged - prepared, 3),
              **{f"images_{k}": round(v, 3) for k, v in waits.items()}}
    report = dict(n_texts=len(texts), truncated_questions=sum(q.text in cut for q in qs),
                  truncated_examples=sorted(cut)[:3], shards=len(mine), shards_done_before=len(mine) - len(todo),
                  stage_seconds=stages, n_pairs=pairs.n_pairs if pairs is not None else 0,
                  cuda_graphs=attrs.get("cuda_graphs", ""))
    if shard_index is not None or not merge_output:
        return ExtractReport(out, len(keys), n_q, images_computed=computed, seconds=time.perf_counter() - started,
                             resumed=resumed, merged=False, **report)
    if streamed.get("failed") is not None and out.exists():  # the final file was written with the shards
        failed_images, failed_questions = streamed["failed"]
    else:
        failed_images, failed_questions = merge(parts, out, compression)
    shutil.rmtree(parts)
    stages["merge"] = round(time.perf_counter() - imaged, 3)
    return ExtractReport(out, len(keys), n_q, images_computed=computed, seconds=time.perf_counter() - started,
                         failed_images=failed_images, failed_questions=failed_questions, resumed=resumed, **report)


def merge_parts(parts: str | Path, out: str | Path | None = None, compression: str | None = None) -> ExtractReport:
    """`featcache merge`: the single-file cache from a parts folder whose shards are all finished."""
    started = time.perf_counter()
    parts = Path(parts)
    if not parts.is_dir():
        raise ExtractError(f"{parts} is not a folder; give the FILE.h5.parts folder that extract wrote")
    manifest = read_manifest(parts)
    out = Path(out) if out else parts.with_name(parts.name.removesuffix(".parts"))
    check_writable(out)
    if out.exists():
        raise ExtractError(f"{out} exists; remove it or give another --out")
    held = lock(parts, "lock", out)
    try:
        failed_images, failed_questions = merge(parts, out, compression)
    finally:
        held.close()
    shutil.rmtree(parts)
    return ExtractReport(out, manifest["n_images"], manifest["n_questions"], manifest["attrs"]["n_texts"], 0,
                         time.perf_counter() - started, failed_images, failed_questions,
                         shards=len(manifest["shards"]))
