"""Fit heads x views x hyperparameters over a cache; choose on validation, touch the test split once.

The validation fraction is taken from the training split by image, so a validation question never
shares its image with a training question.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from featcache import open_cache
from featcache.cache.views import default_views
from featcache.errors import FeatcacheError
from featcache.outputs import swap_in_folder

from .evaluate import all_labels, evaluate, primary_score
from .gbm import LightGBMHead
from .linear import LogisticRegressionHead
from .mlp import MLPHead
from .trained import TrainedHead
from .benchmarks import DEFAULT_MIN_COUNT, coverage, eval_labels, soft_targets, split_references, training_set


def head_types() -> dict[str, type]:
    return {"lr": LogisticRegressionHead, "mlp": MLPHead, "lgbm": LightGBMHead}


LINEAR_PROBE_C = tuple(10.0 ** e for e in range(-6, 7))
"""The linear probe's regularisation sweep: C = 1e-6 ... 1e6, a decade apart (CLIP's range)."""


def builtin_grid(name: str) -> dict[str, list[dict]]:
    """Hyperparameter candidates per head type: `small` (quick), `default`, or `probe` (the linear probe:
    logistic regression over C = 1e-6 ... 1e6, chosen on the validation fraction, refit, tested once)."""
    if name == "probe":
        return {"lr": [{"C": c} for c in LINEAR_PROBE_C]}
    if name == "small":
        return {"lr": [{"C": 0.1}, {"C": 1.0}], "mlp": [{"hidden_sizes": (256,)}], "lgbm": [{}]}
    if name == "default":
        return {"lr": [{"C": c} for c in (0.01, 0.1, 1.0, 10.0)],
                "mlp": [{"hidden_sizes": h, "dropout": d} for h, d in product([(256,), (512,), (512, 256)], [0.2, 0.4])]
                + [{"preset": "compact"}, {"preset": "reference"}],
                "lgbm": [{}, {"num_leaves": 31, "n_components": 128}]}
    raise FeatcacheError(f"unknown grid {name!r}: use small, default, probe, or a JSON file {{head: [params, ...]}}")


def load_grid(grid: str) -> dict[str, list[dict]]:
    if grid in ("small", "default", "probe"):
        return builtin_grid(grid)
    path = Path(grid)
    if not path.is_file():
        raise FeatcacheError(f"grid {grid!r} is neither small/default/probe nor a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FeatcacheError(f"grid {path} is not valid JSON ({str(exc)[:100]}); it must look like "
                             f'{{"lr": [{{"C": 0.1}}, {{"C": 1}}], "mlp": [{{"hidden_sizes": [256]}}]}}') from None
    types = head_types()
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(p, dict) for p in v)
                                             for v in data.values()):
        raise FeatcacheError(f"grid {path} must map head names to lists of parameter objects, e.g. "
                             f'{{"lr": [{{"C": 0.1}}, {{"C": 1}}]}}')
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise FeatcacheError(f"grid {path} names unknown head(s) {unknown}; heads: {', '.join(types)}")
    grid = {k: [{p: tuple(v) if isinstance(v, list) else v for p, v in params.items()} for params in vals]
            for k, vals in data.items()}
    for kind, vals in grid.items():
        for params in vals:
            make_head(kind, params)  # unknown parameter names fail here, before any fit
    return grid


def make_head(kind: str, params: dict, num_threads: int | None = None):
    types = head_types()
    if kind not in types:
        raise FeatcacheError(f"unknown head {kind!r}: use {', '.join(types)}")
    params = dict(params)
    preset = params.pop("preset", None)
    presets = {"reference": MLPHead.reference, "compact": MLPHead.compact}
    if preset is not None and (kind != "mlp" or preset not in presets):
        raise FeatcacheError(f"unknown preset {preset!r} for head {kind!r}: the mlp head has presets "
                             f"{', '.join(presets)}")
    cls = presets[preset] if preset else types[kind]
    known = set(types[kind]().get_params())
    unknown = sorted(set(params) - known)
    if unknown:
        raise FeatcacheError(f"unknown parameter(s) {unknown} for head {kind!r}; its parameters: "
                             f"{', '.join(sorted(known))}")
    head = cls(**params)
    if num_threads and "num_threads" in head.get_params():
        head.set_params(num_threads=num_threads)
    return head


def image_disjoint_split(X, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), grouped by image where X is factorised."""
    from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

    n = len(X)
    groups = getattr(X, "image_row", None)
    splitter = (GroupShuffleSplit if groups is not None else ShuffleSplit)(1, test_size=fraction, random_state=seed)
    return next(splitter.split(np.zeros(n), groups=groups))


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


