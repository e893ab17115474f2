"""The parts folder: the sharded form of a cache, as extraction writes it and merge reads it.

A shard (`ShardSpec`) is a fixed set of image keys with a digest of its own (featcache.extract.plan
cuts them). Each is written once, atomically, with a checksum sidecar.

OUT.parts/ holds everything the final file is made of, so any process can merge it:
  manifest.json      run identity, final attributes, shard list (digest, row range, count)
  questions.npz      the question table (text, answer, split, image row, error, truncated)
  texts-<d>.npz      features of the distinct question texts
  shard-<d>.h5       one per shard: /images of today's cache schema, written by one writer
  shard-<d>.json     its sha256, written before the .h5 is renamed into place

The single file is made from it by featcache.cache.merged.
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

from .file import CacheWriter
from .parts_check import MANIFEST_MAX_BYTES, check_manifest, member
from ..errors import ExtractError

PAIR_INDEX = ("image_row", "text")
"""The columns of /pairs that say what each pair is; the others hold its features."""
PAIR_FEATURES = ("mm_query", "mm_pooled")


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


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{int(n)} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def no_space(folder: Path, needed: int) -> ExtractError:
    free = shutil.disk_usage(folder).free
    return ExtractError(f"no space left in {folder}: this run needs about {human_bytes(needed)} there (the "
                        f"remaining shards plus the merged file), {human_bytes(free)} are free. Free some space or "
                        f"choose another --out; finished shards are kept, and the same command resumes.")


def out_of_space(exc: BaseException) -> bool:
    """Whether an OSError (h5py's carry the errno in their text only) means the disk is full."""
    return getattr(exc, "errno", None) == errno.ENOSPC or "errno = 28" in str(exc) or "No space left" in str(exc)


def write_shard(parts: Path, spec: ShardSpec, attrs: dict, arrays: dict[str, np.ndarray], errors: list[str],
                store_dtype: str, pairs: dict[str, np.ndarray] | None = None) -> None:
    """One shard's /images (and, for question-conditioned features, its block of /pairs: image_row, text and
    the states) as an HDF5 file: temporary name, checksum sidecar, then rename into place."""
    tmp = spec.path(parts).with_name(spec.path(parts).name + ".tmp")
    writer = None
    pair_arrays = None if pairs is None else {k: v.shape[1:] for k, v in pairs.items() if k not in PAIR_INDEX}
    try:
        writer = CacheWriter(tmp, {**attrs, "shard_digest": spec.digest}, len(spec.keys), 0,
                             {k: v.shape[1:] for k, v in arrays.items()}, {}, store_dtype, pair_arrays=pair_arrays,
                             n_pairs=0 if pairs is None else len(pairs["image_row"]))
        writer.write("images", 0, {"key": list(spec.keys), "error": errors, **arrays})
        if pairs is not None:
            writer.write("pairs", 0, pairs)
        writer.close()
        writer = None
        sidecar = spec.checksum_path(parts)
        sidecar.with_suffix(".tmp").write_text(json.dumps({"sha256": sha256_file(tmp), "n_images": len(spec.keys)}))
        os.replace(sidecar.with_suffix(".tmp"), sidecar)
        os.replace(tmp, spec.path(parts))
    except (OSError, RuntimeError) as exc:
        abandon(writer, tmp)
        if out_of_space(exc):
            raise no_space(parts, sum(v.nbytes for v in arrays.values()) * 2) from None
        raise


def abandon(writer, tmp: Path) -> None:
    """Drop a half-written file: its HDF5 handle closed now (left to the garbage collector on a full disk, h5py
    prints a traceback per object and can crash the interpreter), then the file removed."""
    import gc
    import sys

    if writer is not None:
        stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # HDF5's own complaints while closing
        try:
            writer.file.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass
        finally:
            sys.stderr.close()
            sys.stderr = stderr
        gc.collect()
    tmp.unlink(missing_ok=True)


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
