"""Feature views of a cache: per question, its image's features joined with its text features.

Questions share images (Easy-VQA: 9.6 per image), so a view keeps the image part once per image
plus an `image_row` index (`FactorizedFeatures`) instead of copying it per question. Linear first
layers exploit that; anything else calls `np.asarray(X)` and gets the plain (n, d) matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CacheFormatError
from .pooling import POOLED, pool_tokens


@dataclass(frozen=True)
class ViewSpec:
    name: str
    image: str | None  # /images dataset used, or None
    question: str | None  # /questions dataset used, or None
    pool: bool  # mean over query tokens instead of flattening
    description: str
    group: str = "images"  # where the image part lives: /images (per image) or /pairs (per image and question)

    @property
    def conditioned(self) -> bool:
        """Question-conditioned: the Q-Former read the question (extract --features multimodal)."""
        return self.group == "pairs"


VIEWS = {
    "itc": ViewSpec("itc", "query_proj", "text_proj", False,
                    "query_proj flattened (32x256) + text_proj (256): the reference paper's input, ITC-projected"),
    "pooled": ViewSpec("pooled", "query", "text_proj", True, "mean of the 32 query states (768) + text_proj (256)"),
    "full": ViewSpec("full", "query", "text_cls", False, "query states flattened (32x768) + text CLS (768)"),
    "sim": ViewSpec("sim", "query_proj", "text_proj", False, "the 32 ITC similarities query_proj . text_proj"),
    "image": ViewSpec("image", "query", None, True, "mean of the 32 query states only (no question features)"),
    "image_proj": ViewSpec("image_proj", "query_proj", None, False,
                           "query_proj flattened (32x256) only: the ITC-projected image, for image classification"),
    "mm": ViewSpec("mm", "mm_query", None, False, "question-conditioned query states flattened (32x768): the Q-Former "
                   "read the question with its queries (extract --features multimodal; InstructBLIP)", "pairs"),
    "mm_pooled": ViewSpec("mm_pooled", "mm_query", None, True, "mean of the 32 question-conditioned query states "
                          "(768)", "pairs"),
}
IMAGE_ONLY_VIEWS = tuple(name for name, spec in VIEWS.items() if spec.question is None and not spec.conditioned)
"""Views that need no question: every view of an image classification cache."""


class LazyImageRows:
    """The image part of a view left in the cache: rows are read when a head asks for a block of them.

    For caches larger than memory (`cache.view(name, split, stream=True)`): heads read it block by
    block (`heads.factorized.image_blocks`), so memory holds one block of images, not all of them.
    The cache must stay open while it is used. `np.asarray` reads it all (what a plain matrix needs).
    """

    def __init__(self, cache, name: str, rows: np.ndarray, pool: bool, tokens: int, width: int,
                 group: str = "images") -> None:
        self.cache, self.name, self.pool, self.tokens, self.width = cache, name, pool, tokens, width
        self.group = group
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) > 1 and np.any(np.diff(self.rows) <= 0):
            raise ValueError("LazyImageRows needs strictly increasing cache rows")

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.width)

    @property
    def dtype(self):
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index: np.ndarray) -> "LazyImageRows":
        """A subset of rows (increasing `index`), still unread."""
        return LazyImageRows(self.cache, self.name, self.rows[np.asarray(index)], self.pool, self.tokens, self.width,
                             self.group)

    def load(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows start:stop as float32 (n, width): one read of the cache range they span when they are
        dense in it (sequential I/O), else a read of just those rows."""
        rows = self.rows[start:stop]
        if not len(rows):
            return np.zeros((0, self.width), dtype=np.float32)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo <= 2 * len(rows):
            block = self.cache.read(self.group, self.name, slice(lo, hi))[rows - lo]
        else:
            block = self.cache.read(self.group, self.name, rows)
        if self.pool and block.ndim == 3:  # as build_view pools: the mean in float32, stored back in the cache's dtype
            return block.astype(np.float32).mean(axis=1).astype(block.dtype).astype(np.float32)
        return block.reshape(len(block), -1).astype(np.float32)

    def __getitem__(self, index) -> np.ndarray:
        index = np.arange(len(self))[index]
        order = np.argsort(index, kind="stable")
        out = np.empty((len(index), self.width), dtype=np.float32)
        out[order] = self.take(index[order]).load() if len(index) else out[order]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.load().astype(dtype or np.float32, copy=False)


