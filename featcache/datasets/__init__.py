"""Datasets: every source becomes one shape, a `VQADataset` of questions pointing at images by key.

    base.py        Question, VQADataset
    registry.py    names -> protocols (`featcache datasets`), load_dataset(name or manifest path)
    easyvqa.py, daquar.py, manifest.py   the sources; augment.py, normalize.py   their transforms
    pairs.py       (image, question) pairs for prediction
    stats.py       class frequencies before and after a protocol (`featcache stats`)
"""

from .base import Question, VQADataset
from .daquar import load_daquar
from .easyvqa import load_easy_vqa
from .manifest import load_manifest
from .normalize import fold_rare, normalize_answers
from .registry import Protocol, dataset_names, load_dataset, protocols

__all__ = ["Protocol", "Question", "VQADataset", "dataset_names", "fold_rare", "load_dataset", "load_daquar",
           "load_easy_vqa", "load_manifest", "normalize_answers", "protocols"]
