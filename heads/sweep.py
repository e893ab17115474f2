"""Fit heads x views x hyperparameters over a cache; choose on validation, touch the test split once.

The validation fraction is taken from the training split by image, so a validation question never
shares its image with a training question.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache import open_cache
from featcache.cache.views import default_views
from featcache.errors import FeatcacheError
from featcache.outputs import swap_in_folder

from .benchmarks import eval_labels, read_splits, split_references, training_set
from .evaluate import all_labels, evaluate
from .grids import DEFAULT_HEADS, fits_view, load_grid, make_head
from .heap import trim_heap
from .sweep_fit import GroupJob, GroupOutcome, SweepProtocol, _FitLog, fit_checked, local_runner
from .trained import TrainedHead


@dataclass
class SweepResult:
    rows: list[dict] = field(default_factory=list)
    best: TrainedHead | None = None
    best_metrics: dict | None = None
    fits_done: int = 0
    """Fits found finished in the state folder of an interrupted run (and not redone)."""
    fits_total: int = 0
    benchmark: dict | None = None
    """On a benchmark cache: the answer vocabulary, the training questions it keeps, its coverage."""
    skipped: list[dict] = field(default_factory=list)
    """Heads left out, each with its view and the reason (said in the report)."""
    warning: str | None = None
    """Said loudly in the report and by the command (e.g. the evaluation scores training rows)."""
    holdout: dict | None = None
    """How the evaluation rows were cut from a single split (--test-fraction)."""
    evaluated_positions: np.ndarray | None = None
    """Those evaluation rows' positions in the split (None: the whole evaluation split)."""
    best_outputs: object = None
    """The best head's top 5 on the evaluated rows, where its group kept them (heads.predictions.Outputs)."""