def fit_checked(head, X, y, soft_targets=None):
    """head.fit (with the soft targets where the head takes them), with a bad parameter value reported as the
    user's to fix rather than a traceback."""
    import inspect

    takes_soft = "soft_targets" in inspect.signature(head.fit).parameters
    try:
        return head.fit(X, y, soft_targets=soft_targets) if takes_soft and soft_targets is not None else head.fit(X, y)
    except (ValueError, TypeError) as exc:
        raise FeatcacheError(f"{type(head).__name__} cannot fit with {head.get_params()}: {exc}") from None


def _fit_candidate(kind, params, X, y, tr, va, labels, threads, refs=None, soft=None):
    head = make_head(kind, params, threads)
    t = time.perf_counter()
    fit_checked(head, X[tr], y[tr], None if soft is None else soft[tr])
    fit_s = time.perf_counter() - t
    return primary_score(evaluate(head, X[va], y[va], labels, None if refs is None else refs.take(va))), fit_s


def _trains_together(kind: str, grid: list[dict], X, y) -> bool:
    """Whether a head's candidates train in one pass (minibatch heads: the MLP always, logistic regression where
    its solver is minibatch at this size)."""
    if kind == "mlp":
        return True
    if kind != "lr":
        return False
    from .linear import LBFGS_MAX_COST, pass_cost

    solvers = {make_head(kind, p).solver for p in grid}
    if solvers == {"minibatch"}:
        return True
    return solvers == {"auto"} and pass_cost(X, len(np.unique(np.asarray(y, dtype=object)))) > LBFGS_MAX_COST


def skip_reason(kind: str, grid: list[dict], X, y, n_labels: int) -> str | None:
    """Why a head is left out of this sweep (said in the report), or None: LightGBM grows one tree per class per
    round, which VQAv2's 3,129 answers make days of CPU."""
    if kind != "lgbm":
        return None
    from .gbm import LGBM_MAX_WORK, boosting_work

    classes = len(np.unique(np.asarray(y, dtype=object)))
    work = max(boosting_work(len(y), classes, make_head(kind, p).n_estimators) for p in grid)
    if work <= LGBM_MAX_WORK:
        return None
    return (f"skipped: LightGBM grows one tree per class per round; {len(y):,} rows x {classes:,} classes x "
            f"its rounds is {work:.1e} row-trees, over the {LGBM_MAX_WORK:.0e} a sweep gives it (hours on a laptop). "
            f"Fit it on fewer answers, e.g. a cache of the top-K answers, or with `featcache fit --head lgbm`")


def _fit_grid_alone(kind, grid, keys, X, y, tr, va, labels, threads, refs, soft, log, bar, n_jobs, lazy, label):
    """Candidates fitted one by one on the training rows, scored on the validation rows; the best refitted on all
    of them. Returns (final head, its params, every candidate's validation score, the final fit's seconds)."""
    from joblib import Parallel, delayed

    todo = [i for i, k in enumerate(keys) if k not in log.done]
    jobs = (delayed(_fit_candidate)(kind, grid[i], X, y, tr, va, labels, threads, refs, soft) for i in todo)
    parallel = Parallel(n_jobs=n_jobs, return_as="generator", prefer="threads" if lazy else None)
    for i, (score, fit_s) in zip(todo, parallel(jobs)):
        log.add(keys[i], {"validation_accuracy": score, "fit_s": fit_s})
        bar.update(1)
    scores = [log.done[k]["validation_accuracy"] for k in keys]
    params = grid[int(np.argmax(scores))]
    bar.set_postfix_str(f"{label}: final fit on all of train")
    head = make_head(kind, params)
    t = time.perf_counter()
    fit_checked(head, X, y, soft)
    return head, params, scores, time.perf_counter() - t


