"""DAQUAR (Malinowski & Fritz 2014): 1,449 NYU-Depth images, 12,468 questions.

Reads either the common processed layout (`data_train.csv`, `data_eval.csv` with question, answer,
image_id; `answer_space.txt`; `images/<image_id>.<png|jpg>`) or the original
`qa.894.raw.train.txt` / `qa.894.raw.test.txt` (question and answer on alternating lines).

Protocols:
- `daquar`: every question and answer as given; split by image (the original image lists when present).
- `daquar-18`: the BLIP-2 Classifier paper's reduction to 18 classes, then an image-disjoint
  stratified 80/20 split, then augmented copies of the training images only (leak-free).
- `daquar-paper`: the same reduction with augmentation before a question-level split, as the paper's
  code did: augmented copies of one sample sit on both sides (leaks; for comparison only).
"""

from __future__ import annotations

import csv
import re
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .base import Question, VQADataset
from .manifest import resolve_image

MIN_ANSWER_COUNT = 200
MAX_PER_LABEL = 750
_IMAGE_IN_QUESTION = re.compile(r"\s*(?:in|of)?\s*(?:the\s+)?(image\d+)\s*\?\s*$")


def _read_raw(path: Path, split: str) -> list[Question]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) % 2:
        raise DatasetError(f"{path}: odd number of lines; expected question and answer lines alternating")
    out = []
    for i in range(0, len(lines), 2):
        m = _IMAGE_IN_QUESTION.search(lines[i])
        if not m:
            raise DatasetError(f"{path}:{i + 1}: cannot find 'imageN' at the end of the question {lines[i]!r}")
        out.append(Question(m.group(1), lines[i][: m.start()].strip(), lines[i + 1], split))
    return out


def _read_csv(path: Path, split: str) -> list[Question]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"question", "answer", "image_id"} - set(rows[0] if rows else {})
    if missing:
        raise DatasetError(f"{path} lacks column(s) {sorted(missing)}; expected question,answer,image_id")
    return [Question(r["image_id"].strip(), r["question"].strip(), r["answer"].strip(), split) for r in rows]


def load_daquar(root: str | Path | None) -> VQADataset:
    """All DAQUAR questions, split by image."""
    if root is None:
        raise DatasetError("DAQUAR needs --root DIR: the folder with data_train.csv/data_eval.csv (or "
                           "qa.894.raw.train.txt/qa.894.raw.test.txt) and images/")
    root = Path(root)
    notes: list[str] = []
    if (root / "qa.894.raw.train.txt").exists():
        questions = _read_raw(root / "qa.894.raw.train.txt", "train") + _read_raw(root / "qa.894.raw.test.txt", "test")
        layout = "original qa.894.raw files"
    elif (root / "data_train.csv").exists():
        questions = _read_csv(root / "data_train.csv", "train") + _read_csv(root / "data_eval.csv", "test")
        layout = "processed csv layout"
        lists = root / "train_images_list.txt", root / "test_images_list.txt"
        if all(p.exists() for p in lists):  # the CSVs split by question: use the original image split
            test_images = set(lists[1].read_text().split())
            questions = [replace(q, split="test" if q.image in test_images else "train") for q in questions]
        else:
            notes.append("no image lists: kept the CSVs' question-level split, which lets images cross splits")
    else:
        raise DatasetError(f"{root} has neither data_train.csv nor qa.894.raw.train.txt: not a DAQUAR folder")
    images_dir = root / "images"
    paths = {k: resolve_image(images_dir, k) for k in dict.fromkeys(q.image for q in questions)}
    vocab: list[str] = []
    if (root / "answer_space.txt").exists():
        vocab = [a.strip() for a in (root / "answer_space.txt").read_text(encoding="utf-8").splitlines() if a.strip()]
        known = set(vocab)
        outside = sum(1 for q in questions if q.answer not in known)
        if outside:
            notes.append(f"{outside} answers are not in answer_space.txt (kept)")
    dupes = sum(n - 1 for n in Counter(questions).values() if n > 1)
    if dupes:
        notes.append(f"{dupes} duplicate (image, question, answer, split) rows (kept)")
    return VQADataset("daquar", f"{root.resolve()} ({layout})", questions, paths, answers=vocab, warnings=notes)


