"""Fit heads x views x hyperparameters over a cache; choose on validation, touch the test split once.

The validation fraction is taken from the training split by image, so a validation question never
shares its image with a training question.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from featcache import open_cache
from featcache.errors import FeatcacheError

from .evaluate import all_labels, evaluate
from .gbm import LightGBMHead
from .linear import LogisticRegressionHead
from .mlp import MLPHead
from .trained import TrainedHead


def head_types() -> dict[str, type]:
    return {"lr": LogisticRegressionHead, "mlp": MLPHead, "lgbm": LightGBMHead}


def builtin_grid(name: str) -> dict[str, list[dict]]:
    """Hyperparameter candidates per head type: `small` (quick) or `default`."""
    if name == "small":
        return {"lr": [{"C": 0.1}, {"C": 1.0}], "mlp": [{"hidden_sizes": (256,)}], "lgbm": [{}]}
    if name == "default":
        return {"lr": [{"C": c} for c in (0.01, 0.1, 1.0, 10.0)],
                "mlp": [{"hidden_sizes": h, "dropout": d} for h, d in product([(256,), (512,), (512, 256)], [0.2, 0.4])]
                + [{"preset": "reference"}],
                "lgbm": [{}, {"num_leaves": 31, "n_components": 128}]}
    raise FeatcacheError(f"unknown grid {name!r}: use small, default, or a JSON file {{head: [params, ...]}}")


def load_grid(grid: str) -> dict[str, list[dict]]:
    if grid in ("small", "default"):
        return builtin_grid(grid)
    path = Path(grid)
    if not path.is_file():
        raise FeatcacheError(f"grid {grid!r} is neither small/default nor a JSON file")
    data = json.loads(path.read_text())
    return {k: [{p: tuple(v) if isinstance(v, list) else v for p, v in params.items()} for params in vals]
            for k, vals in data.items()}


def make_head(kind: str, params: dict, num_threads: int | None = None):
    types = head_types()
    if kind not in types:
        raise FeatcacheError(f"unknown head {kind!r}: use {', '.join(types)}")
    params = dict(params)
    if params.pop("preset", None) == "reference":
        head = MLPHead.reference(**params)
    else:
        head = types[kind](**params)
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


def _fit_candidate(kind, params, X, y, tr, va, labels, threads):
    head = make_head(kind, params, threads)
    t = time.perf_counter()
    head.fit(X[tr], y[tr])
    fit_s = time.perf_counter() - t
    return evaluate(head, X[va], y[va], labels)["accuracy"], fit_s


def run_sweep(cache_path: str | Path, train_split: str = "train", eval_split: str = "test",
              heads: list[str] = ("lr", "mlp", "lgbm"), views: list[str] = ("pooled", "itc"),
              grid: str = "small", validation_fraction: float = 0.1, n_jobs: int = 1, seed: int = 0,
              progress: bool = True) -> SweepResult:
    """Every head x view: choose params on validation, refit on the whole training split, evaluate once."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    candidates = load_grid(grid)
    cache = open_cache(cache_path)
    threads = 1 if n_jobs != 1 else None
    result = SweepResult()
    data = {v: (cache.view(v, train_split), cache.view(v, eval_split)) for v in views}
    total = sum(len(candidates.get(h, [{}])) for h in heads) * len(views)
    bar = tqdm(total=total + len(heads) * len(views), desc="sweep", unit="fit", disable=not progress)
    for view in views:
        (X, y), (Xe, ye) = data[view]
        labels = all_labels(y, ye)
        tr, va = image_disjoint_split(X, validation_fraction, seed)
        for kind in heads:
            grid_k = candidates.get(kind, [{}])
            jobs = (delayed(_fit_candidate)(kind, p, X, y, tr, va, labels, threads) for p in grid_k)
            scores = []
            for out in Parallel(n_jobs=n_jobs, return_as="generator")(jobs):
                scores.append(out)
                bar.update(1)
            best_i = int(np.argmax([s for s, _ in scores]))
            params = grid_k[best_i]
            head = make_head(kind, params)
            t = time.perf_counter()
            head.fit(X, y)
            fit_s = time.perf_counter() - t
            metrics = evaluate(head, Xe, ye, labels)
            bar.update(1)
            row = {"head": kind, "view": view, "params": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in params.items()},
                   "validation_accuracy": scores[best_i][0], "accuracy": metrics["accuracy"],
                   "macro_f1": metrics["macro_f1"], "balanced_accuracy": metrics["balanced_accuracy"],
                   "fit_s": fit_s, "predict_s": metrics["predict_s"], "candidates": len(grid_k)}
            result.rows.append(row)
            if result.best_metrics is None or metrics["accuracy"] > result.best_metrics["accuracy"]:
                result.best = TrainedHead.from_cache(head, view, cache, train_split, kind, params)
                result.best_metrics = metrics
    bar.close()
    cache.close()
    result.rows.sort(key=lambda r: -r["accuracy"])
    return result


def fit_head(cache_path: str | Path, kind: str, view: str, params: dict | None = None,
             train_split: str | None = "train") -> TrainedHead:
    """One head on one view of a cache's training split."""
    with open_cache(cache_path) as cache:
        X, y = cache.view(view, train_split)
        head = make_head(kind, params or {}).fit(X, y)
        return TrainedHead.from_cache(head, view, cache, train_split, kind, params)


def evaluate_head(trained: TrainedHead, cache_path: str | Path, split: str | None = "test") -> dict:
    """Metrics of a saved head on a cache split; refuses a cache of another model or preprocessing."""
    with open_cache(cache_path, expect=trained.provenance) as cache:
        X, y = cache.view(trained.view, split)
    return evaluate(trained.head, X, y, all_labels(y, trained.head.classes_))
