"""The sharded form of a cache: a finished parts folder read in place, with the single file's API.

For data beyond one disk or one machine's memory, `open_cache(FILE.h5.parts)` reads the shards where
they are: views, info, sweep, evaluate and predict work as on the merged file, and read only the rows
they ask for. Shard files are opened on first use and kept open (one handle per shard, all closed
by `close`); no HDF5 virtual dataset is involved, so no open-file limit can silently fill reads with
zeros.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheFormatError, FeatcacheError
from .answers import COLUMNS, string_columns
from .file import FORMAT_VERSION, FeatureCache
from .parts import missing_shards, read_manifest, recorded_checksum, sha256_file
from .parts_check import check_shard, load_npz, member


class _Column:
    """What callers ask of a dataset without reading it: its shape and dtype."""

    def __init__(self, shape: tuple[int, ...], dtype) -> None:
        self.shape, self.dtype = shape, dtype


class ShardedCache(FeatureCache):
    """A finished OUT.parts/ folder as a cache; see the module docstring."""

    def __init__(self, parts: str | Path) -> None:
        self.path = Path(parts)
        self._handles: dict[int, h5py.File] = {}
        try:
            self.manifest = read_manifest(self.path)
        except FeatcacheError as exc:
            raise CacheFormatError(str(exc)) from None
        missing = missing_shards(self.path, self.manifest)
        if missing:
            raise CacheFormatError(f"{self.path}: {len(missing)} of {len(self.manifest['shards'])} shards are not "
                                   f"finished; finish the extraction (its command resumes) before reading it")
        shards = self.manifest["shards"]
        self.starts = [s["start"] for s in shards]
        try:
            self._q = load_npz(self.path, "questions.npz", "the question table")
            self._text = {}
            if self.manifest["texts_file"]:
                texts = load_npz(self.path, self.manifest["texts_file"], "the question texts' features")
                self._text = {k: texts[k] for k in ("text_cls", "text_proj")}
        except FeatcacheError as exc:
            raise CacheFormatError(str(exc)) from None
        self._q.update(string_columns(self._q))
        first = self._shard(0)["images"]
        n, nq = self.manifest["n_images"], len(self._q["text"])
        self._images = {name: _Column((n, *first[name].shape[1:]), first[name].dtype) for name in first}
        self._questions = {name: _Column((nq, *self._q[name].shape[1:]), self._q[name].dtype)
                           for name in ("text", "answer", "split", "error", "image_row", "truncated", *COLUMNS)
                           if name in self._q}
        self._questions.update({name: _Column((nq, *v.shape[1:]), v.dtype) for name, v in self._text.items()})
        self._pairs: dict = {}
        if "n_pairs" in self.manifest and "pair_row" in self._q:  # question-conditioned features, shard by shard
            self._questions["pair_row"] = _Column((nq,), self._q["pair_row"].dtype)
            self.pair_starts = [s["pair_start"] for s in shards]
            block = self._shard(0)["pairs"]
            self._pairs = {name: _Column((self.manifest["n_pairs"], *block[name].shape[1:]), block[name].dtype)
                           for name in block}
        self.attrs = {**self.manifest["attrs"], "featcache_format": FORMAT_VERSION,
                      "store_dtype": self.manifest["store_dtype"], "compression": "none", "form": "sharded"}
        self._image_errors = None

    def _shard(self, i: int) -> h5py.File:
        """Shard i, opened once and checked to be the one the manifest names (featcache.cache.parts_check)."""
        if i not in self._handles:
            entry = self.manifest["shards"][i]
            try:
                handle = h5py.File(member(self.path, entry["file"], "a shard"), "r")
            except OSError as exc:
                raise CacheFormatError(f"{self.path / entry['file']} cannot be opened as HDF5 ({exc}); delete it and "
                                       f"its .json, and re-run the extract (it recomputes that shard)") from None
            try:
                check_shard(self.path, entry, self.manifest, handle)
            except FeatcacheError as exc:
                handle.close()
                raise CacheFormatError(str(exc)) from None
            self._handles[i] = handle
        return self._handles[i]

    @property
    def images(self) -> dict:
        return self._images

    @property
    def questions(self) -> dict:
        return self._questions

    @property
    def pairs(self) -> dict:
        return self._pairs

    @property
    def n_images(self) -> int:
        return self.manifest["n_images"]

    @property
    def n_questions(self) -> int:
        return len(self._q["text"])

    def read(self, group: str, name: str, rows=slice(None)) -> np.ndarray:
        columns = {"images": self._images, "pairs": self._pairs}.get(group, self._questions)
        if name not in columns:
            raise CacheFormatError(f"{self.path} has no /{group}/{name}")
        if group == "questions":
            return self._read_question(name, rows)
        starts, count = (self.starts, "n_images") if group == "images" else (self.pair_starts, "n_pairs")
        wanted = np.arange(columns[name].shape[0])[rows]
        parts = []
        for i in sorted({bisect.bisect_right(starts, r) - 1 for r in wanted.tolist()}):
            start = starts[i]
            local = wanted[(wanted >= start) & (wanted < start + self.manifest["shards"][i][count])] - start
            if not len(local):  # a shard holding no pairs shares its start with the next
                continue
            ds = self._shard(i)[group][name]
            try:
                block = ds.asstr()[local] if h5py.check_string_dtype(ds.dtype) else ds[local]
            except OSError as exc:
                raise CacheFormatError(f"{self.path / self.manifest['shards'][i]['file']}: /{group}/{name} cannot be "
                                       f"read ({str(exc).splitlines()[0]}): the shard is damaged; delete it and "
                                       f"its .json, and rerun the extraction to redo it") from None
            parts.append(block.astype(object) if block.dtype.kind in "OUS" else block)
        if not parts:
            return np.zeros((0, *columns[name].shape[1:]), dtype=columns[name].dtype)
        return np.concatenate(parts)

    def _read_question(self, name: str, rows) -> np.ndarray:
        if name in self._text:
            idx = self._q["text_row"][rows]
            out = self._text[name][np.maximum(idx, 0)]
            out[idx < 0] = 0
            return out
        if name == "error":  # as merged: a question of a failed image says so
            if self._image_errors is None:
                self._image_errors = self.read("images", "error")
            errors = self._q["error"][rows].astype(object)
            image_rows = self._q["image_row"][rows]
            return np.array([e or (f"image failed: {self._image_errors[r]}" if self._image_errors[r] else "")
                             for e, r in zip(errors, image_rows)], dtype=object)
        values = self._q[name][rows]
        return values.astype(object) if values.dtype.kind == "U" else values

    def describe(self) -> dict:
        files = [self.path / s["file"] for s in self.manifest["shards"]]
        sizes = {f"images/{k}": (c.shape, str(c.dtype), 0) for k, c in self._images.items()}
        sizes.update({f"questions/{k}": (c.shape, str(c.dtype), 0) for k, c in self._questions.items()})
        sizes.update({f"pairs/{k}": (c.shape, str(c.dtype), 0) for k, c in self._pairs.items()})
        splits, counts = np.unique(self.strings("questions", "split"), return_counts=True)
        return {"path": str(self.path), "file_bytes": sum(f.stat().st_size for f in files), "attrs": self.attrs,
                "n_images": self.n_images, "n_questions": self.n_questions,
                "failed_images": int(np.count_nonzero(self.strings("images", "error") != "")),
                "failed_questions": int(np.count_nonzero(self.strings("questions", "error") != "")),
                "splits": {str(s): int(c) for s, c in zip(splits, counts)}, "datasets": sizes}

    def verify(self) -> list[str]:
        """Each shard against its recorded checksum."""
        problems = []
        for i, s in enumerate(self.manifest["shards"]):
            try:
                if sha256_file(member(self.path, s["file"], "a shard")) != recorded_checksum(self.path, s):
                    problems.append(f"{s['file']} does not match its checksum (damaged after it was written)")
                else:
                    self._shard(i)  # and it is the shard the manifest names
            except FeatcacheError as exc:
                problems.append(str(exc))
        return problems

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
