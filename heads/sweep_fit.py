"""One (view, head) group of a sweep: its candidates fitted and scored on validation, the chosen one evaluated once.

A group is the unit a sweep resumes at and the unit `--engine ray` sends to a worker (`GroupJob` in,
`GroupOutcome` out): a worker opens the cache from the path in the job (storage every node mounts) and reads only
its own view.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np

from featcache import open_cache
from featcache.errors import FeatcacheError

from .benchmarks import DEFAULT_MIN_COUNT, coverage, eval_labels, soft_targets, split_references, training_set
from .evaluate import all_labels, evaluate, primary_score
from .grids import make_head
from .heap import trim_heap
from .trained import TrainedHead


@dataclass(frozen=True)
class GroupJob:
    """Everything a worker needs to run one (view, head) group of a sweep."""

    cache_path: str
    view: str
    kind: str
    grid: list
    train_split: str = "train"
    eval_split: str = "test"
    validation_fraction: float = 0.1
    seed: int = 0
    stream: bool = False
    min_answer_count: int | None = None
    vocabulary_splits: list | None = None
    n_jobs: int = 1
    threads: int | None = None
    """Torch threads for the group's fits; None: one with n_jobs > 1, else the idle cores."""
    test_fraction: float | None = None
    """Evaluation rows cut from the training split (heads/holdout.py), for a cache with one split."""

    @property
    def key(self) -> tuple:
        return (self.view, self.kind)


@dataclass
class GroupOutcome:
    row: dict | None
    metrics: dict | None
    trained: TrainedHead | None
    skipped: str | None = None
    """Why the group was left out (the report says it), or None."""
    outputs: object = None
    """The final head's top 5 on the evaluated rows (heads.predictions.Outputs), for the report's records; not
    logged (a resumed group has none, and the report predicts them again)."""


@dataclass
class SweepProtocol:
    """What every view of a sweep shares: the training rows kept, their labels and soft targets, the references
    of both splits, and on a benchmark cache its vocabulary and coverage (heads/benchmarks.py)."""

    kept_rows: np.ndarray | None = None
    labels: np.ndarray | None = None
    metric: str | None = None
    refs: object = None
    refs_eval: object = None
    soft: np.ndarray | None = None
    benchmark: dict | None = field(default=None)
    holdout: tuple | None = None
    """(training, evaluation) positions in the one split (--test-fraction), or None."""

    @classmethod
    def read(cls, cache, train_split: str, eval_split: str, min_answer_count: int | None = None,
             vocabulary_splits: list | None = None, test_fraction: float | None = None,
             seed: int = 0) -> "SweepProtocol":
        from featcache.cache.views import question_rows

        refs, refs_eval = split_references(cache, train_split), split_references(cache, eval_split)
        if test_fraction is not None:
            if refs is not None and refs.scored:
                raise FeatcacheError("--test-fraction is for caches without a benchmark's own splits; evaluate a "
                                     "benchmark on its own val or test split")
            from .holdout import holdout_positions

            rows = question_rows(cache, train_split)
            images = np.asarray(cache.read("questions", "image_row"))[rows]
            labels = np.asarray(cache.strings("questions", "answer"), dtype=object)[rows]
            return cls(refs_eval=None, holdout=holdout_positions(labels, images, test_fraction, seed))
        if refs is None or not refs.scored:
            return cls(refs_eval=None)
        y = cache.strings("questions", "answer")[question_rows(cache, train_split)]
        counted = None
        if vocabulary_splits:  # the vocabulary counted over other splits too (VQAv2's train+val rule)
            counted = cache.strings("questions", "answer")[question_rows(cache, list(vocabulary_splits))]
        kept = training_set(y, min_answer_count, refs.metric, counted)
        refs = refs.take(kept.rows)
        soft = soft_targets(refs)
        benchmark = {"metric": refs.metric, "vocabulary": len(kept.vocabulary),
                     "min_answer_count": DEFAULT_MIN_COUNT[refs.metric] if min_answer_count is None else min_answer_count,
                     "training_questions": len(refs.question_ids),
                     "targets": f"{'VizWiz' if refs.metric == 'vizwiz' else 'VQA'} soft scores (lr, mlp and "
                                f"attnpool: binary cross-entropy summed over answers; knn: its neighbours vote with "
                                f"them)"
                     if soft is not None else "the labels (cross-entropy)",
                     "coverage": {train_split: coverage(kept.vocabulary, refs)},
                     "vocabulary_splits": list(vocabulary_splits or [train_split])}
        if vocabulary_splits and eval_split in vocabulary_splits:
            benchmark["warning"] = (f"the vocabulary counts answers of {eval_split}, the split evaluated: "
                                    f"its answers leak into the classifier's outputs (the field's train+val "
                                    f"vocabulary is meant for test-dev / test)")
        if refs_eval is not None and refs_eval.scored:
            benchmark["coverage"][eval_split] = coverage(kept.vocabulary, refs_eval)
        return cls(kept.rows, kept.labels, refs.metric, refs, refs_eval, soft, benchmark)

    def view_data(self, cache, view: str, train_split: str, eval_split: str, stream: bool):
        """((X, y), (X_eval, y_eval)) of `view` under this protocol."""
        lazy = stream and view != "sim"
        if self.holdout is not None:
            X, y = cache.view(view, train_split, stream=lazy)
            train, held = self.holdout
            return (X[train], np.asarray(y)[train]), (X[held], np.asarray(y)[held])
        (X, y), (Xe, ye) = cache.split_views(view, [train_split, eval_split], stream=lazy)
        if self.metric is None:
            return (X, y), (Xe, ye)
        return (X[self.kept_rows], self.labels), (Xe, eval_labels(ye, self.metric))


