"""Report folders: results.json, report.md, per_class.csv, confusion.png (and the best head).

Every report states the machine, package versions, the cache's metadata and the command that made
it, and says so loudly when the features came from random weights.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from .evaluate import plot_confusion

def random_banner(model_id: str = "tiny-random") -> str:
    """The warning every report built on a tiny random model starts with, naming that model."""
    return (f"**RANDOM WEIGHTS: these features come from `{model_id}`, a tiny BLIP-2 with random weights "
            "built to exercise the pipeline. The accuracies below mean nothing.**")



def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("featcache", "torch", "transformers", "scikit-learn", "lightgbm", "numpy", "h5py"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "not installed"
    return {"machine": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "versions": versions, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "git_commit": _commit(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _commit() -> str | None:
    """The featcache checkout's git commit (with "+changes" when its tracked files differ), or None outside one."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"], capture_output=True,
                               timeout=5).returncode
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+changes" if dirty else "")) if head else None


def _secs(v, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "-" if v is None else str(v)


def write_report(out_dir: str | Path, metrics: dict, cache_attrs: dict, title: str, rows: list[dict] | None = None,
                 extra: dict | None = None, samples: list[dict] | None = None, thumbnails=None,
                 umap: dict | None = None) -> dict[str, Path]:
    """results.json, report.md, per_class.csv, confusion.png, and report.html; with `samples` (the evaluated
    questions' records, heads/predictions.py) also predictions.jsonl, and the page's gallery from them
    (`thumbnails`: image keys -> data: URIs, heads/page/render.py)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    random_weights = str(cache_attrs.get("model_id", "")).startswith("tiny-random")
    env = environment()
    summary = {k: metrics.get(k) for k in ("n", "accuracy", "macro_f1", "balanced_accuracy", "top5_accuracy",
                                           "predict_s", "benchmark") if k != "benchmark" or "benchmark" in metrics}
    classify = cache_attrs.get("task") == "classify"
    payload = {"title": title, "random_weights": random_weights, "environment": env, "cache": cache_attrs,
               "ranking": rows or [], "evaluation": summary, "per_class": metrics["per_class"], **(extra or {})}
    files = {"results": out / "results.json", "report": out / "report.md", "per_class": out / "per_class.csv",
             "confusion": out / "confusion.png"}
    files["results"].write_text(json.dumps(payload, indent=1, default=str) + "\n")
    if metrics.get("submission") is not None:  # the benchmark's results format, for its evaluator or server
        files["submission"] = out / "submission.json"
        files["submission"].write_text(json.dumps(metrics["submission"]) + "\n")

    with files["per_class"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "precision", "recall", "f1", "support"])
        for c, m in metrics["per_class"].items():
            w.writerow([c, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"]])
    plot_confusion(metrics, files["confusion"],
                   ("RANDOM WEIGHTS - " if random_weights else "") + f"{title}: accuracy {metrics['accuracy']:.3f}, "
                   f"macro F1 {metrics['macro_f1']:.3f}")

    md = [f"# {title}", ""]
    if random_weights:
        md += [random_banner(str(cache_attrs.get("model_id", "tiny-random"))), ""]
    if "benchmark" in metrics:  # the benchmark's own figure first (featcache.scoring: its official scoring)
        from .benchmarks import FIGURE_NAMES, SCORERS, breakdown

        b = metrics["benchmark"]
        md += [f"Evaluated on {summary['n']} questions: {FIGURE_NAMES[b['metric']]} **{b['primary']:.2f}** "
               f"({breakdown(b)}), as {SCORERS[b['metric']]} scores it; plain accuracy on the label "
               f"**{summary['accuracy']:.4f}**. Results file in the benchmark's format: `submission.json`.", ""]
        if (extra or {}).get("benchmark"):
            b = extra["benchmark"]
            reach = ", ".join(f"{s} {v:.2f}" for s, v in b["coverage"].items())
            md += [f"Answer vocabulary: the {b['vocabulary']} normalised answers seen at least {b['min_answer_count']} "
                   f"times in {'+'.join(b.get('vocabulary_splits', ['the training split']))} ({b['training_questions']} training questions kept); the best VQA "
                   f"accuracy a classifier over it can reach: {reach}. Targets: {b.get('targets', 'labels')}.", ""]
            if b.get("warning"):
                md += [f"**Warning: {b['warning']}.**", ""]
    elif classify:  # CLIP_benchmark's figures: top-1, top-5, mean per-class recall (= balanced accuracy)
        top5 = f", top-5 **{summary['top5_accuracy']:.4f}**" if summary["top5_accuracy"] is not None else ""
        md += [f"Evaluated on {summary['n']} images over {len(metrics['per_class'])} classes: top-1 accuracy "
               f"**{summary['accuracy']:.4f}**{top5}, mean per-class recall **{summary['balanced_accuracy']:.4f}**, "
               f"macro F1 **{summary['macro_f1']:.4f}**.", ""]
    else:
        md += [f"Evaluated on {summary['n']} questions: accuracy **{summary['accuracy']:.4f}**, macro F1 over all "
               f"{len(metrics['per_class'])} classes **{summary['macro_f1']:.4f}**, balanced accuracy "
               f"**{summary['balanced_accuracy']:.4f}**.", ""]
    if rows:
        recall = "mean per-class recall" if classify else "balanced acc"
        vqa = next((r["benchmark"]["metric"] for r in rows if r.get("benchmark")), None)  # the benchmark's figure
        name = {"vqa": "VQA acc", "gqa": "GQA acc", "aokvqa": "DA acc", "vizwiz": "VizWiz acc"}.get(vqa, "")
        md += ["## Ranking", "", "Ranked by the validation score. Every choice (hyperparameters, head, view, and `best/`) is "
               "made on an image-disjoint validation fraction of the training split; the test split is scored once "
               "per final model, reported, and never used to choose.", "", f"| rank | head | view | params | {'val ' + name if vqa else 'val acc'} | {name + ' | ' if vqa else ''}"
               f"accuracy | top-5 | macro F1 | {recall} | fit s | predict s |",
               "| --- " * (12 if vqa else 11) + "|"]
        for i, r in enumerate(rows, 1):
            top5 = r.get("top5_accuracy")
            vqa_cell = (f"{r['benchmark']['primary']:.2f} | " if r.get("benchmark") else "- | ") if vqa else ""
            val = r["validation_accuracy"]
            val = f"{100 * val:.2f}" if vqa and isinstance(val, float) else _fmt(val)  # benchmark figures are 0-100
            md.append(f"| {i} | {r['head']} | {r['view']} | `{json.dumps(r['params'])}` | {val} "
                      f"| {vqa_cell}{_fmt(r['accuracy'])} | {_fmt(top5) if top5 is not None else '-'} | {_fmt(r['macro_f1'])} "
                      f"| {_fmt(r['balanced_accuracy'])} | {_secs(r.get('fit_s'), 2)} | {_secs(r.get('predict_s'), 3)} |")
        md.append("")
    if (extra or {}).get("warning"):
        md += [f"**Warning: {extra['warning']}.**", ""]
    if (extra or {}).get("holdout"):
        h = extra["holdout"]
        md += [f"Evaluated on a held-out part of split `{h['split']}`: {h['evaluated_questions']} questions "
               f"(--test-fraction {h['test_fraction']}, seed {h['seed']}; {h['rule']}); trained on the other "
               f"{h['training_questions']}.", ""]
    for skipped in (extra or {}).get("skipped", []):
        md += [f"- **{skipped['head']} on {skipped['view']}** {skipped['reason']}."]
    if (extra or {}).get("skipped"):
        md.append("")
    md += ["## Per class", "", "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    md += [f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
           for c, m in metrics["per_class"].items()]
    md += ["", "![confusion matrix](confusion.png)", "", "## How this was made", "",
           f"- command: `{env['command']}`", f"- machine: {env['machine']} ({env['cpu_count']} CPUs), Python {env['python']}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
           f"- created: {env['created']}", "", "Cache metadata:", ""]
    md += [f"- {k}: `{v}`" for k, v in sorted(cache_attrs.items())]
    files["report"].write_text("\n".join(md) + "\n")
    if samples is not None:
        from .predictions import write_predictions

        files["predictions"] = write_predictions(out / "predictions.jsonl", samples)
    from .page import write_page

    files["html"] = write_page(out / "report.html", json.loads(files["results"].read_text()), samples or [],
                               thumbnails, umap=umap)
    return files
