"""The single-file HDF5 feature cache, format v1: its writer and lazy reader (see docs/FORMAT.md).

Only h5py and numpy here, so that reading a cache (the CPU heads) never imports torch or
transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .file_check import check_file
from .pooling import POOLED, pool_tokens
from ..errors import CacheFormatError

FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 20
"""Target chunk size: a few images per chunk keeps random reads of a few rows cheap."""

MATCH_KEYS = ("model_fingerprint", "preprocessing", "image_decoding", "image_size", "image_mean", "image_std",
              "image_resample", "max_text_length")
"""Attributes that must agree for features from two sources to be interchangeable."""

_STR = h5py.string_dtype("utf-8")

def _chunk_rows(row_shape: tuple[int, ...], dtype) -> int:
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize if row_shape else 8
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def _attr(value):
    """Python value -> something HDF5 stores faithfully."""
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)  # np.str_ has no HDF5 conversion
    return value


def _py(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


READ_BYTES = 16 << 20
"""Bytes a numeric read moves per HDF5 call, straight into a reused buffer: 1.36 GB of VQAv2's query_proj reads in
0.6 s this way, 1.0-1.2 s as 200 MB slices copied out, 2-3 s as one whole read (measured on a 2-core machine)."""


def _read_rows(ds, rows, n: int, block: int = 4096) -> np.ndarray:
    """ds[rows]. Increasing integer rows are read as contiguous blocks and picked in memory (h5py selects a
    fancy index point by point: 82k of 83k rows took a minute, as slices they take seconds); rows so sparse that
    the blocks would read over 32 times the rows wanted keep h5py's selection. Numeric datasets are read
    READ_BYTES at a time into one buffer; strings (an asstr wrapper) `block` rows at a time."""
    numeric = isinstance(ds, h5py.Dataset)
    if numeric:
        row_bytes = int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
        block = max(1, READ_BYTES // max(1, row_bytes))
    if isinstance(rows, slice):
        first, stop, step = rows.indices(n)
        if not numeric or step != 1 or stop <= first:
            return ds[rows]
        out = np.empty((stop - first, *ds.shape[1:]), dtype=ds.dtype)
        for start in range(first, stop, block):
            end = min(start + block, stop)
            ds.read_direct(out, np.s_[start:end], np.s_[start - first:end - first])
        return out
    if np.ndim(rows) != 1:
        return ds[rows]
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    if len(rows) < 2 or np.any(np.diff(rows) <= 0):
        return ds[rows]
    touched = len(np.unique(rows // block))
    if touched * block > 32 * len(rows):
        return ds[rows]
    out = np.empty((len(rows), *ds.shape[1:]), dtype=ds.dtype) if numeric else None
    buffer = None
    for start in range(int(rows[0]), int(rows[-1]) + 1, block):
        lo, hi = np.searchsorted(rows, [start, start + block])
        if hi == lo:
            continue
        end = min(start + block, n)
        if numeric and rows[hi - 1] - rows[lo] == hi - lo - 1:  # a run of rows: read straight into place
            ds.read_direct(out, np.s_[int(rows[lo]):int(rows[hi - 1]) + 1], np.s_[lo:hi])
            continue
        if numeric:
            if buffer is None:
                buffer = np.empty((block, *ds.shape[1:]), dtype=ds.dtype)
            ds.read_direct(buffer, np.s_[start:end], np.s_[0:end - start])
            np.take(buffer, rows[lo:hi] - start, axis=0, out=out[lo:hi])  # (one copy, straight into place)
            continue
        part = ds[start:end][rows[lo:hi] - start]
        if out is None:  # filled in place: no second copy of the rows for a concatenation
            out = np.empty((len(rows), *part.shape[1:]), dtype=part.dtype)
        out[lo:hi] = part
    return out


class CacheWriter:
    """Creates every dataset at its final size up front, then fills rows; datasets stay resizable."""

    def __init__(self, path: str | Path, attrs: dict, n_images: int, n_questions: int,
                 image_arrays: dict[str, tuple[int, ...]], question_arrays: dict[str, tuple[int, ...]],
                 store_dtype: str = "float16", compression: str | None = None,
                 question_strings: tuple[str, ...] = (), pair_arrays: dict[str, tuple[int, ...]] | None = None,
                 n_pairs: int = 0) -> None:
        """pair_arrays: question-conditioned features, one row per (image, question) pair in /pairs (with
        its image_row and Q-Former text), found from a question by /questions/pair_row."""
        self.file = h5py.File(path, "w")
        self.file.attrs["featcache_format"] = FORMAT_VERSION
        self.file.attrs["store_dtype"] = store_dtype
        self.file.attrs["compression"] = compression or "none"
        for key, value in attrs.items():
            self.file.attrs[key] = _attr(value)
        images = self.file.create_group("images")
        questions = self.file.create_group("questions")
        for name in ("key", "error"):
            self._make(images, name, n_images, (), _STR, None)
        for name in ("text", "answer", "split", "error", *question_strings):
            self._make(questions, name, n_questions, (), _STR, None)
        self._make(questions, "image_row", n_questions, (), np.int64, None)
        self._make(questions, "truncated", n_questions, (), np.uint8, None)
        for name, shape in image_arrays.items():
            self._make(images, name, n_images, shape, store_dtype, compression)
            if name in POOLED and len(shape) == 2:
                self._make(images, POOLED[name], n_images, shape[1:], store_dtype, compression)
        for name, shape in question_arrays.items():
            self._make(questions, name, n_questions, shape, store_dtype, compression)
        if pair_arrays is not None:
            pairs = self.file.create_group("pairs")
            self._make(pairs, "image_row", n_pairs, (), np.int64, None)
            self._make(pairs, "text", n_pairs, (), _STR, None)
            self._make(questions, "pair_row", n_questions, (), np.int64, None)
            for name, shape in pair_arrays.items():
                self._make(pairs, name, n_pairs, shape, store_dtype, compression)

    @staticmethod
    def _make(group, name, n, row_shape, dtype, compression) -> None:
        is_str = dtype is _STR
        rows = min(max(n, 1), _chunk_rows(row_shape, np.int64 if is_str else dtype))
        # fletcher32: every chunk of numbers carries a checksum, so damaged bytes fail loudly on read
        # (HDF5 cannot filter variable-length strings; their damage shows as undecodable heap data)
        group.create_dataset(name, shape=(n, *row_shape), maxshape=(None, *row_shape), dtype=dtype,
                             chunks=(rows, *row_shape), compression=compression, fletcher32=not is_str)

    def write(self, group: str, start: int, arrays: dict[str, np.ndarray | list]) -> None:
        for name, values in arrays.items():
            ds = self.file[group][name]
            is_str = h5py.check_string_dtype(ds.dtype) is not None
            values = np.asarray(values, dtype=object if is_str else ds.dtype)
            if not is_str and values.dtype.kind == "f":  # NaN/inf (an fp16 overflow on a GPU, NaN vision states)
                bad = int(np.count_nonzero(~np.isfinite(values)))
                if bad:
                    self.nonfinite[f"{group}/{name}"] = self.nonfinite.get(f"{group}/{name}", 0) + bad
            ds[start:start + len(values)] = values
            derived = POOLED.get(name) if group == "images" else None
            if derived is not None and derived in self.file[group] and values.ndim == 3:
                self.file[group][derived][start:start + len(values)] = pool_tokens(values)

    @property
    def nonfinite(self) -> dict[str, int]:
        """NaN or inf values written so far, per dataset (recorded in the attribute `nonfinite` at close)."""
        if not hasattr(self, "_nonfinite"):
            self._nonfinite: dict[str, int] = {}
        return self._nonfinite

    def close(self) -> None:
        if self.nonfinite:
            self.file.attrs["nonfinite"] = json.dumps(self.nonfinite, sort_keys=True)
        self.file.close()


class FeatureCache:
    """Lazy read access to a cache file. Arrays are read from disk only when asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheFormatError(f"cache file {self.path} does not exist; create it with `featcache extract`")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            with open(self.path, "rb") as fh:
                if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                    raise CacheFormatError(f"{self.path} is not an HDF5 file, so not a featcache cache; caches are "
                                           f"made by `featcache extract --out FILE.h5`") from None
            raise CacheFormatError(f"{self.path} is not a readable HDF5 file ({exc}). It is damaged or incomplete "
                                   f"(extract writes caches atomically, so an interrupted run never leaves one "
                                   f"like this: a copy cut short?). Copy it again, or re-create it with the same "
                                   f"`featcache extract ... --out {self.path} --overwrite`") from None
        version = self.file.attrs.get("featcache_format")
        if version is None:
            self.close()
            raise CacheFormatError(f"{self.path} is an HDF5 file but not a featcache cache (no featcache_format "
                                   f"attribute)")
        if int(version) != FORMAT_VERSION:
            writer = _py(self.file.attrs.get("featcache_version", "?"))
            self.close()
            raise CacheFormatError(f"{self.path} has cache format {int(version)}; this featcache reads format "
                                   f"{FORMAT_VERSION}. Re-extract it, or use the featcache version that wrote it "
                                   f"({writer})")
        self.attrs: dict = {k: _py(v) for k, v in self.file.attrs.items()}
        try:
            check_file(self.path, self.file)  # no external storage, links, virtual or resized datasets
        except CacheFormatError:
            self.close()
            raise
        lacking = [f"/{g}/{d}" for g, names in (("images", ("key", "error")), ("questions", ("text", "answer", "split",
                   "error", "image_row"))) for d in names if g not in self.file or d not in self.file[g]]
        if lacking:
            self.close()
            raise CacheFormatError(f"{self.path} is damaged: it lacks {', '.join(lacking)}. Re-create it with "
                                   f"`featcache extract ... --out {self.path} --overwrite`")

    # -- access ---------------------------------------------------------------------------------------
    @property
    def images(self) -> h5py.Group:
        return self.file["images"]

    @property
    def questions(self) -> h5py.Group:
        return self.file["questions"]

    @property
    def pairs(self):
        """The question-conditioned features (`extract --features multimodal`); empty when the cache has none."""
        return self.file["pairs"] if "pairs" in self.file else {}

    @property
    def n_images(self) -> int:
        return int(self.images["key"].shape[0])

    @property
    def n_questions(self) -> int:
        return int(self.questions["text"].shape[0])

    @property
    def has_text(self) -> bool:
        return "text_proj" in self.questions

    def read(self, group: str, name: str, rows=slice(None)) -> np.ndarray:
        """Rows of /group/name; damaged bytes (a failed chunk checksum) raise CacheFormatError naming them."""
        if group not in self.file or name not in self.file[group]:
            raise CacheFormatError(f"{self.path} has no /{group}/{name}")
        ds = self.file[group][name]
        try:
            source = ds.asstr() if h5py.check_string_dtype(ds.dtype) else ds
            out = _read_rows(source, rows, len(ds))
            return out.astype(object) if source is not ds else out
        except OSError as exc:
            raise CacheFormatError(
                f"{self.path}: /{group}/{name} cannot be read ({str(exc).splitlines()[0]}): the file is damaged. "
                f"`featcache verify {self.path}` lists every damaged dataset; copy the file again or re-create "
                f"it with `featcache extract ... --overwrite`") from None

    def strings(self, group: str, name: str) -> np.ndarray:
        """A string column as a numpy array of str. Decoded once per open cache (a file opened read-only does not
        change): the views and benchmark fields of each split read the same columns, 0.2 s each on VQAv2."""
        memo = self.__dict__.setdefault("_strings", {})
        if (group, name) not in memo:
            memo[group, name] = self.read(group, name)
        return memo[group, name].copy()  # (a pointer copy: callers may change theirs)

    def array(self, group: str, name: str) -> np.ndarray:
        return self.read(group, name)

    # -- features -------------------------------------------------------------------------------------
    def view(self, name: str, split: str | list[str] | None = None, stream: bool = False):
        """(X, y) for a feature view (see featcache.cache.views.VIEWS); X is factorised, y the answers. With
        `stream` the images stay on disk and heads read them in blocks (keep the cache open meanwhile)."""
        from .views import build_view

        return build_view(self, name, split, stream=stream)

    def split_views(self, name: str, splits: list[str], stream: bool = False) -> list[tuple]:
        """[(X, y) of each split]: what `view(name, split)` gives for each, from one read of the cache."""
        from .views import build_split_views

        return build_split_views(self, name, list(splits), stream=stream)

    def views(self) -> dict[str, str]:
        """View name -> '' if available, else why not."""
        from .views import available_views

        return available_views(self)

    # -- checks ---------------------------------------------------------------------------------------
    def check_compatible(self, expected: dict, what: str = "the caller") -> None:
        """Refuse loudly when `expected` provenance (a model, a head) disagrees with this cache's."""
        diffs = [f"{k}: cache has {self.attrs.get(k)!r}, {what} has {expected[k]!r}"
                 for k in MATCH_KEYS if k in expected and k in self.attrs
                 and json.dumps(self.attrs[k]) != json.dumps(_py(expected[k]))]
        if diffs:
            raise CacheFormatError(
                f"{self.path} was made with a different model or preprocessing than {what} "
                f"(cache model {self.attrs.get('model_id')!r}, expected {expected.get('model_id')!r}):\n  "
                + "\n  ".join(diffs) + "\nRe-extract the cache with the same --model, or use a matching one.")

    # -- description ----------------------------------------------------------------------------------
    def describe(self) -> dict:
        """Metadata, counts and dataset sizes, for `featcache info`."""
        sizes = {}
        self.file.visititems(lambda name, obj: sizes.__setitem__(name, (obj.shape, str(obj.dtype), obj.id.get_storage_size()))
                             if isinstance(obj, h5py.Dataset) else None)
        n_failed_images = int(np.count_nonzero(self.strings("images", "error") != ""))
        n_failed_questions = int(np.count_nonzero(self.strings("questions", "error") != ""))
        splits, counts = np.unique(self.strings("questions", "split"), return_counts=True)
        return {"path": str(self.path), "file_bytes": self.path.stat().st_size, "attrs": self.attrs,
                "n_images": self.n_images, "n_questions": self.n_questions,
                "failed_images": n_failed_images, "failed_questions": n_failed_questions,
                "splits": {str(s): int(c) for s, c in zip(splits, counts)}, "datasets": sizes}

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