def run_sweep(cache_path: str | Path, train_split: str = "train", eval_split: str = "test",
              heads: list[str] = DEFAULT_HEADS, views: list[str] | None = None,
              grid: str = "small", validation_fraction: float = 0.1, n_jobs: int = 1, seed: int = 0,
              progress: bool = True, state_dir: str | Path | None = None, stream: bool = False,
              min_answer_count: int | None = None, vocabulary_splits: list[str] | None = None,
              runner=None, test_fraction: float | None = None) -> SweepResult:
    """Every head x view: choose params on validation, keep or refit the best, evaluate it once on `eval_split`.

    With `stream` the views' images stay on disk and heads read them block by block (caches larger
    than memory; `sim` is small and always read); parallel fits then share the open cache in threads.
    `views` None: pooled and itc on a cache with question features, the image-only views without.

    On a benchmark cache (VQAv2, OK-VQA, GQA, A-OKVQA: ids and reference answers stored) the benchmark's protocol
    applies (heads/benchmarks.py): its vocabulary (VQA: the normalised answers seen `min_answer_count`, default 9,
    times in the training split), VQA's soft scores as targets (lr, mlp and attnpool: BCE; knn votes with them), and
    results ranked by the benchmark's own figure on the validation rows.

    With `state_dir`, every finished fit is recorded there (final heads saved safely), and a rerun
    with the same state_dir skips them. `runner` (e.g. featcache.workflows.ray_sweep.ray_runner) runs the
    (view, head) groups elsewhere: it takes a list of GroupJob and yields (job, GroupOutcome) as they finish.
    `test_fraction` (with train_split == eval_split): the evaluation rows are a seeded, image-disjoint,
    class-stratified fraction of that one split (heads/holdout.py)."""
    from tqdm.auto import tqdm

    candidates = load_grid(grid)
    for kind in heads:  # fail before any fit on a typo in --heads or the grid
        for params in candidates.get(kind, [{}]):
            make_head(kind, params)
    state = Path(state_dir) if state_dir is not None else None
    log = _FitLog(state)
    from .holdout import check_splits

    with open_cache(cache_path) as cache:
        views = list(views) if views else default_views(cache)
        overlap = check_splits(cache, train_split, eval_split, test_fraction)
        protocol = SweepProtocol.read(cache, train_split, eval_split, min_answer_count, vocabulary_splits,
                                      test_fraction, seed)
    result = SweepResult(benchmark=protocol.benchmark, warning=overlap)
    if protocol.holdout is not None:
        result.evaluated_positions = protocol.holdout[1]
        result.holdout = {"test_fraction": test_fraction, "seed": seed, "split": train_split,
                          "training_questions": len(protocol.holdout[0]), "evaluated_questions": len(protocol.holdout[1]),
                          "rule": "seeded, image-disjoint, class-stratified (StratifiedGroupKFold)"}
    jobs = [GroupJob(str(Path(cache_path).resolve()), view, kind, candidates.get(kind, [{}]), train_split, eval_split,
                     validation_fraction, seed, stream, min_answer_count, vocabulary_splits, n_jobs,
                     test_fraction=test_fraction)
            for view in views for kind in heads if fits_view(kind, view)]
    for view in views:
        for kind in heads:
            if not fits_view(kind, view):
                result.skipped.append({"head": kind, "view": view, "reason": "skipped: the attention probe needs a "
                                       "view of several tokens (itc, full, image_proj, mm)"})
    result.fits_total = sum(len(job.grid) + 1 for job in jobs)
    result.fits_done = len(log.done)
    bar = tqdm(total=result.fits_total, initial=result.fits_done, desc="sweep", unit="fit", disable=not progress)
    outcomes: dict[tuple, GroupOutcome] = {}
    todo = []
    for job in jobs:
        final_key = log.key(job.view, job.kind, "final")
        if final_key in log.done:  # finished by an interrupted run of this sweep
            record = log.done[final_key]  # (its head stays on disk until it is chosen)
            outcomes[job.key] = GroupOutcome(record.get("row"), record.get("metrics"), None, record.get("skipped"))
        else:
            todo.append(job)
    finished = (runner or local_runner(log, bar, protocol))(todo)
    for job, outcome in finished:
        outcomes[job.key] = outcome
        if outcome.trained is not None and state is not None:
            outcome.trained.save(state / "heads" / f"{job.view}-{job.kind}")
            outcome.trained = None  # (a kNN keeps its training features: on disk, not in memory, until chosen)
        trim_heap()  # (what the group freed, handed back before the next group's peak: heads/heap.py)
        log.add(log.key(job.view, job.kind, "final"), {"row": outcome.row, "metrics": outcome.metrics,
                                                       "skipped": outcome.skipped})
        if runner is not None:
            bar.update(len(job.grid) + 1)
    bar.close()
    best_validation, best_job = -np.inf, None
    for job in jobs:  # in the sweep's order, whatever order the groups finished in
        outcome = outcomes[job.key]
        if outcome.skipped:
            result.skipped.append({"head": job.kind, "view": job.view, "reason": outcome.skipped})
            continue
        result.rows.append(outcome.row)
        if outcome.row["validation_accuracy"] > best_validation:  # chosen on validation only, never on the test split
            best_validation, best_job = outcome.row["validation_accuracy"], job
            result.best_metrics, result.best_outputs = outcome.metrics, outcome.outputs
    if best_job is not None:
        result.best = outcomes[best_job.key].trained or TrainedHead.load(state / "heads" /
                                                                          f"{best_job.view}-{best_job.kind}")
    if result.best is None:
        raise FeatcacheError("no head was fitted: " + "; ".join(f"{s['head']} on {s['view']} {s['reason']}"
                                                              for s in result.skipped)
                             + ". Add --heads lr,mlp")
    result.rows.sort(key=rank_key)
    return result


def rank_key(row: dict) -> tuple:
    """Best first by the validation score (what every choice is made on); rows without one (zero-shot, which
    chooses nothing) after them, by their evaluated figure."""
    val = row.get("validation_accuracy")
    if val is not None:
        return (0, -val)
    return (1, -(row["benchmark"]["primary"] / 100 if row.get("benchmark") else row["accuracy"]))


@dataclass
class SweepReport:
    result: SweepResult
    files: dict[str, Path]
    best: Path
    note: str
    """How the run started: fresh, resumed (with how many fits already done) or clean over another run."""


def sweep_to_folder(cache_path: str | Path, out: str | Path, title: str | None = None,
                    extra_rows: list[dict] | None = None, thumbnails=None, umap: int = 0, overwrite: bool = False,
                    **sweep_kwargs) -> SweepReport:
    """Run a sweep and write its report folder atomically; `extra_rows` (e.g. zero-shot results, in the
    same fields) are ranked in the same table. The best head's outputs on the evaluated split go to
    predictions.jsonl and report.html's gallery (`thumbnails`: see heads/page/render.py; `umap`: points in the
    page's UMAP, 0 for none).

    Work happens in `OUT.partial/`, renamed to OUT only when the report is complete, so a killed
    sweep never leaves a folder that mixes two runs. Rerunning the same sweep resumes its finished
    fits; a sweep with other settings starts clean. An existing OUT is replaced only with `overwrite`."""
    from featcache.safe_folder import plain

    from .report import write_report

    out = Path(out)
    if out.exists() and not overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise FeatcacheError(f"{out} already exists ({_what_is(out)}); pass --overwrite to replace it, or choose "
                             f"another --out")
    partial = out.with_name(out.name + ".partial")
    cache = open_cache(cache_path)
    attrs = dict(cache.attrs)
    cache.close()
    identity = plain({"cache": str(Path(cache_path).resolve()), "cache_created": attrs.get("created"),
                       "model_fingerprint": attrs.get("model_fingerprint"),
                       "dataset_digest": attrs.get("dataset_digest"),
                       "grid": load_grid(sweep_kwargs.get("grid", "small")),
                       **{k: v for k, v in sweep_kwargs.items() if k not in ("progress", "n_jobs", "stream", "runner")}})
    note = "fresh"
    run_file = partial / "run.json"
    if partial.exists():
        prior = json.loads(run_file.read_text()) if run_file.exists() else None
        if prior == identity:
            note = "resumed"
        else:
            shutil.rmtree(partial)
            note = f"clean (the unfinished sweep in {partial} had other settings; it was discarded)"
    (partial / "state").mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(identity, indent=1))
    result = run_sweep(cache_path, state_dir=partial / "state", **sweep_kwargs)
    if note == "resumed":
        note = f"resumed ({result.fits_done} of {result.fits_total} fits were already done)"
    rows = sorted(result.rows + list(extra_rows or []), key=rank_key)
    extra = {"sweep_start": note, "chosen_on": "validation", "skipped": result.skipped,
             **({"benchmark": result.benchmark} if result.benchmark else {}),
             **({"warning": result.warning} if result.warning else {}),
             **({"holdout": result.holdout} if result.holdout else {})}
    from .predictions import head_records

    with open_cache(cache_path) as cache:
        samples, umap_data = head_records(result.best, cache, sweep_kwargs.get("eval_split", "test"), umap,
                                          result.evaluated_positions, result.best_outputs)
    files = write_report(partial, result.best_metrics, attrs, title or f"sweep of {cache_path}", rows=rows,
                         extra=extra, samples=samples, thumbnails=thumbnails, umap=umap_data)
    result.best.save(partial / "best")
    shutil.rmtree(partial / "state")
    run_file.unlink()
    swap_in_folder(partial, out)
    return SweepReport(result, {k: out / v.name for k, v in files.items()}, out / "best", note)


def _what_is(folder: Path) -> str:
    """A few words on what an existing --out holds."""
    results = folder / "results.json"
    if not folder.is_dir():
        return "a file, not a report folder"
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
        return f"the report '{data.get('title', '?')}' of {data.get('environment', {}).get('created', '?')}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return "a folder that is not a featcache report" if any(folder.iterdir()) else "an empty folder"


def fit_head(cache_path: str | Path, kind: str, view: str, params: dict | None = None,
             train_split: str | None = "train", stream: bool = False,
             min_answer_count: int | None = None) -> TrainedHead:
    """One head on one view of a cache's training split (`stream`: images read block by block)."""
    with open_cache(cache_path) as cache:
        data = read_splits(cache, view, [train_split], stream=stream and view != "sim")
        (X, y), = data.views
        refs = data.references[0]
        soft = None
        if refs is not None and refs.scored:  # the field's vocabulary (heads/benchmarks.py)
            kept = training_set(y, min_answer_count, refs.metric)
            X, y = X[kept.rows], kept.labels
            soft = None if data.soft is None else data.soft[kept.rows]
        head = fit_checked(make_head(kind, params or {}), X, y, soft)
        return TrainedHead.from_cache(head, view, cache, train_split, kind, params)


def evaluate_head(trained: TrainedHead, cache_path: str | Path, split: str | None = "test",
                  stream: bool = False, keep_outputs: bool = False) -> dict:
    """Metrics of a saved head on a cache split; refuses a cache of another model or preprocessing (`keep_outputs`:
    each row's top 5 under "outputs", see heads.evaluate.evaluate)."""
    with open_cache(cache_path, expect=trained.provenance) as cache:
        X, y = cache.view(trained.view, split, stream=stream and trained.view != "sim")
        refs = split_references(cache, split)
        if refs is not None and not refs.scored:  # test-dev, test: predicted for the benchmark's server only
            from .evaluate import benchmark_columns, with_benchmark

            outputs, columns = benchmark_columns(trained.head, X, refs)
            return with_benchmark({"n": len(y), "unscored": True}, outputs.predictions, refs, *columns)
        if refs is not None:
            y = eval_labels(y, refs.metric)
        return evaluate(trained.head, X, y, all_labels(y, trained.head.classes_), refs, keep_outputs=keep_outputs)