class FactorizedFeatures:
    """X = [image_part[image_row], question_part] without materialising the copy per question.

    `np.asarray(X)` materialises it (float32), so any scikit-learn estimator accepts it.
    `image_tokens` says how many equal-width tokens the image part is made of (for per-token norms).
    `image_part` may be a `LazyImageRows` (a streamed view): featcache's heads then read it in blocks.
    """

    def __init__(self, image_part: np.ndarray, image_row: np.ndarray, question_part: np.ndarray | None,
                 image_tokens: int = 1) -> None:
        self.image_part = image_part
        self.image_row = np.asarray(image_row, dtype=np.int64)
        self.question_part = question_part
        self.image_tokens = image_tokens
        if question_part is not None and len(question_part) != len(self.image_row):
            raise ValueError("question_part and image_row must have one row per question")

    @property
    def shape(self) -> tuple[int, int]:
        d_q = 0 if self.question_part is None else self.question_part.shape[1]
        return (len(self.image_row), self.image_part.shape[1] + d_q)

    @property
    def dtype(self):
        return self.image_part.dtype

    def __len__(self) -> int:
        return len(self.image_row)

    @property
    def streamed(self) -> bool:
        return isinstance(self.image_part, LazyImageRows)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        parts = [np.asarray(self.image_part)[self.image_row]]
        if self.question_part is not None:
            parts.append(self.question_part)
        out = np.concatenate(parts, axis=1)
        return out.astype(dtype or np.float32, copy=False)

    def rows(self, index) -> np.ndarray:
        """Rows `index` as a plain float32 matrix, reading only the images they use."""
        index = np.arange(len(self))[index]
        used, inv = np.unique(self.image_row[index], return_inverse=True)
        parts = [np.asarray(self.image_part[used], dtype=np.float32)[inv]]
        if self.question_part is not None:
            parts.append(np.asarray(self.question_part[index], dtype=np.float32))
        return np.concatenate(parts, axis=1)

    def __getitem__(self, index) -> "FactorizedFeatures":
        """Row subset (array of indices or mask): still factorised. The images are shared where the rows use at
        least half of them (a training part); a smaller subset (a validation part) keeps only its own, so what
        reads it in blocks of images (predicting, a kNN search) reads those alone."""
        rows = np.arange(len(self))[index]
        q = None if self.question_part is None else self.question_part[rows]
        image_row = self.image_row[rows]
        used, inverse = np.unique(image_row, return_inverse=True)
        if 2 * len(used) >= len(self.image_part):
            return FactorizedFeatures(self.image_part, image_row, q, self.image_tokens)
        part = self.image_part.take(used) if isinstance(self.image_part, LazyImageRows) else self.image_part[used]
        return FactorizedFeatures(part, inverse.reshape(-1), q, self.image_tokens)


def _stored(cache, spec: ViewSpec) -> tuple[str, bool] | None:
    """(dataset, pool) a view reads its image part from, or None: mm_pooled reads /pairs/mm_pooled where the
    cache stores only the mean (extract --mm-store pooled), else pools /pairs/mm_query."""
    if spec.conditioned:
        pairs = cache.pairs
        if spec.pool and "mm_pooled" in pairs:
            return "mm_pooled", False
        return (spec.image, spec.pool) if spec.image in pairs else None
    if spec.image not in cache.images:
        return None
    if spec.pool and POOLED.get(spec.image) in cache.images:  # the mean stored at extraction (caches since 0.x)
        return POOLED[spec.image], False
    return spec.image, spec.pool