def _fit_grid_together(kind, grid, keys, X, y, tr, va, labels, threads, refs, soft, log, bar, n_jobs, lazy, label):
    """Minibatch candidates trained in one pass per group of compatible ones (heads/together.py), on the training
    rows with early stopping on the validation rows; the best is the final head (as DINOv2's linear evaluation
    keeps it), so no refit."""
    from .together import fit_together, group_heads

    heads = [make_head(kind, p, threads) for p in grid]
    scores, seconds = [0.0] * len(grid), 0.0
    for group in group_heads(heads):
        members = [heads[i] for i in group]
        t = time.perf_counter()
        try:
            fit_together(members, X, y, soft, validation_rows=va, progress=f"{label} ({len(members)} at once)")
        except (ValueError, TypeError) as exc:
            raise FeatcacheError(f"{type(members[0]).__name__} cannot fit with {members[0].get_params()}: "
                                 f"{exc}") from None
        seconds += time.perf_counter() - t
        for i in group:
            scores[i] = primary_score(evaluate(heads[i], X[va], y[va], labels, None if refs is None else refs.take(va)))
            log.add(keys[i], {"validation_accuracy": scores[i], "fit_s": (time.perf_counter() - t) / len(group)})
            bar.update(1)
    best_i = int(np.argmax(scores))
    return heads[best_i], grid[best_i], scores, seconds


