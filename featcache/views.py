"""Feature views of a cache: per question, its image's features joined with its text features.

Questions share images (Easy-VQA: 9.6 per image), so a view keeps the image part once per image
plus an `image_row` index (`FactorizedFeatures`) instead of copying it per question. Linear first
layers exploit that; anything else calls `np.asarray(X)` and gets the plain (n, d) matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CacheFormatError


@dataclass(frozen=True)
class ViewSpec:
    name: str
    image: str | None  # /images dataset used, or None
    question: str | None  # /questions dataset used, or None
    pool: bool  # mean over query tokens instead of flattening
    description: str


VIEWS = {
    "itc": ViewSpec("itc", "query_proj", "text_proj", False,
                    "query_proj flattened (32x256) + text_proj (256): the reference paper's input, ITC-projected"),
    "pooled": ViewSpec("pooled", "query", "text_proj", True, "mean of the 32 query states (768) + text_proj (256)"),
    "full": ViewSpec("full", "query", "text_cls", False, "query states flattened (32x768) + text CLS (768)"),
    "sim": ViewSpec("sim", "query_proj", "text_proj", False, "the 32 ITC similarities query_proj . text_proj"),
    "image": ViewSpec("image", "query", None, True, "mean of the 32 query states only (no question features)"),
}


class FactorizedFeatures:
    """X = [image_part[image_row], question_part] without materialising the copy per question.

    `np.asarray(X)` materialises it (float32), so any scikit-learn estimator accepts it.
    `image_tokens` says how many equal-width tokens the image part is made of (for per-token norms).
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

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        parts = [self.image_part[self.image_row]]
        if self.question_part is not None:
            parts.append(self.question_part)
        out = np.concatenate(parts, axis=1)
        return out.astype(dtype or np.float32, copy=False)

    def __getitem__(self, index) -> "FactorizedFeatures":
        """Row subset (array of indices or mask): still factorised, images shared."""
        rows = np.arange(len(self))[index]
        q = None if self.question_part is None else self.question_part[rows]
        return FactorizedFeatures(self.image_part, self.image_row[rows], q, self.image_tokens)


def available_views(cache) -> dict[str, str]:
    """View name -> '' if the cache can give it, else the reason it cannot."""
    out = {}
    for name, spec in VIEWS.items():
        lacks = []
        if spec.image and spec.image not in cache.images:
            lacks.append(f"/images/{spec.image}")
        if spec.question and spec.question not in cache.questions:
            lacks.append(f"/questions/{spec.question}")
        out[name] = "" if not lacks else (f"needs {' and '.join(lacks)}, which this cache lacks (model "
                                          f"{cache.attrs.get('model_class')} has no text path / projections)")
    return out


def build_view(cache, name: str, split: str | list[str] | None = None, include_failed: bool = False):
    """(X, y) for questions of `split` (all splits when None); y holds answer strings."""
    if name not in VIEWS:
        raise CacheFormatError(f"unknown view {name!r}; views: {', '.join(VIEWS)}")
    reason = available_views(cache)[name]
    if reason:
        ok = [v for v, r in available_views(cache).items() if not r]
        raise CacheFormatError(f"view {name!r} {reason}. Available views: {', '.join(ok)}")
    spec = VIEWS[name]
    splits = cache.strings("questions", "split")
    mask = np.ones(len(splits), dtype=bool) if split is None else np.isin(splits, [split] if isinstance(split, str) else split)
    if not include_failed:
        mask &= cache.strings("questions", "error") == ""
    if split is not None and not mask.any():
        raise CacheFormatError(f"no usable questions in split {split!r}; splits: {sorted(set(splits))}")
    q_idx = np.flatnonzero(mask)
    y = cache.strings("questions", "answer")[q_idx]
    image_row = cache.array("questions", "image_row")[q_idx]
    used, image_row = np.unique(image_row, return_inverse=True)  # load only the images this split uses
    images = cache.read("images", spec.image, np.sort(used)) if len(used) else np.zeros((0, *cache.images[spec.image].shape[1:]))
    question = cache.read("questions", spec.question, q_idx) if spec.question else None
    return view_from_arrays(name, images, image_row, question), y


def view_from_arrays(name: str, images: np.ndarray, image_row: np.ndarray, question: np.ndarray | None):
    """The view `name` of per-image arrays (N, 32, d) and per-question arrays (Nq, d) joined by image_row.
    Shared by cache reading and live prediction, so both give a head the same features."""
    spec = VIEWS[name]
    if name == "sim":
        return np.einsum("qtd,qd->qt", images[image_row].astype(np.float32), question.astype(np.float32))
    if spec.pool:
        image_part, tokens = images.astype(np.float32).mean(axis=1).astype(images.dtype), 1
    else:
        image_part, tokens = images.reshape(len(images), -1), images.shape[1]
    return FactorizedFeatures(image_part, image_row, question, tokens)