def available_views(cache) -> dict[str, str]:
    """View name -> '' if the cache can give it, else the reason it cannot."""
    out = {}
    for name, spec in VIEWS.items():
        lacks = []
        if spec.conditioned and _stored(cache, spec) is None:
            stored = "only their mean (--mm-store pooled)" if "mm_pooled" in cache.pairs else "none"
            out[name] = (f"needs /pairs/{spec.image}, the question-conditioned query states; this cache holds "
                         f"{stored}. Extract with --features multimodal" + (" (--mm-store full)" if stored != "none"
                                                                            else "")
                         + " (add them to a --store-vision cache without rerunning the ViT: --from-vision CACHE)")
            continue
        if spec.conditioned:
            out[name] = ""
            continue
        if spec.image and spec.image not in cache.images:
            lacks.append(f"/images/{spec.image}")
        if spec.question and spec.question not in cache.questions:
            lacks.append(f"/questions/{spec.question}")
        why = ("an image classification cache has no questions" if cache.attrs.get("task") == "classify" and spec.question
               else f"model {cache.attrs.get('model_class')} has no text path / projections")
        out[name] = "" if not lacks else f"needs {' and '.join(lacks)}, which this cache lacks ({why})"
    return out


def default_views(cache) -> list[str]:
    """What a sweep tries when not told: pooled and itc where the cache has question features, else (image
    classification, generative checkpoints) every image-only view it has."""
    available = [v for v, reason in available_views(cache).items() if not reason]
    conditioned = [v for v in ("mm_pooled", "mm") if v in available]
    if "text_proj" in cache.questions or "text_cls" in cache.questions:
        return [v for v in ("pooled", "itc") if v in available] + conditioned
    if conditioned:  # InstructBLIP: the question-conditioned views beside the image alone
        return [v for v in ("image",) if v in available] + conditioned
    return [v for v in IMAGE_ONLY_VIEWS if v in available]


def question_rows(cache, split: str | list[str] | None = None, include_failed: bool = False) -> np.ndarray:
    """The cache rows of the questions a view of `split` holds, in its order (usable ones unless
    `include_failed`)."""
    splits = cache.strings("questions", "split")
    mask = np.ones(len(splits), dtype=bool) if split is None else np.isin(splits, [split] if isinstance(split, str) else split)
    if not include_failed:
        mask &= cache.strings("questions", "error") == ""
    if split is not None and not mask.any():
        raise CacheFormatError(f"no usable questions in split {split!r}; splits: {sorted(set(splits))}")
    return np.flatnonzero(mask)


def build_view(cache, name: str, split: str | list[str] | None = None, include_failed: bool = False,
               stream: bool = False):
    """(X, y) for questions of `split` (all splits when None); y holds answer strings. With `stream` the
    image part stays in the cache (a `LazyImageRows`) and the question part is read: for caches whose
    images do not fit in memory."""
    if name not in VIEWS:
        raise CacheFormatError(f"unknown view {name!r}; views: {', '.join(VIEWS)}")
    reason = available_views(cache)[name]
    if reason:
        ok = [v for v, r in available_views(cache).items() if not r]
        raise CacheFormatError(f"view {name!r} {reason}. Available views: {', '.join(ok)}")
    spec = VIEWS[name]
    q_idx = question_rows(cache, split, include_failed)
    y = cache.strings("questions", "answer")[q_idx]
    if spec.conditioned:
        return _conditioned_view(cache, spec, q_idx, y, stream)
    image_row = cache.array("questions", "image_row")[q_idx]
    used, image_row = np.unique(image_row, return_inverse=True)  # load only the images this split uses
    question = cache.read("questions", spec.question, q_idx) if spec.question else None
    dataset, pool = _stored(cache, spec)
    if stream:
        if name == "sim":
            raise CacheFormatError("view 'sim' cannot be streamed (it is small: 32 numbers per question); "
                                   "use it without stream")
        shape = cache.images[spec.image].shape[1:]
        width = shape[-1] if spec.pool else int(np.prod(shape))
        lazy = LazyImageRows(cache, dataset, used, pool, 1 if spec.pool else shape[0], width)
        return FactorizedFeatures(lazy, image_row, question, lazy.tokens), y
    if spec.pool and name != "sim":  # the stored mean, or pooled a block at a time (never all 32 states in float32)
        used = np.sort(used)
        if not pool:
            pooled = cache.read("images", dataset, used) if len(used) else \
                np.zeros((0, cache.images[dataset].shape[-1]), dtype=cache.images[dataset].dtype)
            return FactorizedFeatures(pooled, image_row, question, 1), y
        blocks = [pool_tokens(cache.read("images", spec.image, used[i:i + POOL_BLOCK]))
                  for i in range(0, len(used), POOL_BLOCK)]
        shape = cache.images[spec.image].shape
        pooled = np.concatenate(blocks) if blocks else np.zeros((0, shape[-1]), dtype=cache.images[spec.image].dtype)
        return FactorizedFeatures(pooled, image_row, question, 1), y
    images = cache.read("images", spec.image, np.sort(used)) if len(used) else np.zeros((0, *cache.images[spec.image].shape[1:]))
    return view_from_arrays(name, images, image_row, question), y