class _FitLog:
    """Finished fits of a sweep, one JSON line each, so an interrupted sweep resumes (no state: no log)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.done: dict[str, dict] = {}
        if folder is not None and (folder / "fits.jsonl").exists():
            for line in (folder / "fits.jsonl").read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by the interruption: that fit is redone
                self.done[record["key"]] = record

    @staticmethod
    def key(*parts) -> str:
        return json.dumps(parts, sort_keys=True, default=list)

    def add(self, key: str, record: dict) -> None:
        self.done[key] = {"key": key, **record}
        if self.folder is not None:
            with (self.folder / "fits.jsonl").open("a") as fh:
                fh.write(json.dumps(self.done[key]) + "\n")


def run_sweep(cache_path: str | Path, train_split: str = "train", eval_split: str = "test",
              heads: list[str] = ("lr", "mlp", "lgbm"), views: list[str] | None = None,
              grid: str = "small", validation_fraction: float = 0.1, n_jobs: int = 1, seed: int = 0,
              progress: bool = True, state_dir: str | Path | None = None, stream: bool = False,
              min_answer_count: int | None = None, vocabulary_splits: list[str] | None = None) -> SweepResult:
    """Every head x view: choose params on validation, refit on the whole training split, evaluate once.

    With `stream` the views' images stay on disk and heads read them block by block (caches larger
    than memory; `sim` is small and always read); parallel fits then share the open cache in threads.
    `views` None: pooled and itc on a cache with question features, the image-only views without.

    On a benchmark cache (VQAv2, OK-VQA, GQA, A-OKVQA: ids and reference answers stored) the benchmark's protocol
    applies (heads/benchmarks.py): its vocabulary (VQA: the normalised answers seen `min_answer_count`, default 9,
    times in the training split), VQA's soft scores as targets (lr and mlp: BCE), and results ranked by the
    benchmark's own figure (validation included).

    With `state_dir`, every finished fit is recorded there (final heads saved safely), and a rerun
    with the same state_dir skips them."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    candidates = load_grid(grid)
    for kind in heads:  # fail before any fit on a typo in --heads or the grid
        for params in candidates.get(kind, [{}]):
            make_head(kind, params)
    state = Path(state_dir) if state_dir is not None else None
    log = _FitLog(state)
    cache = open_cache(cache_path)
    views = list(views) if views else default_views(cache)
    threads = 1 if n_jobs != 1 else None
    result = SweepResult()
    lazy = {v: stream and v != "sim" for v in views}
    data = {v: (cache.view(v, train_split, stream=lazy[v]), cache.view(v, eval_split, stream=lazy[v])) for v in views}
    refs, refs_eval = split_references(cache, train_split), split_references(cache, eval_split)
    if refs is not None and refs.scored:
        counted = None
        if vocabulary_splits:  # the vocabulary counted over other splits too (VQAv2's train+val rule)
            from featcache.cache.views import question_rows

            counted = cache.strings("questions", "answer")[question_rows(cache, list(vocabulary_splits))]
        kept = training_set(data[views[0]][0][1], min_answer_count, refs.metric, counted)
        data = {v: ((X[kept.rows], kept.labels), (Xe, eval_labels(ye, refs.metric)))
                for v, ((X, _), (Xe, ye)) in data.items()}
        refs = refs.take(kept.rows)
        soft = soft_targets(refs)
        result.benchmark = {"metric": refs.metric, "vocabulary": len(kept.vocabulary),
                            "min_answer_count": DEFAULT_MIN_COUNT[refs.metric] if min_answer_count is None else min_answer_count,
                            "training_questions": len(refs.question_ids),
                            "targets": f"{'VizWiz' if refs.metric == 'vizwiz' else 'VQA'} soft scores (lr and mlp: "
                                       f"binary cross-entropy summed over answers)"
                            if soft is not None else "the labels (cross-entropy)",
                            "coverage": {train_split: coverage(kept.vocabulary, refs)},
                            "vocabulary_splits": list(vocabulary_splits or [train_split])}
        if vocabulary_splits and eval_split in vocabulary_splits:
            result.benchmark["warning"] = (f"the vocabulary counts answers of {eval_split}, the split evaluated: "
                                           f"its answers leak into the classifier's outputs (the field's train+val "
                                           f"vocabulary is meant for test-dev / test)")
        if refs_eval is not None and refs_eval.scored:
            result.benchmark["coverage"][eval_split] = coverage(kept.vocabulary, refs_eval)
    else:
        refs = soft = None
    result.fits_total = sum(len(candidates.get(h, [{}])) + 1 for h in heads) * len(views)
    result.fits_done = len(log.done)
    bar = tqdm(total=result.fits_total, initial=result.fits_done, desc="sweep", unit="fit", disable=not progress)
    best_validation = -np.inf
    for view in views:
        (X, y), (Xe, ye) = data[view]
        labels = all_labels(y, ye)
        tr, va = image_disjoint_split(X, validation_fraction, seed)
        for kind in heads:
            grid_k = candidates.get(kind, [{}])
            bar.set_postfix_str(f"{kind} on {view}")  # a long single fit still says what it is doing
            final_key = log.key(view, kind, "final")
            keys = [log.key(view, kind, p) for p in grid_k]
            skip = None if final_key in log.done else skip_reason(kind, grid_k, X, y, len(labels))
            if skip is not None:
                result.skipped.append({"head": kind, "view": view, "reason": skip})
                bar.update(len(grid_k) + 1)
                continue
            if final_key in log.done:
                row, metrics = log.done[final_key]["row"], log.done[final_key]["metrics"]
                trained = TrainedHead.load(state / "heads" / f"{view}-{kind}") if state is not None else None
            else:
                fit = _fit_grid_together if _trains_together(kind, grid_k, X, y) else _fit_grid_alone
                head, params, scores, fit_s = fit(kind, grid_k, keys, X, y, tr, va, labels, threads, refs, soft, log,
                                                  bar, n_jobs, lazy[view], f"{kind} on {view}")
                best_i = int(np.argmax(scores))
                metrics = evaluate(head, Xe, ye, labels, refs_eval)  # the test split, once per final model
                row = {"head": kind, "view": view, "params": {k: list(v) if isinstance(v, tuple) else v
                                                              for k, v in params.items()},
                       "validation_accuracy": scores[best_i], "accuracy": metrics["accuracy"],
                       "macro_f1": metrics["macro_f1"], "balanced_accuracy": metrics["balanced_accuracy"],
                       "top5_accuracy": metrics["top5_accuracy"], "fit_s": fit_s, "predict_s": metrics["predict_s"],
                       "candidates": len(grid_k)}
                if "benchmark" in metrics:
                    row["benchmark"] = {k: v for k, v in metrics["benchmark"].items()
                                        if k not in ("perQuestionType", "accuracyPerSemanticType")}
                trained = TrainedHead.from_cache(head, view, cache, train_split, kind, params)
                if state is not None:
                    trained.save(state / "heads" / f"{view}-{kind}")
                log.add(final_key, {"row": row, "metrics": metrics})
                bar.update(1)
            result.rows.append(row)
            if row["validation_accuracy"] > best_validation:  # chosen on validation only, never on the test split
                best_validation = row["validation_accuracy"]
                result.best, result.best_metrics = trained, metrics
    bar.close()
    cache.close()
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
                    extra_rows: list[dict] | None = None, **sweep_kwargs) -> SweepReport:
    """Run a sweep and write its report folder atomically; `extra_rows` (e.g. zero-shot results, in the
    same fields) are ranked in the same table.

    Work happens in `OUT.partial/`, renamed to OUT only when the report is complete, so a killed
    sweep never leaves a folder that mixes two runs. Rerunning the same sweep resumes its finished
    fits; a sweep with other settings starts clean."""
    from featcache.safe_folder import plain

    from .report import write_report

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    cache = open_cache(cache_path)
    attrs = dict(cache.attrs)
    cache.close()
    identity = plain({"cache": str(Path(cache_path).resolve()), "cache_created": attrs.get("created"),
                       "model_fingerprint": attrs.get("model_fingerprint"),
                       "dataset_digest": attrs.get("dataset_digest"),
                       "grid": load_grid(sweep_kwargs.get("grid", "small")),
                       **{k: v for k, v in sweep_kwargs.items() if k not in ("progress", "n_jobs", "stream")}})
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
             **({"benchmark": result.benchmark} if result.benchmark else {})}
    files = write_report(partial, result.best_metrics, attrs, title or f"sweep of {cache_path}", rows=rows,
                         extra=extra)
    result.best.save(partial / "best")
    shutil.rmtree(partial / "state")
    run_file.unlink()
    swap_in_folder(partial, out)
    return SweepReport(result, {k: out / v.name for k, v in files.items()}, out / "best", note)