def image_disjoint_split(X, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), grouped by image where X is factorised."""
    from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

    n = len(X)
    groups = getattr(X, "image_row", None)
    splitter = (GroupShuffleSplit if groups is not None else ShuffleSplit)(1, test_size=fraction, random_state=seed)
    return next(splitter.split(np.zeros(n), groups=groups))



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
    if kind in ("mlp", "attnpool"):
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


class _Voted:
    """A kNN candidate voted from a shared search, in the shape evaluate() takes: its X is the rows' positions
    (`positions(n)`), and each block of rows evaluate asks for is voted when asked (the validation part's whole
    probability matrix is 1 GB on VQAv2: 44k rows x 3,116 answers in float64, twice while voting)."""

    def __init__(self, base, k: int, temperature: float, neighbors: tuple[np.ndarray, np.ndarray]) -> None:
        self.base, self.k, self.temperature, self.neighbors = base, k, temperature, neighbors
        self.classes_ = base.classes_

    @staticmethod
    def positions(n: int) -> np.ndarray:
        return np.arange(n).reshape(-1, 1)

    def predict_proba(self, X) -> np.ndarray:
        rows = np.asarray(X)[:, 0]
        self.base.set_params(k=self.k, temperature=self.temperature)
        return self.base.proba_from_neighbors(self.neighbors[0][rows], self.neighbors[1][rows])

    def predict(self, X) -> np.ndarray:
        from .predictions import predict_outputs

        return predict_outputs(self, X).predictions


def _fit_grid_knn(kind, grid, keys, X, y, tr, va, labels, threads, refs, soft, log, bar, n_jobs, lazy, label):
    """kNN candidates scored from one search of the validation rows (with the largest k; each candidate votes with
    its own first k), as DINO's eval_knn.py scores k = 10, 20, 100, 200; the chosen one refitted on all training rows
    (storing them: no training)."""
    heads = [make_head(kind, p, threads) for p in grid]
    groups: dict = {}  # one search per setting that changes the neighbours (all but k and temperature)
    for i, head in enumerate(heads):
        same = {k: v for k, v in head.get_params().items() if k not in ("k", "temperature")}
        groups.setdefault(json.dumps(same, sort_keys=True, default=str), []).append(i)
    scores, t = [0.0] * len(grid), time.perf_counter()
    for members in groups.values():
        widest = max(members, key=lambda i: heads[i].k)
        base = fit_checked(make_head(kind, grid[widest], threads), X[tr], y[tr], None if soft is None else soft[tr])
        neighbors = base.kneighbors(X[va])
        for i in members:
            voted = _Voted(base, heads[i].k, heads[i].temperature, neighbors)
            scores[i] = primary_score(evaluate(voted, voted.positions(len(va)), y[va], labels,
                                               None if refs is None else refs.take(va)))
            log.add(keys[i], {"validation_accuracy": scores[i], "fit_s": (time.perf_counter() - t) / len(members)})
            bar.update(1)
        del base, neighbors, voted  # (a kNN holds its training features: not two sets at once)
    best_i = int(np.argmax(scores))
    bar.set_postfix_str(f"{label}: final fit on all of train")
    trim_heap()
    head = make_head(kind, grid[best_i], threads)
    t = time.perf_counter()
    fit_checked(head, X, y, soft)
    return head, grid[best_i], scores, time.perf_counter() - t


def run_group(job: GroupJob, data, protocol: SweepProtocol, cache, log=None, bar=None) -> GroupOutcome:
    """Fit one group's candidates, choose on the validation rows, evaluate the chosen head once on the eval split."""
    (X, y), (Xe, ye) = data
    labels = all_labels(y, ye)
    kind, grid = job.kind, job.grid
    skip = skip_reason(kind, grid, X, y, len(labels))
    if skip is not None:
        if bar is not None:
            bar.update(len(grid) + 1)
        return GroupOutcome(None, None, None, skip)
    log = log if log is not None else _FitLog(None)  # (no folder: the scores stay in memory)
    bar = bar if bar is not None else _NoBar()
    tr, va = image_disjoint_split(X, job.validation_fraction, job.seed)
    lazy = job.stream and job.view != "sim"
    threads = job.threads or (1 if job.n_jobs != 1 else None)
    keys = [log.key(job.view, kind, p) for p in grid]
    label = f"{kind} on {job.view}"
    bar.set_postfix_str(label)  # a long single fit still says what it is doing
    fit = (_fit_grid_knn if kind == "knn" else _fit_grid_together if _trains_together(kind, grid, X, y)
           else _fit_grid_alone)
    head, params, scores, fit_s = fit(kind, grid, keys, X, y, tr, va, labels, threads, protocol.refs, protocol.soft,
                                      log, bar, job.n_jobs, lazy, label)
    best_i = int(np.argmax(scores))
    trim_heap()  # (the candidates' fits freed gigabytes that glibc would otherwise keep: heads/heap.py)
    metrics = evaluate(head, Xe, ye, labels, protocol.refs_eval, keep_outputs=True)  # once per final model
    outputs = metrics.pop("outputs", None)
    row = {"head": kind, "view": job.view, "params": {k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in params.items()},
           "validation_accuracy": scores[best_i], "accuracy": metrics["accuracy"],
           "macro_f1": metrics["macro_f1"], "balanced_accuracy": metrics["balanced_accuracy"],
           "top5_accuracy": metrics["top5_accuracy"], "fit_s": fit_s, "predict_s": metrics["predict_s"],
           "candidates": len(grid)}
    if "benchmark" in metrics:
        row["benchmark"] = {k: v for k, v in metrics["benchmark"].items()
                            if k not in ("perQuestionType", "accuracyPerSemanticType")}
    trained = TrainedHead.from_cache(head, job.view, cache, job.train_split, kind, params)
    bar.update(1)
    return GroupOutcome(row, metrics, trained, outputs=outputs)


