"""Question-conditioned features: which (image, question) pairs a run computes, and where each is stored.

With `--features multimodal` the Q-Former reads the question while it looks at the image, so its query
states belong to a pair, not to an image. The distinct pairs are numbered in the cache's image order
(then by first appearance), so the pairs of a shard's images are one contiguous block: a shard stores its
block, merge appends the blocks in order (sequential writes, as for /images), and a question finds its
states through /questions/pair_row. A question asked twice of one image is computed and stored once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

FEATURES = ("unimodal", "multimodal")
MM_STORES = ("full", "pooled")
DEFAULT_MM_PROMPT = "{}"
"""What the Q-Former reads of a question: the question as it is (LAVIS's extract_features(mode="multimodal")
reads the caption as given; InstructBLIP users pass the prompt they generate with, e.g. "Question: {} Short
answer:")."""


@dataclass(frozen=True)
class PairTable:
    """The distinct (image row, Q-Former text) pairs of a run, sorted by image row."""

    image_row: np.ndarray
    """(n_pairs,) int64, non-decreasing."""
    text: np.ndarray
    """(n_pairs,) str: the Q-Former's input (the prompt with the question in it)."""
    pair_row: np.ndarray
    """(n_questions,) int64: each question's pair, -1 for questions that failed before extraction."""

    @property
    def n_pairs(self) -> int:
        return len(self.image_row)

    def block(self, start: int, stop: int) -> tuple[int, int]:
        """The pair rows [lo, hi) of the images in rows [start, stop)."""
        lo, hi = np.searchsorted(self.image_row, [start, stop])
        return int(lo), int(hi)

    def of_images(self, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The pair rows of image rows `rows` (increasing) and, for each, the position of its image in `rows`."""
        rows = np.asarray(rows, dtype=np.int64)
        lo = np.searchsorted(self.image_row, rows, side="left")
        hi = np.searchsorted(self.image_row, rows, side="right")
        pairs = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]) if len(rows) else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(rows)), hi - lo)
        return pairs.astype(np.int64), owner


def pair_table(image_rows: np.ndarray, texts: list[str], usable: np.ndarray, prompt: str = DEFAULT_MM_PROMPT) -> PairTable:
    """Number the distinct (image, prompt.format(question)) pairs of the usable questions in image order."""
    n = len(texts)
    formatted = [prompt.format(t) if ok else "" for t, ok in zip(texts, usable)]
    seen: dict[tuple[int, str], int] = {}
    for i in np.flatnonzero(usable)[np.argsort(np.asarray(image_rows)[usable], kind="stable")]:
        seen.setdefault((int(image_rows[i]), formatted[i]), len(seen))
    pair_row = np.full(n, -1, dtype=np.int64)
    for i in np.flatnonzero(usable):
        pair_row[i] = seen[(int(image_rows[i]), formatted[i])]
    keys = list(seen)
    return PairTable(np.array([r for r, _ in keys], dtype=np.int64), np.array([t for _, t in keys], dtype=str),
                     pair_row)


class PairSources(Mapping):
    """key -> its image source plus its pairs' texts: a shard's digest then changes when the questions of its images
    do, so a resumed run never reuses states computed for other questions."""

    def __init__(self, sources: Mapping, keys: list[str], table: PairTable) -> None:
        self.sources, self.row = sources, {k: i for i, k in enumerate(keys)}
        self.table = table

    def __getitem__(self, key: str) -> str:
        row = self.row[key]
        lo, hi = self.table.block(row, row + 1)
        return f"{self.sources[key]}|mm:" + "\x1d".join(self.table.text[lo:hi].tolist())

    def __iter__(self):
        return iter(self.row)

    def __len__(self) -> int:
        return len(self.row)


def check_prompt(prompt: str) -> str:
    """An --mm-prompt holds exactly one {} for the question."""
    from ..errors import ExtractError

    try:
        ok = prompt.count("{}") == 1 and prompt.format("x") is not None
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise ExtractError(f"--mm-prompt must hold exactly one {{}} where the question goes, got {prompt!r}")
    return prompt


def bytes_per_pair(shape: tuple[int, ...], store_dtype: str) -> int:
    return int(np.prod(shape)) * np.dtype(store_dtype).itemsize
