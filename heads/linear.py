"""Multinomial logistic regression, full-batch L-BFGS in torch, on the factorised input.

Same objective as scikit-learn's `LogisticRegression(C=C)`: mean cross-entropy + ||W||^2 / (2 C n).
Fitting in torch lets the first (only) layer run once per image instead of once per question, and
keeps float32 where scikit-learn's lbfgs would copy everything to float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._base import HeadBase
from .factorized import DEFAULT_BLOCK_IMAGES, FactorizedLinear, Standardizer, image_blocks
from .targets import resolve_loss, target_loss


class LogisticRegressionHead(HeadBase):
    """Multinomial logistic regression.

    Parameters
    ----------
    C : inverse L2 strength, as in scikit-learn.
    standardize : scale every feature to zero mean / unit variance first (helps L-BFGS converge on
        raw Q-Former states; harmless on the normalised projections).
    max_iter, tol : L-BFGS iterations and gradient tolerance.
    num_threads : torch CPU threads; None: the cores idle at fit time (heads.threads.free_cores).
    block_images : images per block in which the loss and its gradient are summed; a streamed view
        (`cache.view(..., stream=True)`) is read one block at a time, at every L-BFGS evaluation.
    loss : "auto" (bce with soft targets, else ce: scikit-learn's multinomial objective), "ce", "soft_ce"
        (cross-entropy against the soft scores made a distribution) or "bce" (one logistic regression per
        answer on its soft score, summed), with `fit(X, y, soft_targets=...)`; see heads/targets.py.
    """

    def __init__(self, C: float = 1.0, standardize: bool = True, max_iter: int = 100, tol: float = 1e-4,
                 num_threads: int | None = None, random_state: int | None = 0,
                 block_images: int = DEFAULT_BLOCK_IMAGES, loss: str = "auto") -> None:
        self.C = C
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.num_threads = num_threads
        self.random_state = random_state
        self.block_images = block_images
        self.loss = loss

    def fit(self, X, y, soft_targets=None) -> "LogisticRegressionHead":
        """Fit on labels y; with `soft_targets` (one {answer: score} per row) on soft scores (see `loss`)."""
        X, y_idx = self._validate_fit(X, y)
        soft = self._soft(soft_targets, y_idx)
        self.loss_function_ = resolve_loss(self.loss, soft)
        if self.C <= 0:
            raise ValueError(f"C must be positive, got {self.C}")
        from .threads import torch_threads

        with torch_threads(self.num_threads):  # None: the idle cores (heads/threads.py)
            parts = self._parts(X)
            self.scaler_ = Standardizer().fit(parts, self.block_images) if self.standardize else None
            if self.scaler_ is not None:  # a private copy of the images is scaled in place (no second copy)
                parts = self.scaler_.transform(parts, inplace=self._owns_image(X))
            torch.manual_seed(0 if self.random_state is None else self.random_state)
            self.linear_ = FactorizedLinear(*parts.widths(), len(self.classes_))
            for w in self.linear_.weights():
                nn.init.zeros_(w)
            target = torch.from_numpy(np.asarray(y_idx, dtype=np.int64))
            l2 = 1.0 / (2.0 * self.C * parts.n)
            opt = torch.optim.LBFGS(self.linear_.parameters(), lr=1, max_iter=self.max_iter,
                                    tolerance_grad=self.tol, tolerance_change=1e-9, history_size=10,
                                    line_search_fn="strong_wolfe")

            def objective(backward: bool) -> torch.Tensor:
                """Mean loss + L2, summed block by block (gradients accumulate per block)."""
                total = l2 * sum((w ** 2).sum() for w in self.linear_.weights())
                if backward:
                    total.backward()
                total = total.detach()
                for idx, block in image_blocks(parts, self.block_images):
                    dense = None if soft is None else soft.dense(idx)
                    loss = target_loss(self.linear_(block), self.loss_function_, target[idx], dense, reduction="sum") / parts.n
                    if backward:
                        loss.backward()
                    total = total + loss.detach()
                return total

            def closure():
                opt.zero_grad()
                return objective(backward=True)

            opt.step(closure)
            with torch.no_grad():
                self.loss_ = float(objective(backward=False))  # at the solution (step() returns the first value)
            self.n_iter_ = int(opt.state[opt._params[0]].get("n_iter", 0))
            # predict in float64: a row's answer must not depend on the batch it comes in
            # (float32 GEMMs round differently for different batch sizes)
            self.linear_.requires_grad_(False).double()
        return self

    def _fitted_state(self) -> tuple[dict, dict]:
        from featcache.safe_folder import flatten

        attrs, tensors = super()._fitted_state()
        attrs.update(loss=self.loss_, n_iter=self.n_iter_, loss_function=self.loss_function_)
        tensors.update(self._scaler_tensors(), **flatten("linear", self.linear_.state_dict()))
        return attrs, tensors

    def _restore(self, attrs: dict, tensors: dict) -> None:
        from featcache.safe_folder import unflatten

        super()._restore(attrs, tensors)
        self.loss_, self.n_iter_ = attrs["loss"], attrs["n_iter"]
        self.loss_function_ = attrs.get("loss_function", "ce")  # heads saved before soft targets used ce
        self.scaler_ = self._scaler_from(tensors)
        from featcache.safe_folder import checked_module

        self.linear_ = checked_module(lambda: FactorizedLinear(*self._widths(), len(self.classes_)).double(),
                                      unflatten("linear", tensors), "head")
        self.linear_.requires_grad_(False)

    def _logits(self, X) -> torch.Tensor:
        X = self._validate_predict(X)
        parts = self._parts(X).to(torch.float64)
        if self.scaler_ is not None:
            parts = self.scaler_.transform(parts)
        out = torch.empty((parts.n, len(self.classes_)), dtype=torch.float64)
        with torch.no_grad():
            for idx, block in image_blocks(parts, getattr(self, "block_images", DEFAULT_BLOCK_IMAGES)):
                out[idx] = self.linear_(block)
        return out

    def decision_function(self, X) -> np.ndarray:
        """Class scores (n, k); for two classes the usual single score (n,), positive for classes_[1]."""
        logits = self._logits(X)
        return (logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits).numpy()

    def predict_proba(self, X) -> np.ndarray:
        return self._finite(torch.softmax(self._logits(X), dim=1).numpy().astype(np.float64))