def run_group_job(job: GroupJob) -> GroupOutcome:
    """A group on its own (a Ray worker): the cache opened from the job's path, only the job's view read."""
    with open_cache(job.cache_path) as cache:
        protocol = SweepProtocol.read(cache, job.train_split, job.eval_split, job.min_answer_count,
                                      job.vocabulary_splits, job.test_fraction, job.seed)
        data = protocol.view_data(cache, job.view, job.train_split, job.eval_split, job.stream)
        return run_group(job, data, protocol, cache)


def local_runner(log, bar, protocol: SweepProtocol):
    """Runs groups in this process, one view's data read once for all its heads; yields (job, outcome)."""

    def run(jobs):
        by_path: dict = {}
        for job in jobs:
            by_path.setdefault(job.cache_path, []).append(job)
        for path, path_jobs in by_path.items():
            with open_cache(path) as cache:
                views = list(dict.fromkeys(job.view for job in path_jobs))
                for view in views:
                    first = next(job for job in path_jobs if job.view == view)
                    data = protocol.view_data(cache, view, first.train_split, first.eval_split, first.stream)
                    for job in (j for j in path_jobs if j.view == view):
                        yield job, run_group(job, data, protocol, cache, log, bar)
                    del data  # (before the next view is read: never two views in memory)
                    trim_heap()

    return run


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


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass
