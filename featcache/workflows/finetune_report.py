"""A fine-tune's report folder (`OUT/report/`): the best epoch's model on the evaluated split, in the same files as a
sweep's (report.html, predictions.jsonl, results.json, report.md, per_class.csv, confusion.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_finetune_report(rep, source, provenance: dict, config, title: str) -> dict | None:
    """The report of `rep` (featcache.finetune.FinetuneReport) on `source`'s evaluated samples; None where there is
    nothing to report (no evaluated split, or one without answers)."""
    from heads.evaluate import all_labels, prediction_metrics, with_benchmark
    from heads.predictions import Outputs, build_records
    from heads.report import write_report

    from .thumbnails import thumbnailer, thumbnails_of

    outputs = rep.test_outputs
    if outputs is None or not len(outputs["idx"]) or (rep.test_metrics or {}).get("unscored"):
        return None
    idx = np.asarray(outputs["idx"], dtype=np.int64)
    samples = [source.samples[i] for i in idx]
    classes = np.asarray(outputs["labels"], dtype=object)
    predicted = Outputs(classes, outputs["top"], outputs["top_p"])
    y = np.asarray([s.answer for s in samples], dtype=object)
    refs = source.references(idx)
    refs = refs if refs is not None and refs.scored else None
    metrics = prediction_metrics(y, predicted.predictions, all_labels(y, classes))
    metrics = with_benchmark(metrics, predicted.predictions, refs)
    metrics["top5_accuracy"] = float(np.mean([label in classes[top] for label, top in zip(y, predicted.top)]))
    records = build_records(idx, [s.image for s in samples], [s.text or None for s in samples],
                            [s.split for s in samples], predicted, y, refs)
    dataset = getattr(source, "dataset", None)
    if dataset is not None:  # a live fine-tune: its dataset's own images
        attrs = {**provenance, "dataset_name": dataset.name, "dataset_source": dataset.source}
        thumbnails = thumbnails_of(dataset)
    else:
        attrs = {**dict(source.cache.attrs), **provenance}
        thumbnails, _ = thumbnailer(dict(source.cache.attrs))
    row = {"head": "finetune", "view": config.view, "params": {"lora_rank": config.lora_rank, "lr": config.lr,
                                                             "epochs": config.epochs,
                                                             "hidden_sizes": list(config.hidden_sizes)},
           "validation_accuracy": rep.best_validation_accuracy, "accuracy": metrics["accuracy"],
           "macro_f1": metrics["macro_f1"], "balanced_accuracy": metrics["balanced_accuracy"],
           "top5_accuracy": metrics["top5_accuracy"], "fit_s": None, "predict_s": 0.0,
           **({"benchmark": {k: v for k, v in metrics["benchmark"].items() if k != "perQuestionType"}}
              if "benchmark" in metrics else {})}
    return write_report(Path(rep.out) / "report", metrics, attrs, title, rows=[row],
                        extra={"finetune": {"epochs_run": rep.epochs_run, "history": rep.history}},
                        samples=records, thumbnails=thumbnails)
