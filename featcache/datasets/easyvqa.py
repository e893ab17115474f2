"""Easy-VQA from the `easy-vqa` PyPI package (64 px shapes), under three protocols.

- `easy-vqa`: the official image-disjoint train/test split (38,575 / 9,673 questions).
- `easy-vqa-balanced`: yes/no downsampled as in the BLIP-2 Classifier paper (1,700 train + 400 test
  per yes/no, every other question kept: 16,905 in all), split by image (the official image split),
  so no image is on both sides.
- `easy-vqa-paper`: the paper's split exactly: the same downsampling, the other questions split
  80/20 by question. Images cross the split: it leaks, and is offered only for comparison.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from .base import Question, VQADataset

YES_NO = ("yes", "no")
PAPER_TRAIN_PER_YES_NO = 1700
PAPER_TEST_PER_YES_NO = 400


def load_easy_vqa() -> VQADataset:
    """The official split: 38,575 train / 9,673 test questions over 4,000 / 1,000 images."""
    import easy_vqa

    questions: list[Question] = []
    paths: dict[str, str] = {}
    for split, get_q, get_p in (("train", easy_vqa.get_train_questions, easy_vqa.get_train_image_paths),
                                ("test", easy_vqa.get_test_questions, easy_vqa.get_test_image_paths)):
        texts, answers, image_ids = get_q()
        for image_id, path in sorted(get_p().items()):
            paths[f"{split}/{image_id}"] = path  # ids restart per split: qualify them
        questions += [Question(f"{split}/{i}", t, a, split) for t, a, i in zip(texts, answers, image_ids)]
    return VQADataset(name="easy-vqa", source=f"easy-vqa package {_version()}", questions=questions,
                      image_paths=paths, answers=list(easy_vqa.get_answers()))


def _sample(indices: list[int], n: int, rng: np.random.Generator, what: str) -> list[int]:
    if len(indices) < n:
        raise ValueError(f"only {len(indices)} {what} questions, {n} needed")
    return sorted(rng.choice(indices, size=n, replace=False).tolist())


def load_easy_vqa_balanced(seed: int = 0) -> VQADataset:
    """Paper-style yes/no downsampling, split by image (leak-free)."""
    base = load_easy_vqa()
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for split, n in (("train", PAPER_TRAIN_PER_YES_NO), ("test", PAPER_TEST_PER_YES_NO)):
        for answer in YES_NO:
            idx = [i for i, q in enumerate(base.questions) if q.split == split and q.answer == answer]
            keep += _sample(idx, n, rng, f"{split} {answer!r}")
    keep += [i for i, q in enumerate(base.questions) if q.answer not in YES_NO]
    qs = [base.questions[i] for i in sorted(keep)]
    return replace(base, name="easy-vqa-balanced", questions=qs,
                   source=f"{base.source}; yes/no downsampled to {PAPER_TRAIN_PER_YES_NO}/{PAPER_TEST_PER_YES_NO} "
                          f"per answer, official image split, seed {seed}")


def load_easy_vqa_paper(seed: int = 0) -> VQADataset:
    """The paper's question-level split. Leaks: an image's questions land on both sides."""
    warnings.warn("easy-vqa-paper splits by question, as the BLIP-2 Classifier paper did: the same image is in "
                  "train and test, so its accuracy is optimistic. Use easy-vqa-balanced for a leak-free figure.",
                  stacklevel=2)
    base = load_easy_vqa()
    rng = np.random.default_rng(seed)
    split_of: dict[int, str] = {}
    for answer in YES_NO:
        idx = [i for i, q in enumerate(base.questions) if q.answer == answer]
        chosen = _sample(idx, PAPER_TRAIN_PER_YES_NO + PAPER_TEST_PER_YES_NO, rng, repr(answer))
        chosen = rng.permutation(chosen)
        split_of.update({int(i): "train" for i in chosen[:PAPER_TRAIN_PER_YES_NO]})
        split_of.update({int(i): "test" for i in chosen[PAPER_TRAIN_PER_YES_NO:]})
    rest = rng.permutation([i for i, q in enumerate(base.questions) if q.answer not in YES_NO])
    n_train = int(round(0.8 * len(rest)))
    split_of.update({int(i): "train" for i in rest[:n_train]})
    split_of.update({int(i): "test" for i in rest[n_train:]})
    qs = [replace(base.questions[i], split=split_of[i]) for i in sorted(split_of)]
    return replace(base, name="easy-vqa-paper", questions=qs,
                   source=f"{base.source}; paper protocol (question-level split, LEAKS images), seed {seed}")


def _version() -> str:
    from importlib.metadata import version

    return version("easy-vqa")


SHAPES = ("circle", "rectangle", "triangle")


def load_easy_vqa_labels(attribute: str) -> VQADataset:
    """Easy-VQA's images as an image classification dataset: each image labelled with its shape (or colour),
    read from the answers of its own questions; images no question names it for are left out (counted)."""
    base = load_easy_vqa()
    wanted = set(SHAPES) if attribute == "shape" else set(base.answers) - set(SHAPES) - set(YES_NO)
    label: dict[str, str] = {}
    for q in base.questions:
        if q.answer in wanted:
            label.setdefault(q.image, q.answer)
    keys = [k for k in base.images() if k in label]
    left_out = len(base.images()) - len(keys)
    return VQADataset(name=f"easy-vqa-{attribute}s", task="classify",
                      source=f"{base.source}; images labelled by the {attribute} their questions name",
                      questions=[Question(k, "", label[k], k.split("/")[0]) for k in keys],
                      image_paths={k: base.image_paths[k] for k in keys}, answers=sorted(wanted),
                      warnings=[f"{left_out} images whose questions never name their {attribute} left out"])
