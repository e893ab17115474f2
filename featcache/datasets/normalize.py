"""Answer clean-up for user tables: normalisation and folding of rare answers, counted, never silent."""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import replace

from ..errors import DatasetError
from .base import VQADataset

_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(answer: str, lower: bool = True, punctuation: bool = True, digits: bool = True) -> str:
    a = answer.strip()
    if lower:
        a = a.lower()
    if punctuation:
        a = _PUNCT.sub("", a)
    if digits:
        a = " ".join(_NUMBERS.get(w, w) for w in a.split())
    return " ".join(a.split())


def normalize_answers(ds: VQADataset, lower: bool = True, punctuation: bool = True, digits: bool = True) -> VQADataset:
    qs = [replace(q, answer=normalize_answer(q.answer, lower, punctuation, digits)) for q in ds.questions]
    changed = sum(a.answer != b.answer for a, b in zip(ds.questions, qs))
    note = [f"normalised {changed} answers (lower={lower}, punctuation={punctuation}, digits={digits})"] if changed else []
    return replace(ds, questions=qs, warnings=ds.warnings + note)


def fold_rare(ds: VQADataset, min_count: int, mode: str = "other", other: str = "other") -> VQADataset:
    """Answers seen fewer than `min_count` times (over all splits) become `other`, or are dropped."""
    if mode not in ("other", "drop"):
        raise DatasetError(f"rare-answer mode must be 'other' or 'drop', got {mode!r}")
    freq = Counter(q.answer for q in ds.questions)
    rare = {a for a, n in freq.items() if n < min_count}
    if not rare:
        return ds
    n_rows = sum(freq[a] for a in rare)
    if mode == "drop":
        qs = [q for q in ds.questions if q.answer not in rare]
        note = f"dropped {n_rows} questions whose answer ({len(rare)} answers) occurs < {min_count} times"
    else:
        qs = [replace(q, answer=other) if q.answer in rare else q for q in ds.questions]
        note = f"folded {len(rare)} answers occurring < {min_count} times ({n_rows} questions) into {other!r}"
    keys = {q.image for q in qs}
    return replace(ds, questions=qs, warnings=ds.warnings + [note],
                   image_paths={k: v for k, v in ds.image_paths.items() if k in keys})
