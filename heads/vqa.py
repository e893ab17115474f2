"""VQA as classification over a benchmark cache (one holding every human answer, see featcache.cache.answers),
as the field runs it: labels are the evaluator-normalised `multiple_choice_answer`s; the vocabulary is those
seen at least 9 times in the training split; training questions outside it are left out (evaluation keeps every
question: those score what the evaluator gives them); the figure is the official VQA accuracy (featcache.scoring),
per answer type, beside plain accuracy; predictions go out in the benchmark's results format."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featcache.cache.answers import References, read_references
from featcache.cache.views import question_rows
from featcache.scoring.vqa import normalize_answer, round_official, soft_scores, vqa_accuracy_of, vqa_vocabulary

DEFAULT_MIN_COUNT = 9
"""The field's vocabulary rule (3,129 answers on VQAv2 train+val; bottom-up-top-down, ViLT, LXMERT)."""


def split_references(cache, split) -> References | None:
    """The benchmark fields of the questions of `split`'s view, row for row; None on other caches."""
    return read_references(cache, question_rows(cache, split))


@dataclass
class TrainingSet:
    rows: np.ndarray
    """Rows of the training view kept: those whose label is in the vocabulary."""
    labels: np.ndarray
    vocabulary: list[str]


def training_set(y, min_count: int = DEFAULT_MIN_COUNT) -> TrainingSet:
    """The field's training set of a VQA training split: normalised labels, vocabulary by `min_count`."""
    labels = np.array([normalize_answer(a) for a in y], dtype=object)
    vocabulary = vqa_vocabulary(y, min_count)
    if len(vocabulary) < 2:
        from featcache.errors import FeatcacheError

        raise FeatcacheError(f"only {len(vocabulary)} answer(s) occur at least {min_count} times in the training "
                             f"split; lower the vocabulary threshold (--min-answer-count)")
    rows = np.flatnonzero(np.isin(labels, vocabulary))
    return TrainingSet(rows, labels[rows], vocabulary)


def soft_targets(refs: References) -> np.ndarray:
    """One {answer: soft score} per row (the metric's own score of each answer: featcache.scoring.soft_scores),
    as an object array a head's fit slices with X and y."""
    out = np.empty(len(refs.answers), dtype=object)
    out[:] = [soft_scores(a) if a else {} for a in refs.answers]
    return out


def eval_labels(y) -> np.ndarray:
    return np.array([normalize_answer(a) for a in y], dtype=object)


def _ids(refs: References) -> list[str]:
    return [q or f"row{i}" for i, q in enumerate(refs.question_ids)]


def vqa_scores(predictions, refs: References) -> dict:
    """The official VQA accuracy of `predictions` (row for row with `refs`): overall, per answer type, per
    question type (0-100, two decimals), and n."""
    ids = _ids(refs)
    scored = vqa_accuracy_of(dict(zip(ids, map(str, predictions))), dict(zip(ids, refs.answers)),
                             dict(zip(ids, refs.answer_types)), dict(zip(ids, refs.question_types)))
    return {"n": len(ids), **scored["accuracy"]}


def coverage(vocabulary, refs: References) -> float:
    """The best VQA accuracy any classifier over `vocabulary` can reach on these questions (0-100)."""
    vocab = set(vocabulary)
    best = [max([s for a, s in soft_scores(answers).items() if a in vocab], default=0.0)
            for answers in refs.answers if answers]
    return round_official(100 * sum(best) / max(1, len(best)))


def submission(predictions, refs: References) -> list[dict]:
    """[{"question_id", "answer"}], the results format of VQAv2 / OK-VQA (integer ids where they are)."""
    return [{"question_id": int(q) if q.isdigit() else q, "answer": str(p)}
            for q, p in zip(refs.question_ids, predictions)]
