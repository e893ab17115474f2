"""Every evaluated question's output, kept beside its report as predictions.jsonl (lmms-eval's --log_samples).

One JSON object per line: the cache row, question id, image key, question, label, the human answers (with the
metric's soft score of each, where the cache has them), the prediction, its confidence, the top 5, and the
question's score (its VQA accuracy on a VQA benchmark, else 1 or 0). Read it back with one line:
`pandas.read_json("predictions.jsonl", lines=True)` (or `datasets.load_dataset("json", data_files=...)`).
`featcache compare` pairs two runs' scores question by question.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .heap import trim_heap

TOP_K = 5
SORT_ROWS = 512


@dataclass
class Outputs:
    """A head's outputs on some rows: the top-k classes (indices into `classes`) and their probabilities."""

    classes: np.ndarray
    top: np.ndarray
    top_p: np.ndarray

    @classmethod
    def of(cls, proba: np.ndarray, classes, k: int = TOP_K) -> "Outputs":
        """The top k of each row of `proba`, most probable first (ties: the lower class index first), sorted
        `SORT_ROWS` rows at a time: a whole block's negated copy and sort order would be two more rows x classes
        arrays beside it."""
        proba = np.asarray(proba)
        k = min(k, proba.shape[1])
        top = np.empty((len(proba), k), dtype=np.intp)
        for start in range(0, len(proba), SORT_ROWS):
            part = proba[start:start + SORT_ROWS]
            top[start:start + len(part)] = np.argsort(-part, axis=1, kind="stable")[:, :k]
        return cls(np.asarray(classes, dtype=object), top, np.take_along_axis(proba, top, 1))

    @classmethod
    def of_predictions(cls, predictions) -> "Outputs":
        """Outputs of a model that gives an answer without probabilities (free generation)."""
        classes, top = np.unique(np.asarray(predictions, dtype=object).astype(str), return_inverse=True)
        return cls(classes.astype(object), top.reshape(-1, 1), np.full((len(top), 1), np.nan))

    @property
    def predictions(self) -> np.ndarray:
        return self.classes[self.top[:, 0]]

    @property
    def confidence(self) -> np.ndarray:
        return self.top_p[:, 0]


PREDICT_ROWS = 4096
"""Rows whose probabilities are held at once: VQAv2 val's 214k questions over 3,129 answers are 5.4 GB in float64,
4,096 of them 0.1 GB."""


def _rows_of(X, index: np.ndarray):
    """Rows `index` of X, whatever its form (array, factorised view, DataFrame)."""
    return X.iloc[index] if hasattr(X, "iloc") else X[index]


def predict_outputs(head, X, block: int | None = None, each=None) -> Outputs:
    """`head`'s top 5 on X, a block of rows at a time (a VQAv2 split's whole probability matrix is gigabytes).
    `each(rows, proba)`, where given, sees each block's probabilities (what a benchmark reads besides the top 5).
    A head's rows do not depend on the rows predicted beside them, so the blocks change no number."""
    tops, top_ps = [], []
    block = block or PREDICT_ROWS
    for start in range(0, len(X), block):
        rows = np.arange(start, min(start + block, len(X)))
        proba = head.predict_proba(X if len(rows) == len(X) else _rows_of(X, rows))
        part = Outputs.of(proba, head.classes_)
        if each is not None:
            each(rows, proba)
        tops.append(part.top)
        top_ps.append(part.top_p)
        del proba, part
        if len(X) > block:
            trim_heap(collect=False)  # (each block's freed buffers: else the heap grows by a block's worth a block)
    k = min(TOP_K, len(head.classes_))
    return Outputs(np.asarray(head.classes_, dtype=object), np.concatenate(tops) if tops else np.zeros((0, k), int),
                   np.concatenate(top_ps) if top_ps else np.zeros((0, k)))


def question_scores(predictions, labels, references=None) -> np.ndarray:
    """Each question's score: its official VQA (or VizWiz) accuracy where the references allow, else 1.0 for a
    prediction equal to the label and 0.0 otherwise."""
    predictions = np.asarray(predictions, dtype=object).astype(str)
    if references is not None and references.metric in ("vqa", "vizwiz") and references.scored:
        from .benchmarks import soft_targets

        soft = soft_targets(references)
        return np.array([float(s.get(p, 0.0)) for p, s in zip(predictions, soft)])
    return (predictions == np.asarray(labels, dtype=object).astype(str)).astype(float)


