"""What fine-tuning trains on: questions with live images (the ViT runs) or with cached ViT states.

Batches are formed from shuffled questions; each decodes (or reads) its unique images once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FeatcacheError


@dataclass
class Sample:
    image: str
    text: str
    answer: str
    split: str


class LiveSource:
    """Questions of a dataset; batches decode their unique images (in loader workers)."""

    def __init__(self, dataset, preprocessor) -> None:
        self.dataset, self.preprocessor = dataset, preprocessor
        self.samples = [Sample(q.image, q.text, q.answer, q.split) for q in dataset.questions]

    def references(self, idx):
        """The benchmark fields of samples `idx` (heads' References), or None for a dataset without them."""
        from ..cache.answers import References

        qs = [self.dataset.questions[i] for i in idx]
        if not any(q.qid or q.references for q in self.dataset.questions):
            return None
        return References([q.qid for q in qs], [list(q.references) for q in qs], [q.answer_type for q in qs],
                          [q.question_type for q in qs], [list(q.choices) for q in qs], self.dataset.metric or "vqa",
                          [q.answer for q in qs])

    def images(self, keys: list[str]) -> dict:
        pre = self.preprocessor
        pixels = [pre.resize_uint8(self.dataset.open_image(k, pre.draft_size)) for k in keys]
        return {"pixel_values": torch.from_numpy(np.stack(pixels))}


class CachedSource:
    """Questions of a cache made with --store-vision; batches read the stored ViT states."""

    def __init__(self, cache_path: str | Path) -> None:
        from ..cache import open_cache

        self.cache = open_cache(cache_path)
        if "vision" not in self.cache.images:
            raise FeatcacheError(f"{cache_path} has no /images/vision: extract it with --store-vision to "
                                 f"fine-tune from the cache")
        keys = self.cache.strings("images", "key")
        self.row_of = {k: i for i, k in enumerate(keys)}
        c = self.cache
        ok = c.strings("questions", "error") == ""
        self.question_rows = np.flatnonzero(ok)
        self.samples = [Sample(keys[r], t, a, s) for r, t, a, s, good in zip(
            c.array("questions", "image_row"), c.strings("questions", "text"), c.strings("questions", "answer"),
            c.strings("questions", "split"), ok) if good]

    def references(self, idx):
        """The benchmark fields the cache keeps for samples `idx`, or None for a cache without them."""
        from ..cache.answers import read_references

        return read_references(self.cache, self.question_rows[np.asarray(idx, dtype=np.int64)])

    def images(self, keys: list[str]) -> dict:
        rows = np.array([self.row_of[k] for k in keys])
        order = np.argsort(rows)
        states = np.empty((len(rows), *self.cache.images["vision"].shape[1:]), dtype=np.float32)
        states[order] = self.cache.read("images", "vision", rows[order])
        return {"vision": torch.from_numpy(states)}


class _Batches(torch.utils.data.Dataset):
    def __init__(self, source, batches: list[np.ndarray], tokenize, label_index: dict[str, int]) -> None:
        self.source, self.batches, self.tokenize, self.label_index = source, batches, tokenize, label_index

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        samples = [self.source.samples[j] for j in self.batches[i]]
        keys = list(dict.fromkeys(s.image for s in samples))
        position = {k: i for i, k in enumerate(keys)}
        batch = self.source.images(keys)
        tokens = self.tokenize([s.text for s in samples])  # Backbone.tokenize: the cache's truncation
        batch.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                     row=torch.tensor([position[s.image] for s in samples]),
                     labels=torch.tensor([self.label_index.get(s.answer, -100) for s in samples]))
        return batch


def _loader(source, idx, config, tokenize, label_index, shuffle_rng, workers) -> torch.utils.data.DataLoader:
    order = shuffle_rng.permutation(idx) if shuffle_rng is not None else np.asarray(idx)
    batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    live = isinstance(source, LiveSource)
    return torch.utils.data.DataLoader(_Batches(source, batches, tokenize, label_index), batch_size=None,
                                       num_workers=workers if live else 0)


def split_validation(samples: list[Sample], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import GroupShuffleSplit

    train = np.array([i for i, s in enumerate(samples) if s.split == "train"])
    if not len(train):
        raise FeatcacheError("no questions in split 'train' to fine-tune on")
    groups = [samples[i].image.split("#")[0] for i in train]
    tr, va = next(GroupShuffleSplit(1, test_size=fraction, random_state=seed).split(train, groups=groups))
    return train[tr], train[va]


