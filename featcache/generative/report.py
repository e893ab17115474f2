"""Zero-shot results written as a sweep report (same files, same row fields), so the two sit in one table."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..cache import open_cache
from ..outputs import swap_in_folder


def zeroshot_row(result, metrics: dict) -> dict:
    """A row with the fields of a `sweep` row; `head` names the method, `view` the model."""
    return {"head": f"zeroshot-{result.method}", "view": result.model, "params": result.settings,
            "validation_accuracy": None, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "balanced_accuracy": metrics["balanced_accuracy"], "fit_s": 0.0, "predict_s": result.seconds,
            "candidates": len(result.vocabulary), "questions": metrics["n"], **result.counts,
            **({"benchmark": {k: v for k, v in metrics["benchmark"].items()
                              if k not in ("perQuestionType", "accuracyPerSemanticType")}} if "benchmark" in metrics else {})}


def write_zeroshot_report(result, cache_path, out) -> tuple[dict, dict]:
    from heads.evaluate import all_labels, prediction_metrics, with_benchmark
    from heads.report import write_report

    from ..cache.answers import read_references

    from heads.predictions import Outputs, records

    with open_cache(cache_path) as cache:
        attrs = dict(cache.attrs)
        refs = read_references(cache, result.rows) if result.rows is not None else None
        # every question's answer (no probabilities: the page's gallery orders errors by their order)
        samples = (records(cache, result.rows, Outputs.of_predictions(result.pred), result.y,
                           refs if refs is not None and refs.scored else None)
                   if result.rows is not None else None)
    labels = all_labels(result.y, result.vocabulary)
    metrics = prediction_metrics(result.y, result.pred, labels, result.seconds)
    # a benchmark scores what the model said: the generated text itself where there is one
    answers = result.raw if result.raw is not None else result.pred
    metrics = with_benchmark(metrics, answers, refs, mc=result.choices)
    row = zeroshot_row(result, metrics)
    out = Path(out)
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")  # renamed in whole: a kill mixes no two runs
    shutil.rmtree(partial, ignore_errors=True)
    files = write_report(partial, metrics, attrs, f"zero-shot {result.method} with {result.model} on "
                         f"{result.settings.get('split')} of {cache_path}", rows=[row],
                         extra={"zeroshot": {**result.settings, **result.counts}}, samples=samples)
    swap_in_folder(partial, out)
    return {k: out / p.name for k, p in files.items()}, row
