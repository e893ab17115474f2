"""One table across report folders (CLIP_benchmark's `build`), and paired tests where two runs scored the same
questions (lmms-eval's `--baseline`): two runs' intervals overlapping says little; the per-question differences do.

    featcache compare runs/a runs/b runs/c --out runs/compare

The first folder is the baseline. For each other run that shares questions with it (matched by question id, else
by cache row and image), the mean difference of the per-question scores (VQA accuracy on VQA, else right/wrong),
its 95% paired-bootstrap interval and p-value, a paired t-test, and the questions where the two disagree most.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError

from .predictions import read_predictions

BOOTSTRAP = 10_000
DISAGREEMENTS = 20


@dataclass
class Run:
    folder: Path
    results: dict
    samples: list[dict] | None = None
    row: dict = field(default_factory=dict)

    @classmethod
    def read(cls, folder: str | Path) -> "Run":
        folder = Path(folder)
        path = folder / "results.json"
        if not path.is_file():
            raise FeatcacheError(f"{folder} is not a report folder (no results.json): give the folders that sweep, "
                                 f"evaluate or zeroshot wrote")
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise FeatcacheError(f"{path} is not valid JSON (a cut or edited file?); write the report again") from None
        if not isinstance(results, dict):
            raise FeatcacheError(f"{path} holds a JSON {type(results).__name__}, not a featcache report's results")
        samples = read_predictions(folder / "predictions.jsonl") if (folder / "predictions.jsonl").is_file() else None
        return cls(folder, results, samples)

    def summary(self) -> dict:
        r, cache, env = self.results, self.results.get("cache") or {}, self.results.get("environment") or {}
        best = (r.get("ranking") or [{}])[0]
        ev = r.get("evaluation") or {}
        bench = ev.get("benchmark") or {}
        splits = sorted({s.get("split", "") for s in self.samples or []} - {""})
        return {"report": str(self.folder), "dataset": cache.get("dataset_name", "-"),
                "split": ",".join(splits) or "-", "model": cache.get("model_id", "-"), "view": best.get("view", "-"),
                "head": best.get("head", "-"), "params": json.dumps(best.get("params", {})),
                "figure": f"{bench['metric']} {bench['primary']:.2f}" if bench else "accuracy",
                "score": round(bench["primary"], 2) if bench else round(100 * float(ev.get("accuracy", 0.0)), 2),
                "questions": ev.get("n"), "fit_s": best.get("fit_s"), "date": env.get("created", "-"),
                "commit": env.get("git_commit") or "-", "random_weights": bool(r.get("random_weights"))}


def _key(sample: dict) -> tuple:
    qid = sample.get("question_id")
    return ("id", str(qid)) if qid not in (None, "") else ("row", sample.get("row"), sample.get("image"))


def paired(base: Run, other: Run, seed: int = 0) -> dict | None:
    """The paired comparison of `other` against `base` on the questions both scored, or None if they share none."""
    if base.samples is None or other.samples is None:
        return None
    a = {_key(s): s for s in base.samples}
    b = {_key(s): s for s in other.samples}
    common = [k for k in a if k in b]
    if not common:
        return None
    sa = np.array([a[k]["score"] for k in common], dtype=float)
    sb = np.array([b[k]["score"] for k in common], dtype=float)
    diff = sb - sa
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(BOOTSTRAP)])
    low, high = np.percentile(means, [2.5, 97.5])
    p_boot = min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean()))
    from scipy.stats import ttest_rel

    t = ttest_rel(sb, sa) if np.any(diff != 0) else None
    order = np.argsort(-np.abs(diff), kind="stable")[:DISAGREEMENTS]
    disagree = [{"question": a[common[i]].get("question"), "image": a[common[i]].get("image"),
                 "label": a[common[i]].get("label"), "baseline": a[common[i]]["prediction"],
                 "other": b[common[i]]["prediction"], "baseline_score": sa[i], "other_score": sb[i]}
                for i in order if diff[i] != 0]
    return {"baseline": str(base.folder), "other": str(other.folder), "questions": len(common),
            "only_baseline": len(a) - len(common), "only_other": len(b) - len(common),
            "baseline_mean": round(100 * sa.mean(), 2), "other_mean": round(100 * sb.mean(), 2),
            "difference": round(100 * diff.mean(), 2), "ci95": [round(100 * low, 2), round(100 * high, 2)],
            "p_bootstrap": round(float(p_boot), 4), "p_ttest": None if t is None else float(f"{t.pvalue:.4g}"),
            "disagreements": disagree, "differ_on": int((diff != 0).sum())}


def compare(folders: list[str | Path], out: str | Path | None = None) -> dict:
    """The table and the paired tests; with `out`, written as compare.csv, compare.md, compare.json, compare.html."""
    if len(folders) < 1:
        raise FeatcacheError("give at least one report folder")
    runs = [Run.read(f) for f in folders]
    table = [r.summary() for r in runs]
    pairs = [p for p in (paired(runs[0], r) for r in runs[1:]) if p is not None]
    result = {"runs": table, "paired": pairs,
              "unpaired": [str(r.folder) for r in runs[1:] if paired_possible(runs[0], r) is False]}
    if out is not None:
        write(Path(out), result)
    return result


def paired_possible(base: Run, other: Run) -> bool:
    return base.samples is not None and other.samples is not None and bool(
        {_key(s) for s in base.samples} & {_key(s) for s in other.samples})


COLUMNS = ("report", "dataset", "split", "model", "view", "head", "figure", "score", "questions", "fit_s", "date",
           "commit")


def markdown(result: dict) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in result["runs"]:
        lines.append("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    for p in result["paired"]:
        lines += ["", f"**{p['other']}** against **{p['baseline']}** on {p['questions']} shared questions: "
                      f"{p['difference']:+.2f} points (95% paired bootstrap {p['ci95'][0]:+.2f} to {p['ci95'][1]:+.2f}, "
                      f"p = {p['p_bootstrap']}; paired t-test p = {p['p_ttest']}); they differ on {p['differ_on']}."]
    for folder in result["unpaired"]:
        lines += ["", f"{folder}: no question in common with the baseline (no paired test)."]
    return "\n".join(lines) + "\n"


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "compare.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS) + ["params", "random_weights"])
        writer.writeheader()
        writer.writerows(result["runs"])
    (out / "compare.md").write_text(markdown(result))
    (out / "compare.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    from .page.render import write_compare_page

    write_compare_page(out / "compare.html", result, COLUMNS)
