"""Gradient-boosted trees (LightGBM) with defaults engineered for 1k-25k-dim BLIP-2 features.

Stock settings (255 bins, all features, 100 rounds x 13 classes) took over 10 minutes on Easy-VQA's
pooled view on 2 cores. Trees gain little from 1,024 correlated dense dimensions, so by default we
boost on a PCA reduction (64 components, a fraction of a second to fit), with 63 bins, half the
features per tree and early stopping on a validation fraction.
"""

from __future__ import annotations

import os

import numpy as np

from featcache.cache.views import FactorizedFeatures

from ._base import HeadBase
from .threads import free_cores

LGBM_MAX_WORK = 2e10
"""The most row-trees (rows x classes x rounds) a sweep gives LightGBM: Easy-VQA's 38k x 13 x 300 is 1.5e8 and
DAQUAR's about 2e9; VQAv2 train's 443k x 3,129 x 300 is 4e11, days on 2 cores."""


def boosting_work(n_rows: int, n_classes: int, n_estimators: int) -> float:
    """Row-trees of a multiclass fit: one tree per class per round (one per round for two classes), each over
    every row."""
    return float(n_rows) * (n_classes if n_classes > 2 else 1) * n_estimators


ROWS_PER_READ = 4096
"""Rows per batch that LightGBM pulls through `lightgbm.Sequence` (and per PCA projection)."""


def _rows(X, index: np.ndarray) -> np.ndarray:
    """Rows of X (a matrix or a factorised, possibly streamed, view) as float32."""
    if isinstance(X, FactorizedFeatures):
        return X.rows(index)
    return np.asarray(X[index], dtype=np.float32)


