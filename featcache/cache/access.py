"""Opening a cache in either form (one file, or a finished parts folder read in place), verifying it,
and describing it (`featcache info`)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheFormatError
from .file import FeatureCache
from .sharded import ShardedCache


def open_cache(path: str | Path, expect: dict | None = None) -> FeatureCache:
    """Open a cache lazily: a file, or the sharded form (a finished FILE.h5.parts folder, read in place);
    with `expect` (provenance of a model or head), refuse a mismatch."""
    if Path(path).is_dir():
        cache = ShardedCache(path)
    else:
        cache = FeatureCache(path)
    if expect:
        try:
            cache.check_compatible(expect)
        except CacheFormatError:
            cache.close()
            raise
    return cache


def verify(path: str | Path, rows_per_read: int = 4096) -> list[str]:
    """Read every byte of every dataset (checking each chunk's fletcher32 checksum) and the row counts;
    the problems found, empty when the file is sound."""
    problems = []
    if Path(path).is_dir():
        with open_cache(path) as cache:
            return cache.verify()
    with FeatureCache(path) as cache:
        expected = {"images": cache.n_images, "questions": cache.n_questions}
        names = []
        cache.file.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in sorted(names):
            group, _, dataset = name.partition("/")
            ds = cache.file[name]
            if group in expected and ds.shape[0] != expected[group]:
                problems.append(f"/{name} has {ds.shape[0]} rows, /{group} has {expected[group]}")
            if ds.chunks is not None and not ds.fletcher32 and h5py.check_string_dtype(ds.dtype) is None:
                problems.append(f"/{name} has no checksums (written by an older featcache): damage cannot be detected")
            nonfinite, first = 0, None
            for start in range(0, ds.shape[0], rows_per_read):
                try:
                    block = ds[start:start + rows_per_read]
                except OSError as exc:
                    problems.append(f"/{name} rows {start}-{min(start + rows_per_read, ds.shape[0]) - 1}: "
                                    f"{str(exc).splitlines()[0]}")
                    continue
                if block.dtype.kind == "f":
                    bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
                    if bad.any():
                        nonfinite += int(bad.sum())
                        first = start + int(np.flatnonzero(bad)[0]) if first is None else first
            if nonfinite:
                problems.append(f"/{name}: {nonfinite} rows hold NaN or inf values (first: row {first}); heads refuse "
                                f"them. Extract those images again (--dtype float32 where fp16 overflowed)")
        row = cache.read("questions", "image_row")
        if len(row) and (row.min() < 0 or row.max() >= cache.n_images):
            problems.append(f"/questions/image_row points outside /images (0..{cache.n_images - 1})")
    return problems


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def info_text(path: str | Path) -> str:
    """Human-readable metadata, counts and sizes of a cache (`featcache info`)."""
    with open_cache(path) as cache:
        d = cache.describe()
    lines = [f"{d['path']}  ({_human(d['file_bytes'])}, featcache format {d['attrs'].get('featcache_format')})", ""]
    if str(d["attrs"].get("model_id", "")).startswith("tiny-random"):
        lines += ["!! made with tiny-random: RANDOM weights, features carry no meaning", ""]
    if d["attrs"].get("nonfinite"):
        lines += [f"!! NaN or inf values were written: {d['attrs']['nonfinite']} (values per dataset); heads refuse "
                  f"those rows; `featcache verify` lists them", ""]
    lines += [f"  {k:<22} {v}" for k, v in sorted(d["attrs"].items())]
    lines += ["", f"images:    {d['n_images']}  (failed: {d['failed_images']})",
              f"questions: {d['n_questions']}  (failed: {d['failed_questions']})",
              "splits:    " + ", ".join(f"{k}={v}" for k, v in d["splits"].items()), ""]
    for name, (shape, dtype, nbytes) in sorted(d["datasets"].items()):
        lines.append(f"  /{name:<22} {str(tuple(shape)):<18} {dtype:<8} {_human(nbytes)}")
    return "\n".join(lines)