def records(cache, rows, outputs: Outputs, labels, references=None) -> list[dict]:
    """One record per evaluated question: `rows` are their cache rows (a split's: `question_rows(cache, split)`)."""
    rows = np.asarray(rows, dtype=np.int64)
    has_text = "text" in cache.questions
    text = np.asarray(cache.strings("questions", "text"), dtype=object)[rows] if has_text else [None] * len(rows)
    image_row = np.asarray(cache.read("questions", "image_row"))[rows]
    keys = np.asarray(cache.strings("images", "key"), dtype=object)[image_row]
    splits = np.asarray(cache.strings("questions", "split"), dtype=object)[rows]
    return build_records(rows, keys, text, splits, outputs, labels, references)


def build_records(rows, keys, text, splits, outputs: Outputs, labels, references=None) -> list[dict]:
    """Records from the questions' fields: `rows` (their index in the data), image keys, texts (None for image
    classification) and splits, row for row with `outputs` and `labels`."""
    scores = question_scores(outputs.predictions, labels, references)
    soft = None
    if references is not None and references.metric in ("vqa", "vizwiz"):
        from .benchmarks import soft_targets

        soft = soft_targets(references)
    out = []
    for i, row in enumerate(rows):
        record = {"row": int(row), "question_id": references.question_ids[i] if references is not None else None,
                  "image": str(keys[i]), "question": None if text[i] is None else str(text[i]),
                  "label": str(labels[i]), "split": str(splits[i]),
                  "prediction": str(outputs.predictions[i]), "confidence": _num(outputs.confidence[i]),
                  "top5": [[str(outputs.classes[c]), _num(p)] for c, p in zip(outputs.top[i], outputs.top_p[i])],
                  "score": float(scores[i])}
        if references is not None and references.answers[i]:
            record["answers"] = list(references.answers[i])
            if soft is not None:
                record["answer_scores"] = {a: round(float(s), 4) for a, s in soft[i].items()}
            record["answer_type"] = references.answer_types[i]
            record["question_type"] = references.question_types[i]
        out.append(record)
    return out


def _num(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, 6)


def write_predictions(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def read_predictions(path: str | Path) -> list[dict]:
    """The records of a predictions.jsonl (a line cut by an interruption is named, not skipped)."""
    from featcache.errors import CacheFormatError

    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise CacheFormatError(f"{path} line {number} is not JSON (a cut or edited file?); write the report "
                                   f"again") from None
        if not isinstance(record, dict) or not {"prediction", "score"} <= set(record) or not isinstance(
                record["score"], (int, float)):
            raise CacheFormatError(f"{path} line {number} is not a prediction record (an object with \"prediction\" "
                                   f"and a numeric \"score\"); write the report again")
        out.append(record)
    return out


def head_records(trained, cache, split, umap: int = 0, positions=None,
                 outputs: Outputs | None = None) -> tuple[list[dict], dict | None]:
    """(records of `trained` on `split` of the open `cache` (only its rows at `positions` where given: a held-out
    part), the page's UMAP of them or None): the labels and references as the benchmark's protocol scores them.
    `outputs`: the head's top 5 on those rows where the evaluation kept them (else they are predicted here)."""
    from .benchmarks import eval_labels, split_references

    X, y = cache.view(trained.view, split)
    if positions is not None:
        X, y = X[positions], np.asarray(y)[positions]
    refs = split_references(cache, split)
    if refs is not None and refs.scored:
        y = eval_labels(y, refs.metric)
    else:
        refs = None
    from featcache.cache.views import question_rows

    cache_rows = question_rows(cache, split)
    if outputs is None or len(outputs.top) != len(y):
        outputs = predict_outputs(trained.head, X)
    rows = records(cache, cache_rows if positions is None else cache_rows[positions], outputs, y, refs)
    if not umap or len(rows) < 10:
        return rows, None
    from .page.umap import umap_points

    head = trained.head
    transform, what = None, f"view '{trained.view}'"
    for method, name in (("transform_hidden", "the MLP's last hidden layer"),
                         ("transform_pooled", "the attention probe's pooled tokens")):
        if hasattr(head, method):
            transform, what = getattr(head, method), name
    return rows, umap_points(X, rows, what, transform, points=umap)