def fit_head(cache_path: str | Path, kind: str, view: str, params: dict | None = None,
             train_split: str | None = "train", stream: bool = False,
             min_answer_count: int | None = None) -> TrainedHead:
    """One head on one view of a cache's training split (`stream`: images read block by block)."""
    with open_cache(cache_path) as cache:
        X, y = cache.view(view, train_split, stream=stream and view != "sim")
        refs = split_references(cache, train_split)
        if refs is not None and refs.scored:  # the field's vocabulary (heads/benchmarks.py)
            kept = training_set(y, min_answer_count, refs.metric)
            X, y = X[kept.rows], kept.labels
            soft = soft_targets(refs.take(kept.rows))
        else:
            soft = None
        head = fit_checked(make_head(kind, params or {}), X, y, soft)
        return TrainedHead.from_cache(head, view, cache, train_split, kind, params)


def evaluate_head(trained: TrainedHead, cache_path: str | Path, split: str | None = "test",
                  stream: bool = False) -> dict:
    """Metrics of a saved head on a cache split; refuses a cache of another model or preprocessing."""
    with open_cache(cache_path, expect=trained.provenance) as cache:
        X, y = cache.view(trained.view, split, stream=stream and trained.view != "sim")
        refs = split_references(cache, split)
        if refs is not None and not refs.scored:  # test-dev, test: predicted for the benchmark's server only
            from .evaluate import with_benchmark

            head = trained.head
            proba = head.predict_proba(X)
            metrics = with_benchmark({"n": len(y), "unscored": True}, head.classes_[np.argmax(proba, axis=1)], refs,
                                     proba, head.classes_)
            return metrics
        if refs is not None:
            y = eval_labels(y, refs.metric)
        return evaluate(trained.head, X, y, all_labels(y, trained.head.classes_), refs)
