"""Datasets by name (`featcache datasets` lists them) or by manifest path."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import DatasetError
from .base import Question, VQADataset
from .easyvqa import load_easy_vqa
from .manifest import load_manifest


def _registry() -> dict[str, tuple[Callable[..., VQADataset], str]]:
    return {
        "easy-vqa": (lambda images=None: load_easy_vqa(),
                     "Easy-VQA, official image-disjoint train/test (38,575 / 9,673 questions)"),
    }


def dataset_names() -> dict[str, str]:
    """Registered names with a one-line description."""
    return {name: desc for name, (_, desc) in _registry().items()}


def load_dataset(name_or_path: str, images: str | None = None, limit: int | None = None) -> VQADataset:
    """A registered dataset by name, or a CSV/JSONL manifest by path."""
    registry = _registry()
    if name_or_path in registry:
        ds = registry[name_or_path][0](images=images)
    elif Path(name_or_path).suffix.lower() in (".csv", ".jsonl", ".ndjson") or Path(name_or_path).exists():
        ds = load_manifest(name_or_path, images=images)
    else:
        raise DatasetError(f"unknown dataset {name_or_path!r}: use one of {sorted(registry)} "
                           f"or a path to a CSV/JSONL manifest")
    return ds.limit(limit)


__all__ = ["Question", "VQADataset", "dataset_names", "load_dataset", "load_easy_vqa", "load_manifest"]