def reduce_to_frequent(ds: VQADataset, seed: int = 0, min_count: int = MIN_ANSWER_COUNT,
                       max_per_label: int = MAX_PER_LABEL) -> VQADataset:
    """The paper's reduction: single answers occurring >= min_count times are the classes; a question is
    labelled with its least frequent class among its (comma-separated) answers; at most max_per_label
    questions per class; classes left with fewer than min_count questions are dropped."""
    parts = [[a.strip() for a in q.answer.split(",") if a.strip()] for q in ds.questions]
    freq = Counter(a for p in parts for a in p)
    valid = {a for a, n in freq.items() if n >= min_count}
    labelled = []
    for q, p in zip(ds.questions, parts):
        options = [a for a in p if a in valid]
        if options:
            labelled.append(replace(q, answer=min(options, key=lambda a: (freq[a], a))))
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, q in enumerate(labelled):
        by_label.setdefault(q.answer, []).append(i)
    keep: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        if len(idx) > max_per_label:
            idx = sorted(rng.choice(idx, size=max_per_label, replace=False).tolist())
        if len(idx) >= min_count:
            keep += idx
    qs = [labelled[i] for i in sorted(keep)]
    classes = sorted({q.answer for q in qs})
    return replace(ds, questions=qs, answers=classes,
                   image_paths={k: v for k, v in ds.image_paths.items() if k in {q.image for q in qs}})


def _stratified_image_split(questions: list[Question], test_fraction: float, seed: int) -> list[Question]:
    from sklearn.model_selection import StratifiedGroupKFold

    y = [q.answer for q in questions]
    groups = [q.image for q in questions]
    folds = StratifiedGroupKFold(n_splits=int(round(1 / test_fraction)), shuffle=True, random_state=seed)
    _, test_idx = next(folds.split(np.zeros(len(y)), y, groups))
    test = set(test_idx.tolist())
    return [replace(q, split="test" if i in test else "train") for i, q in enumerate(questions)]


def add_augmented_copies(ds: VQADataset, copies: int, seed: int, splits: tuple[str, ...] | None = ("train",)) -> VQADataset:
    """`copies` augmented versions of each image used by `splits` (None: all), each with its own key
    (`imageN#augK`) so it is cached as an image of its own, with the questions of its source."""
    augmented = dict(ds.augmented)
    paths = dict(ds.image_paths)
    extra = []
    for k in range(1, copies + 1):
        for q in ds.questions:
            if splits is None or q.split in splits:
                key = f"{q.image}#aug{k}"
                if key not in augmented:
                    augmented[key] = (q.image, seed * 1_000_003 + hash_key(key))
                    paths[key] = ds.image_paths[q.image]
                extra.append(replace(q, image=key))
    return replace(ds, questions=ds.questions + extra, augmented=augmented, image_paths=paths)


def hash_key(key: str) -> int:
    """A stable (not per-process) integer for a key."""
    import zlib

    return zlib.crc32(key.encode())


def load_daquar_18(root: str | Path | None, seed: int = 0, augment_copies: int = 1,
                   min_count: int = MIN_ANSWER_COUNT, max_per_label: int = MAX_PER_LABEL) -> VQADataset:
    ds = reduce_to_frequent(load_daquar(root), seed=seed, min_count=min_count, max_per_label=max_per_label)
    ds = replace(ds, questions=_stratified_image_split(ds.questions, 0.2, seed))
    ds = add_augmented_copies(ds, augment_copies, seed, splits=("train",))
    return replace(ds, name="daquar-18",
                   source=f"{ds.source}; paper 18-class reduction, image-disjoint stratified split, "
                          f"{augment_copies} augmented copies of train images, seed {seed}")


def load_daquar_paper(root: str | Path | None, seed: int = 0, augment_copies: int = 1) -> VQADataset:
    warnings.warn("daquar-paper augments before a question-level split, as the BLIP-2 Classifier paper's code "
                  "did: copies of one sample sit in train and test, so its accuracy is optimistic. Use "
                  "daquar-18 for a leak-free figure.", stacklevel=2)
    from sklearn.model_selection import train_test_split

    ds = reduce_to_frequent(load_daquar(root), seed=seed)
    ds = add_augmented_copies(ds, augment_copies, seed, splits=None)
    idx = np.arange(len(ds.questions))
    _, test_idx = train_test_split(idx, test_size=0.2, random_state=seed, stratify=[q.answer for q in ds.questions])
    test = set(test_idx.tolist())
    qs = [replace(q, split="test" if i in test else "train") for i, q in enumerate(ds.questions)]
    return replace(ds, name="daquar-paper", questions=qs,
                   source=f"{ds.source}; paper protocol (augmentation before a question-level split: LEAKS), seed {seed}")
