"""The parts folder: the sharded form of a cache, as extraction writes it and merge reads it.

A shard (`ShardSpec`) is a fixed set of image keys with a digest of its own (featcache.extract.plan
cuts them). Each is written once, atomically, with a checksum sidecar.

OUT.parts/ holds everything the final file is made of, so any process can merge it:
  manifest.json      run identity, final attributes, shard list (digest, row range, count)
  questions.npz      the question table (text, answer, split, image row, error, truncated)
  texts-<d>.npz      features of the distinct question texts
  shard-<d>.h5       one per shard: /images of today's cache schema, written by one writer
  shard-<d>.json     its sha256, written before the .h5 is renamed into place
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .answers import string_columns
from .file import CacheWriter, FeatureCache
from .parts_check import MANIFEST_MAX_BYTES, check_manifest, check_shard, load_npz, member
from ..errors import ExtractError

@dataclass(frozen=True)
class ShardSpec:
    start: int
    """First row of this shard in the cache's image order (the plan's order)."""
    keys: tuple[str, ...]
    digest: str

    @property
    def stop(self) -> int:
        return self.start + len(self.keys)

    def path(self, parts: Path) -> Path:
        return parts / f"shard-{self.digest}.h5"

    def checksum_path(self, parts: Path) -> Path:
        return parts / f"shard-{self.digest}.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def no_space(folder: Path, needed: int) -> ExtractError:
    free = shutil.disk_usage(folder).free
    return ExtractError(f"no space left in {folder}: this run needs about {needed / 1e9:.2f} GB there (the "
                        f"remaining shards plus the merged file), {free / 1e9:.2f} GB are free. Free some space or "
                        f"choose another --out; finished shards are kept, and the same command resumes.")


def write_shard(parts: Path, spec: ShardSpec, attrs: dict, arrays: dict[str, np.ndarray], errors: list[str],
                store_dtype: str) -> None:
    """One shard's /images as an HDF5 file: temporary name, checksum sidecar, then rename into place."""
    tmp = spec.path(parts).with_name(spec.path(parts).name + ".tmp")
    try:
        writer = CacheWriter(tmp, {**attrs, "shard_digest": spec.digest}, len(spec.keys), 0,
                             {k: v.shape[1:] for k, v in arrays.items()}, {}, store_dtype)
        writer.write("images", 0, {"key": list(spec.keys), "error": errors, **arrays})
        writer.close()
        sidecar = spec.checksum_path(parts)
        sidecar.with_suffix(".tmp").write_text(json.dumps({"sha256": sha256_file(tmp), "n_images": len(spec.keys)}))
        os.replace(sidecar.with_suffix(".tmp"), sidecar)
        os.replace(tmp, spec.path(parts))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise no_space(parts, sum(v.nbytes for v in arrays.values()) * 2) from None
        raise


def shard_done(parts: Path, spec: ShardSpec) -> bool:
    return spec.path(parts).exists() and spec.checksum_path(parts).exists()


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_manifest(parts: Path) -> dict:
    """The manifest, checked (featcache.cache.parts_check) before anything it names is read."""
    parts = Path(parts)
    path = parts / "manifest.json"
    if not path.exists():
        raise ExtractError(f"{parts} has no manifest.json: not the parts folder of a featcache extract "
                           f"(it is FILE.h5.parts next to the --out of the run)")
    path = member(parts, "manifest.json", "the manifest")
    if path.stat().st_size > MANIFEST_MAX_BYTES:
        raise ExtractError(f"{path} is {path.stat().st_size} bytes, too large for a manifest; refusing to read it")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ExtractError(f"{path} is not valid JSON ({str(exc)[:100]}); re-run the extract that made the folder "
                           f"(it resumes), or remove it") from None
    return check_manifest(parts, manifest)


def missing_shards(parts: Path, manifest: dict) -> list[dict]:
    return [s for s in manifest["shards"] if not (parts / s["file"]).exists()
            or not (parts / s["file"]).with_suffix(".json").exists()]


def recorded_checksum(parts: Path, entry: dict) -> str:
    """The sha256 a shard's sidecar recorded when it was written."""
    path = member(parts, entry["file"].removesuffix(".h5") + ".json", "a shard's checksum")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["sha256"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ExtractError(f"{path} is not a shard checksum file; delete it and {entry['file']} (the extract "
                           f"command recomputes that shard)") from None
    return str(value)


def merge(parts: str | Path, out: str | Path, compression: str | None = None) -> tuple[list[str], list[int]]:
    """Write the single-file cache from a parts folder: /images from the shards in plan order (each
    checked against its checksum), /questions from questions.npz and the text features. Written to a
    temporary name and renamed into place. Returns (failed image keys, failed question rows)."""
    parts, out = Path(parts), Path(out)
    manifest = read_manifest(parts)
    missing = missing_shards(parts, manifest)
    if missing:
        raise ExtractError(f"{len(missing)} of {len(manifest['shards'])} shards in {parts} are not finished yet "
                           f"(e.g. {missing[0]['file']}); finish them (the extract commands that write this "
                           f"folder resume) before merging")
    attrs, store_dtype = manifest["attrs"], manifest["store_dtype"]
    questions = load_npz(parts, "questions.npz", "the question table")
    text_feats = {}
    if manifest["texts_file"]:
        texts = load_npz(parts, manifest["texts_file"], "the question texts' features")
        text_feats = {k: texts[k] for k in ("text_cls", "text_proj")}
    first = FeatureCache(member(parts, manifest["shards"][0]["file"], "a shard"))
    image_arrays = {k: first.images[k].shape[1:] for k in ("query", "query_proj", "vision") if k in first.images}
    first.close()
    tmp = out.with_name(out.name + ".tmp")
    try:
        benchmark = string_columns(questions)
        writer = CacheWriter(tmp, attrs, manifest["n_images"], len(questions["text"]), image_arrays,
                             {k: v.shape[1:] for k, v in text_feats.items()}, store_dtype, compression,
                             question_strings=tuple(benchmark))
        image_errors: list[str] = []
        keys: list[str] = []
        for entry in manifest["shards"]:
            path = member(parts, entry["file"], "a shard")
            recorded = recorded_checksum(parts, entry)
            if sha256_file(path) != recorded:
                raise ExtractError(f"{path} does not match its checksum: it was damaged after it was written. "
                                   f"Delete it (and {path.with_suffix('.json').name}); the extract command "
                                   f"recomputes just that shard")
            with FeatureCache(path) as shard:
                check_shard(parts, entry, manifest, shard.file)
                block = {k: shard.read("images", k) for k in ("key", "error", *image_arrays)}
            writer.write("images", entry["start"], block)
            image_errors += [str(e) for e in block["error"]]
            keys += [str(k) for k in block["key"]]
        row = questions["image_row"]
        q_errors = [qe or (f"image failed: {image_errors[r]}" if image_errors[r] else "")
                    for qe, r in zip(questions["error"].tolist(), row)]
        writer.write("questions", 0, {"text": questions["text"].tolist(), "answer": questions["answer"].tolist(),
                                      "split": questions["split"].tolist(), "image_row": row, "error": q_errors,
                                      "truncated": questions["truncated"], **benchmark})
        for name, feats in text_feats.items():
            idx = questions["text_row"]
            gathered = feats[np.maximum(idx, 0)]
            gathered[idx < 0] = 0
            writer.write("questions", 0, {name: gathered})
        writer.close()
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise no_space(out.parent, manifest["n_images"] * manifest.get("bytes_per_image", 0)) from None
        raise
    return [k for k, e in zip(keys, image_errors) if e], [i for i, e in enumerate(q_errors) if e]
