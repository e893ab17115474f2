"""What every head shares: scikit-learn input validation that lets factorised views through."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featcache.cache.views import FactorizedFeatures


class HeadBase(ClassifierMixin, BaseEstimator):
    """fit/predict/predict_proba/score on arrays or factorised cache views; labels may be strings."""

    def _validate_fit(self, X, y):
        if isinstance(X, FactorizedFeatures):
            y = np.asarray(y)
            if y.ndim != 1 or len(y) != len(X):
                raise ValueError(f"y must be 1-d with one label per row of X ({len(X)}), got shape {y.shape}")
            check_finite_parts(X)
            self.n_features_in_ = X.shape[1]
        else:
            X, y = validate_data(self, X, y, dtype=[np.float32, np.float64, np.float16])
        check_classification_targets(y)
        is_factorised = isinstance(X, FactorizedFeatures)
        self.input_layout_ = (X.image_part.shape[1] if is_factorised else 0, X.image_tokens if is_factorised else 1)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"need at least 2 classes to fit a classifier, got 1 class ({self.classes_[0]!r})")
        return X, encoder.transform(y)

    def _soft(self, soft_targets, y_idx):
        """`soft_targets` (one {answer: score} mapping per row) over classes_, or None."""
        if soft_targets is None:
            return None
        from .targets import SoftTargets

        if len(soft_targets) != len(y_idx):
            raise ValueError(f"soft_targets has {len(soft_targets)} rows, y has {len(y_idx)}")
        return SoftTargets.build(soft_targets, self.classes_, y_idx)

    def _validate_predict(self, X):
        check_is_fitted(self)
        if isinstance(X, FactorizedFeatures):
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input")
            return X
        return validate_data(self, X, reset=False, dtype=[np.float32, np.float64, np.float16])

    @staticmethod
    def _finite(proba: np.ndarray) -> np.ndarray:
        """Probabilities, refusing NaN or inf: a factorised view (or a saved head's weights) that holds them would
        otherwise print "blue (nan)" and be scored as if nothing were wrong."""
        bad = ~np.isfinite(proba).all(axis=1) if proba.ndim == 2 else ~np.isfinite(proba)
        if bad.any():
            rows = np.flatnonzero(bad)
            from featcache.errors import NonFiniteError

            raise NonFiniteError(f"{len(rows)} rows give NaN or inf probabilities (e.g. row {rows[0]}): their features, "
                             f"or the head's weights, hold NaN or inf. Run `featcache verify` on the cache, or "
                             f"refit the head")
        return proba

    @staticmethod
    def _owns_image(X) -> bool:
        """Whether `_parts(X)` makes a private float32 copy of the image part (X in memory and not float32
        already), which fitting may then normalise in place instead of copying it again."""
        if isinstance(X, FactorizedFeatures):  # (a float16 image part is converted block by block, as loaded)
            return False
        return isinstance(X, np.ndarray) and X.dtype != np.float32

    @staticmethod
    def _owns_question(X) -> bool:
        """Whether `_parts(X)` makes a private float32 copy of the question part."""
        if isinstance(X, FactorizedFeatures):
            return X.question_part is not None and np.asarray(X.question_part).dtype != np.float32
        return isinstance(X, np.ndarray) and X.dtype != np.float32

    def _parts(self, X):
        """X in the layout the head was fitted on (see Parts.from_input)."""
        from .factorized import Parts

        return Parts.from_input(X, *self.input_layout_)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # -- safe persistence (see heads/trained.py): plain attributes + tensors, no pickle ------------
    def _fitted_state(self) -> tuple[dict, dict]:
        """(JSON-ready fitted attributes, named tensors) from which `_restore` rebuilds this head."""
        check_is_fitted(self)
        classes = self.classes_.tolist()
        return {"classes": classes, "n_features_in": int(self.n_features_in_),
                "input_layout": list(self.input_layout_)}, {}

    def _restore(self, attrs: dict, tensors: dict) -> None:
        classes = attrs["classes"]
        if not isinstance(classes, list) or not classes or not (all(isinstance(c, str) for c in classes) or all(
                isinstance(c, int) and not isinstance(c, bool) for c in classes)):
            raise ValueError("classes must be a non-empty list of strings (or of integers)")
        if len(set(classes)) != len(classes):
            raise ValueError("classes are repeated: each class must be listed once")
        self.classes_ = np.array(classes, dtype=object if all(isinstance(c, str) for c in classes) else None)
        self.n_features_in_ = int(attrs["n_features_in"])
        self.input_layout_ = tuple(attrs["input_layout"])

    def _scaler_tensors(self) -> dict:
        from featcache.safe_folder import flatten

        scaler = getattr(self, "scaler_", None)
        return {} if scaler is None else flatten("scaler", scaler.state())

    @staticmethod
    def _scaler_from(tensors: dict):
        from featcache.safe_folder import unflatten

        from .factorized import Standardizer

        state = unflatten("scaler", tensors)
        return Standardizer.from_state(state) if state else None

    def _widths(self) -> tuple[int, int]:
        """(image, question) input widths of the fitted first layer."""
        image = self.input_layout_[0]
        return image, self.n_features_in_ - image

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def device_of(device: str):
    """torch device for a head's `device` parameter ("auto": CUDA where torch sees it)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_minibatch_params(head) -> None:
    """The values a minibatch fit cannot run with, named (heads/together.py calls this before any work)."""
    from .precision import PRECISIONS

    checks = [("batch_size", lambda v: isinstance(v, (int, np.integer)) and v >= 1, "a whole number >= 1"),
              ("max_epochs", lambda v: isinstance(v, (int, np.integer)) and v >= 1, "a whole number >= 1"),
              ("patience", lambda v: isinstance(v, (int, np.integer)) and v >= 1, "a whole number >= 1"),
              ("block_images", lambda v: isinstance(v, (int, np.integer)) and v >= 1, "a whole number >= 1"),
              ("lr", lambda v: isinstance(v, (int, float)) and np.isfinite(v) and v > 0, "a positive number"),
              ("validation_fraction", lambda v: v is None or (isinstance(v, (int, float)) and 0 <= v < 1),
               "in [0, 1)"),
              ("precision", lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}")]
    for name, ok, what in checks:
        value = getattr(head, name)
        if not ok(value):
            raise ValueError(f"{name} must be {what}, got {value!r}")


TRAINING_BYTES_PER_PARAMETER = 20
"""fp32 weights, gradients, AdamW's two moments, and the best epoch's copy."""


def check_memory(build, what: str) -> None:
    """Refuse a network whose training state would not fit in the memory free now (a `hidden_sizes` of 1e8 typed
    in a grid or a --param would otherwise try to allocate hundreds of GB): `build()` is run on the meta device,
    which allocates nothing."""
    import torch

    with torch.device("meta"):
        n = sum(p.numel() for p in build().parameters())
    need = n * TRAINING_BYTES_PER_PARAMETER
    free = available_memory()
    if free is not None and need > free:
        raise ValueError(f"{what} makes a network of {n:,} parameters: training it needs about {need / 2**30:.1f} GiB, "
                         f"more than the {free / 2**30:.1f} GiB free; choose smaller hidden sizes")


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where unknown."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_finite_parts(X) -> None:
    """Refuse a factorised view holding NaN or inf (an fp16 overflow at extraction), naming a row: torch would
    otherwise fail deep inside a fit. A streamed image part is checked by `featcache verify` instead."""
    from featcache.cache.views import LazyImageRows
    from featcache.errors import NonFiniteError

    for name, part in (("image", X.image_part), ("question", X.question_part)):
        if part is None or isinstance(part, LazyImageRows):
            continue
        part = np.asarray(part)
        for start in range(0, len(part), 8192):
            bad = ~np.isfinite(part[start:start + 8192].reshape(min(8192, len(part) - start), -1)).all(axis=1)
            if bad.any():
                first = start + int(np.flatnonzero(bad)[0])
                raise NonFiniteError(f"the {name} features hold NaN or inf (e.g. {name} row {first} of this view): "
                                     f"run `featcache verify CACHE` to list them; extract those images again (with "
                                     f"--dtype float32 where fp16 overflowed) or leave their questions out")