def build_split_views(cache, name: str, splits: list[str], stream: bool = False) -> list[tuple]:
    """[build_view(cache, name, split) for split in splits], from one read of the image rows they use: a split of a
    tenth of the images (a validation or test split) touches nearly every chunk of the file, so reading the splits
    one by one reads the file twice. The largest split shares the image array read (rows no question of it uses
    stay in it); the others get their own images."""
    if stream or len(splits) < 2 or len(set(splits)) < len(splits) or VIEWS.get(name) is None:
        return [build_view(cache, name, s, stream=stream) for s in splits]
    for s in splits:
        question_rows(cache, s)  # (an empty split fails as it does alone)
    X, y = build_view(cache, name, list(splits))
    split_of = cache.strings("questions", "split")[question_rows(cache, list(splits))]
    positions = [np.flatnonzero(split_of == s) for s in splits]
    largest = int(np.argmax([len(p) for p in positions]))
    out = []
    for i, pos in enumerate(positions):
        if not isinstance(X, FactorizedFeatures):
            out.append((X[pos], y[pos]))
            continue
        rows = X.image_row[pos]
        q = None if X.question_part is None else X.question_part[pos]
        if i == largest:
            out.append((FactorizedFeatures(X.image_part, rows, q, X.image_tokens), y[pos]))
            continue
        used, row = np.unique(rows, return_inverse=True)
        out.append((FactorizedFeatures(X.image_part[used], row, q, X.image_tokens), y[pos]))
    return out


def _conditioned_view(cache, spec: ViewSpec, q_idx: np.ndarray, y: np.ndarray, stream: bool):
    """A view of /pairs: factorised by each question's pair (a question asked twice of an image shares it)."""
    dataset, pool = _stored(cache, spec)
    pair_row = cache.array("questions", "pair_row")[q_idx]
    if len(pair_row) and pair_row.min() < 0:
        raise CacheFormatError(f"{cache.path}: some usable questions have no question-conditioned states "
                               f"(/questions/pair_row -1); the cache is damaged: re-extract it")
    used, row = np.unique(pair_row, return_inverse=True)
    shape = cache.pairs[dataset].shape[1:]
    width = shape[-1] if pool or len(shape) == 1 else int(np.prod(shape))
    tokens = 1 if pool or len(shape) == 1 else shape[0]
    if stream:
        return FactorizedFeatures(LazyImageRows(cache, dataset, used, pool, tokens, width, "pairs"), row, None,
                                  tokens), y
    if pool:
        blocks = [pool_tokens(cache.read("pairs", dataset, used[i:i + POOL_BLOCK])) for i in range(0, len(used),
                                                                                                    POOL_BLOCK)]
        part = np.concatenate(blocks) if blocks else np.zeros((0, width), dtype=cache.pairs[dataset].dtype)
    else:
        states = cache.read("pairs", dataset, used) if len(used) else np.zeros((0, *shape), cache.pairs[dataset].dtype)
        part = states.reshape(len(states), -1)
    return FactorizedFeatures(part, row, None, tokens), y


POOL_BLOCK = 4096
"""Images pooled per block by a pooled view (4,096 x 32 x 768 float32 is 0.4 GB)."""




def view_from_arrays(name: str, images: np.ndarray, image_row: np.ndarray, question: np.ndarray | None):
    """The view `name` of per-image arrays (N, 32, d) and per-question arrays (Nq, d) joined by image_row.
    Shared by cache reading and live prediction, so both give a head the same features."""
    spec = VIEWS[name]
    if name == "sim":
        return np.einsum("qtd,qd->qt", images[image_row].astype(np.float32), question.astype(np.float32))
    if spec.pool:
        image_part, tokens = pool_tokens(images), 1
    else:
        image_part, tokens = images.reshape(len(images), -1), images.shape[1]
    return FactorizedFeatures(image_part, image_row, question, tokens)
