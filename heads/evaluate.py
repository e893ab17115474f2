"""Metrics and plots for a fitted head on a cache split.

Macro F1 averages over ALL classes (every answer of the training and evaluation data), not only
the classes a model happened to predict, which is what inflated the reference paper's figure.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support)

from ._base import HeadBase


def all_labels(*label_arrays) -> np.ndarray:
    return np.array(sorted(set().union(*[set(map(str, a)) for a in label_arrays])), dtype=object)


def balanced_accuracy(y, pred) -> float:
    """Balanced accuracy without sklearn's "y_pred contains classes not in y_true" warning: expected when a
    model predicts a class the split lacks, still well defined, and it tells a user nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def evaluate(head, X, y, labels: np.ndarray | None = None, references=None, keep_outputs: bool = False) -> dict:
    """Accuracy, macro F1 over all classes, balanced accuracy (= mean per-class recall), top-5 accuracy
    where the head gives probabilities, per-class precision/recall, timing. With `references` (a benchmark
    cache's fields for these rows): the benchmark's own figures under "benchmark" and its results file under
    "submission". `keep_outputs`: also each row's top 5 under "outputs" (heads/predictions.py), from the same
    predictions, for the report's records (popped before anything is written). Probabilities are made a block of
    rows at a time (heads.predictions.predict_outputs): memory holds a block of them, not rows x classes."""
    y = np.asarray(y, dtype=object)
    labels = all_labels(y, head.classes_) if labels is None else labels
    t = time.perf_counter()
    outputs, columns = benchmark_columns(head, X, references) if hasattr(head, "predict_proba") else (None, ())
    # featcache's heads predict the argmax of their probabilities (the top 1): one pass gives both
    pred = head.classes_[outputs.top[:, 0]] if outputs is not None and isinstance(head, HeadBase) else head.predict(X)
    predict_s = time.perf_counter() - t
    top5 = None if outputs is None else _hits(y, outputs.classes[outputs.top]) / max(1, len(y))
    metrics = with_benchmark(prediction_metrics(y, pred, labels, predict_s, top5), pred, references, *columns)
    if keep_outputs and outputs is not None:
        metrics["outputs"] = outputs
    return metrics


def benchmark_columns(head, X, references) -> tuple:
    """(head's top 5 on X as heads.predictions.Outputs, (proba, classes, mc) for with_benchmark): the
    probabilities a block of rows at a time, keeping what `references`' benchmark reads besides the top 5."""
    from .predictions import predict_outputs

    read = _BenchmarkColumns(references, head.classes_)
    return predict_outputs(head, X, each=read), read.result()


class _BenchmarkColumns:
    """What a benchmark reads of the probabilities besides the top 5, gathered block by block: A-OKVQA's
    multiple-choice answers and VizWiz's probability of "unanswerable"."""

    def __init__(self, references, classes) -> None:
        self.references, self.mc, self.unanswerable, self.column = references, None, None, None
        self.read = False
        metric = getattr(references, "metric", None)
        names = [] if classes is None else np.asarray(classes, dtype=object).tolist()
        if metric == "aokvqa":
            self.mc, self.classes = [], classes
        from featcache.scoring.vizwiz import UNANSWERABLE

        if metric == "vizwiz" and UNANSWERABLE in names:
            self.column, self.unanswerable = names.index(UNANSWERABLE), []

    def __call__(self, rows: np.ndarray, proba: np.ndarray) -> None:
        self.read = True
        if self.mc is not None:
            from .benchmarks import mc_choices

            self.mc.extend(mc_choices(proba, self.classes, self.references.take(rows)))
        if self.column is not None:
            self.unanswerable.append(np.asarray(proba)[:, self.column])

    def result(self) -> tuple:
        """(proba, classes, mc) for with_benchmark: the "unanswerable" column alone stands for the probabilities."""
        if not self.read:
            return None, None, None
        if self.unanswerable is not None:
            from featcache.scoring.vizwiz import UNANSWERABLE

            return np.concatenate(self.unanswerable)[:, None], np.array([UNANSWERABLE], dtype=object), None
        return None, None, self.mc


def with_benchmark(metrics: dict, pred, references, proba=None, classes=None, mc=None) -> dict:
    """`metrics` plus the benchmark's own figures ("benchmark", heads/benchmarks.py) and its results file
    ("submission") where the rows have them; A-OKVQA's multiple-choice answers come from `proba` over `classes`,
    or are given (`mc`); VizWiz's answerability from the probability of "unanswerable" among `classes`."""
    if references is not None:
        from .benchmarks import benchmark_scores, mc_choices, submission

        if mc is None and references.metric == "aokvqa" and proba is not None:
            mc = mc_choices(proba, classes, references)
        if references.scored:
            metrics["benchmark"] = benchmark_scores(pred, references, proba, classes, mc)
        metrics["submission"] = submission(pred, references, mc, proba, classes)
    return metrics


def primary_score(metrics: dict) -> float:
    """What ranks results: the benchmark's figure (as a fraction) on a benchmark, else plain accuracy."""
    return metrics["benchmark"]["primary"] / 100 if "benchmark" in metrics else metrics["accuracy"]


def top_k_accuracy(y, scores: np.ndarray, classes, k: int) -> float:
    """Fraction of rows whose true label is among the k highest-scoring classes (CLIP_benchmark's top-k; a
    label the classes lack counts as a miss)."""
    y = np.asarray(y, dtype=object)
    if not len(y):
        return 0.0
    scores, names, hits = np.asarray(scores), np.asarray(classes, dtype=object), 0
    for start in range(0, len(y), 4096):  # (rows x classes int64 ranks at once: 5 GB on VQAv2 val)
        top = np.argsort(-scores[start:start + 4096], axis=1, kind="stable")[:, :k]
        hits += _hits(y[start:start + 4096], names[top])
    return hits / len(y)


def _hits(y, top_names: np.ndarray) -> int:
    """Rows whose label is among their top classes' names."""
    return sum(label in row for label, row in zip(y, top_names))


def prediction_metrics(y, pred, labels: np.ndarray, predict_s: float = 0.0, top5: float | None = None) -> dict:
    """The metrics of `evaluate` from predictions made elsewhere (e.g. a zero-shot model)."""
    y, pred = np.asarray(y, dtype=object), np.asarray(pred, dtype=object)
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    balanced = balanced_accuracy(y, pred)
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "balanced_accuracy": balanced,
        "top5_accuracy": top5,
        "predict_s": predict_s,
        "per_class": {str(c): {"precision": float(pi), "recall": float(ri), "f1": float(fi), "support": int(si)}
                      for c, pi, ri, fi, si in zip(labels, p, r, f, support)},
        **confusion_of(y, pred, labels, support),
    }


CONFUSION_STORED = 200
"""The most classes whose confusion a result keeps (the most frequent true ones): VQAv2's ~3k answers (and the
eval split's other answers) would make it millions of numbers in results.json."""


def confusion_of(y, pred, labels, support) -> dict:
    """The confusion matrix among the CONFUSION_STORED most frequent true classes (all where fewer), in label
    order; `confusion_classes` says of how many."""
    labels = np.asarray(labels, dtype=object)
    if len(labels) > CONFUSION_STORED:
        keep = np.sort(np.argsort(-np.asarray(support), kind="stable")[:CONFUSION_STORED])
        labels = labels[keep]
    return {"labels": [str(c) for c in labels], "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
            "confusion_classes": f"{len(labels)} most frequent of {len(support)}" if len(labels) < len(support)
            else "all"}


CONFUSION_CLASSES = 40
"""The most classes a confusion plot shows (the most frequent true ones): its size, and memory, grow with the
square of the classes (a VQAv2 vocabulary of 3,129 would be a 1,400-inch figure)."""


def plot_confusion(metrics: dict, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall on the diagonal), counts annotated when small; beyond
    CONFUSION_CLASSES classes, the most frequent true classes only (the title says so)."""
    from featcache.plotting import pyplot, save_figure

    plt = pyplot()

    cm = np.asarray(metrics["confusion"], dtype=float)
    labels = list(metrics["labels"])
    per_class = metrics.get("per_class") or {}
    support = np.array([per_class[c]["support"] if c in per_class else cm[i].sum() for i, c in enumerate(labels)],
                       dtype=float).reshape(-1, 1)  # (a stored confusion may hold only the most frequent classes)
    norm = cm / np.maximum(support, 1)
    n_classes = max(len(labels), len(per_class))
    if n_classes > CONFUSION_CLASSES:
        keep = np.sort(np.argsort(-support[:, 0], kind="stable")[:CONFUSION_CLASSES])
        title = f"{title or 'confusion'} ({min(CONFUSION_CLASSES, len(labels))} most frequent of {n_classes} classes)"
        cm, norm, labels = cm[np.ix_(keep, keep)], norm[np.ix_(keep, keep)], [labels[i] for i in keep]
    size = max(5.0, 0.45 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)))
    ax.set_yticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 25:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title(title or f"confusion (accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f})",
                 fontsize=10)
    return save_figure(fig, path)
