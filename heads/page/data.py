"""What report.html shows, as plain data: built from the report's results and its per-question records.

The page embeds this as JSON and draws it (tables, charts, gallery) in the browser; a test reads it back and
checks it against results.json. Only the questions the page shows are embedded (the gallery, the confusion
cells' examples, the UMAP points); every question is in predictions.jsonl beside it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

CONFUSION_CLASSES = 30
"""Classes in the page's confusion matrix (the most frequent true ones)."""
CELL_EXAMPLES = 24
"""Examples a confusion cell lists when clicked."""
GALLERY_ERRORS, GALLERY_RIGHT = 120, 60
CALIBRATION_BINS = 15


def confused_with(samples: list[dict], top: int = 3) -> dict[str, list[list]]:
    """For each true class, the classes it is most often predicted as instead, with counts."""
    pairs = Counter((s["label"], s["prediction"]) for s in samples if s["prediction"] != s["label"])
    out: dict[str, list[list]] = {}
    for (label, pred), n in pairs.most_common():
        if len(out.setdefault(label, [])) < top:
            out[label].append([pred, n])
    return out


def confusion(samples: list[dict], n_classes: int = CONFUSION_CLASSES) -> dict:
    """The confusion matrix of the most frequent true classes, with a few example indices per cell."""
    counts = Counter(s["label"] for s in samples)
    labels = [c for c, _ in counts.most_common(n_classes)]
    index = {c: i for i, c in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    cells: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        r, c = index.get(s["label"]), index.get(s["prediction"])
        if r is None or c is None:
            continue
        matrix[r, c] += 1
        examples = cells.setdefault(f"{r},{c}", [])
        if len(examples) < CELL_EXAMPLES:
            examples.append(i)
    return {"labels": labels, "matrix": matrix.tolist(), "cells": cells,
            "of": f"the {len(labels)} most frequent of {len(counts)} true classes" if len(counts) > len(labels)
            else f"all {len(labels)} classes"}


def gallery(samples: list[dict], seed: int = 0) -> dict:
    """The worst errors (wrong, most confident first) and a seeded sample of right answers."""
    scores = np.array([s["score"] for s in samples], dtype=float)
    conf = np.array([-1.0 if s["confidence"] is None else s["confidence"] for s in samples])
    wrong = np.flatnonzero(scores < 0.5)
    worst = wrong[np.argsort(-conf[wrong], kind="stable")][:GALLERY_ERRORS]
    right = np.flatnonzero(scores >= 0.5)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(right)[:GALLERY_RIGHT])
    return {"errors": worst.tolist(), "right": sample.tolist(), "n_wrong": int(len(wrong)), "n_right": int(len(right))}


def calibration(samples: list[dict], bins: int = CALIBRATION_BINS) -> dict | None:
    """Reliability diagram and expected calibration error over equal-width confidence bins (the score of a
    question, its VQA accuracy on VQA, is its correctness). None where the model gives no confidence."""
    conf = np.array([np.nan if s["confidence"] is None else s["confidence"] for s in samples], dtype=float)
    if not len(conf) or np.isnan(conf).all():
        return None
    keep = ~np.isnan(conf)
    conf, score = conf[keep], np.array([s["score"] for s in samples], dtype=float)[keep]
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        acc, mean_conf = float(score[m].mean()), float(conf[m].mean())
        ece += m.sum() / len(conf) * abs(acc - mean_conf)
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(m.sum()), "accuracy": acc,
                     "confidence": mean_conf})
    return {"bins": rows, "ece": float(ece), "n": int(len(conf))}


def breakdowns(benchmark: dict | None) -> dict:
    """Per answer type and per question type figures where the benchmark gives them."""
    if not benchmark:
        return {}
    return {name: benchmark[key] for key, name in (("perAnswerType", "answer type"),
                                                   ("perQuestionType", "question type"))
            if isinstance(benchmark.get(key), dict) and benchmark[key]}


def page_data(payload: dict, samples: list[dict], umap: dict | None = None, thumbnails: dict | None = None,
              thumbnail_note: str = "") -> dict:
    """Everything the page draws: `payload` is results.json's content, `samples` the predictions.jsonl records."""
    conf = confusion(samples)
    chosen = gallery(samples)
    shown = set(chosen["errors"]) | set(chosen["right"])
    for examples in conf["cells"].values():
        shown.update(examples)
    if umap is not None:
        shown.update(umap["index"])
    keep = {i: _slim(samples[i]) for i in sorted(shown)}
    per_class = payload.get("per_class") or {}
    confused = confused_with(samples)
    classes = [{"class": c, "support": m["support"], "precision": m["precision"], "recall": m["recall"],
                "f1": m["f1"], "confused_with": confused.get(c, [])} for c, m in per_class.items()]
    return {"title": payload.get("title", ""), "random_weights": bool(payload.get("random_weights")),
            "evaluation": payload.get("evaluation") or {}, "ranking": payload.get("ranking") or [],
            "skipped": payload.get("skipped") or [], "benchmark_protocol": payload.get("benchmark"),
            "warning": payload.get("warning"), "holdout": payload.get("holdout"),
            "breakdowns": breakdowns((payload.get("evaluation") or {}).get("benchmark")),
            "per_class": classes, "confusion": conf, "gallery": chosen, "calibration": calibration(samples),
            "samples": {str(i): s for i, s in keep.items()}, "n_samples": len(samples), "umap": umap,
            "thumbnails": thumbnails or {}, "thumbnail_note": thumbnail_note,
            "provenance": {"environment": payload.get("environment") or {}, "cache": payload.get("cache") or {}}}


def _slim(sample: dict) -> dict:
    """A record without what the page does not show."""
    return {k: v for k, v in sample.items() if k not in ("split",)}