class LightGBMHead(HeadBase):
    """Multiclass LightGBM.

    Parameters
    ----------
    n_components : PCA components to boost on (None: the raw features).
    n_estimators, learning_rate, num_leaves, max_bin, feature_fraction, bagging_fraction,
    min_child_samples, lambda_l2 : LightGBM parameters (feature_fraction = colsample_bytree).
    early_stopping_rounds, validation_fraction : stop when the held-out log loss stops improving.
    num_threads : LightGBM threads; None (default): the cores idle at fit time (`free_cores`), so a
        machine busy with other work degrades gracefully; 0: LightGBM's default, all cores.
    pca_max_rows : the PCA is fitted on at most this many rows (a seeded sample), so a streamed view
        (`cache.view(..., stream=True)`) needs memory for them and not for all rows.

    Rows reach LightGBM through `lightgbm.Sequence` in batches of 4,096, projected in float64, for an
    in-memory matrix and a streamed view alike: both give the same model.
    """

    def __init__(self, n_components: int | None = 64, n_estimators: int = 300, learning_rate: float = 0.1,
                 num_leaves: int = 15, max_bin: int = 63, feature_fraction: float = 0.5,
                 bagging_fraction: float = 0.8, min_child_samples: int = 20, lambda_l2: float = 1.0,
                 early_stopping_rounds: int = 15, validation_fraction: float = 0.1, num_threads: int | None = None,
                 random_state: int | None = 0, pca_max_rows: int = 20000) -> None:
        self.n_components = n_components
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_bin = max_bin
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.min_child_samples = min_child_samples
        self.lambda_l2 = lambda_l2
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.num_threads = num_threads
        self.random_state = random_state
        self.pca_max_rows = pca_max_rows

    def _reduce(self, X: np.ndarray) -> np.ndarray:
        """PCA projection in float64: a row's value does not depend on the batch it comes in."""
        if self.pca_ is None:
            return np.asarray(X, dtype=np.float32)
        return ((np.asarray(X, dtype=np.float64) - self.pca_.mean_) @ self.pca_.components_.T).astype(np.float32)

    def _reduced(self, X, index: np.ndarray) -> np.ndarray:
        return self._reduce(_rows(X, index))

    def fit(self, X, y) -> "LightGBMHead":
        import lightgbm as lgb
        from sklearn.decomposition import PCA

        X, y_idx = self._validate_fit(X, y)
        if not isinstance(X, FactorizedFeatures):
            X = np.asarray(X, dtype=np.float32)
        n, d = X.shape
        seed = 0 if self.random_state is None else self.random_state
        rng = np.random.default_rng(seed)
        self.pca_ = None
        if self.n_components and self.n_components < min(n, d):
            fit_rows = np.arange(n) if n <= self.pca_max_rows else np.sort(rng.choice(n, self.pca_max_rows, replace=False))
            self.pca_ = PCA(self.n_components, svd_solver="randomized", random_state=seed).fit(_rows(X, fit_rows))
        n_val = int(round(self.validation_fraction * n)) if self.validation_fraction else 0
        perm = rng.permutation(n)
        val, train = (perm[:n_val], perm[n_val:]) if n_val >= 1 and n - n_val >= 2 else (perm[:0], perm)
        val, train = np.sort(val), np.sort(train)  # sorted: a streamed view is read in cache order
        k = len(self.classes_)
        params = {
            "objective": "multiclass" if k > 2 else "binary", "verbosity": -1, "seed": seed,
            "learning_rate": self.learning_rate, "num_leaves": self.num_leaves, "max_bin": self.max_bin,
            "feature_fraction": self.feature_fraction, "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1 else 0, "min_data_in_leaf": self.min_child_samples,
            "lambda_l2": self.lambda_l2, "deterministic": True,
            "num_threads": (free_cores() if self.num_threads is None
                            else min(int(self.num_threads), os.cpu_count() or 1)),  # (capped: never faster beyond)
            "force_col_wise": True, "min_data_in_bin": 1,
        }
        if k > 2:
            params["num_class"] = k
        train_set = lgb.Dataset([self._sequence(X, train)], y_idx[train],  # (verbosity: its "no meaningful
                                params={"max_bin": self.max_bin, "verbosity": -1},  # features" warning was noise)
                                free_raw_data=True)
        callbacks, valid_sets = [], []
        if len(val):
            valid_sets = [lgb.Dataset([self._sequence(X, val)], y_idx[val], reference=train_set)]
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        self.booster_ = lgb.train(params, train_set, num_boost_round=self.n_estimators, valid_sets=valid_sets,
                                  callbacks=callbacks)
        self.best_iteration_ = self.booster_.best_iteration or self.booster_.current_iteration()
        return self

    def _sequence(self, X, index: np.ndarray):
        """Rows `index` of X, reduced, as a `lightgbm.Sequence` LightGBM reads batch by batch."""
        import lightgbm as lgb

        head = self

        class Rows(lgb.Sequence):
            batch_size = ROWS_PER_READ
            loaded = (0, np.zeros((0, 0)))  # LightGBM samples rows one by one, in increasing order

            def __len__(self) -> int:
                return len(index)

            def __getitem__(self, i):  # a slice: a batch of rows; an int: one row (LightGBM wants float64)
                if isinstance(i, slice):
                    return head._reduced(X, index[i]).astype(np.float64)
                start, rows = self.loaded
                if not start <= i < start + len(rows):
                    self.loaded = start, rows = i, self[i:i + self.batch_size]
                return rows[i - start]

        return Rows()

    def _fitted_state(self) -> tuple[dict, dict]:
        import torch

        attrs, tensors = super()._fitted_state()
        attrs.update(best_iteration=int(self.best_iteration_))
        booster = np.frombuffer(self.booster_.model_to_string().encode("utf-8"), dtype=np.uint8)
        tensors["booster"] = torch.from_numpy(booster.copy())  # LightGBM's own text model format
        if self.pca_ is not None:
            tensors.update({f"pca.{k}": torch.from_numpy(np.ascontiguousarray(getattr(self.pca_, k + "_")))
                            for k in ("mean", "components", "explained_variance")})
        return attrs, tensors

    def _restore(self, attrs: dict, tensors: dict) -> None:
        import lightgbm as lgb
        from sklearn.decomposition import PCA

        super()._restore(attrs, tensors)
        self.best_iteration_ = attrs["best_iteration"]
        self.booster_ = lgb.Booster(model_str=bytes(tensors["booster"].numpy()).decode("utf-8"))
        self.pca_ = None
        if "pca.components" in tensors:  # the fitted attributes PCA.transform reads, nothing else
            pca = PCA(self.n_components)
            pca.mean_, pca.components_, pca.explained_variance_ = (
                tensors[f"pca.{k}"].numpy() for k in ("mean", "components", "explained_variance"))
            pca.n_components_, pca.n_features_in_ = pca.components_.shape
            self.pca_ = pca

    def predict_proba(self, X) -> np.ndarray:
        X = self._validate_predict(X)
        blocks = [np.arange(s, min(s + ROWS_PER_READ, len(X))) for s in range(0, len(X), ROWS_PER_READ)]
        p = np.concatenate([np.asarray(self.booster_.predict(self._reduced(X, b), num_iteration=self.best_iteration_),
                                       dtype=np.float64) for b in blocks]) if blocks else np.zeros(0)
        if p.ndim == 1:
            p = np.column_stack([1 - p, p])
        return p
