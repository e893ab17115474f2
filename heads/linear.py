"""Multinomial (or per-answer, on soft scores) logistic regression in torch, on the factorised input.

Same objective as scikit-learn's `LogisticRegression(C=C)`: mean loss + ||W||^2 / (2 C n). Two solvers reach it:
full-batch L-BFGS (scikit-learn's, exact, 100+ passes over the data: the fastest on Easy-VQA- or DAQUAR-size
data) and minibatch Adam epochs with early stopping on image-disjoint validation rows (VQAv2-size data, where one
L-BFGS pass costs minutes and C=1 barely regularises 443k rows). Fitting in torch lets the layer run once per
image instead of once per question, and keeps float32 (or bf16 products) where scikit-learn's lbfgs would copy
everything to float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._base import HeadBase, check_minibatch_params, device_of
from .factorized import DEFAULT_BLOCK_IMAGES, PREDICT_BLOCK_IMAGES, FactorizedLinear, Standardizer, image_blocks
from .minibatch import Member, seeded
from .targets import resolve_loss, target_loss

LBFGS_MAX_COST = 2.5e10
"""solver="auto" takes L-BFGS when (images x image width + rows x question width) x classes, the multiply-adds of
one pass, is at most this (about a second on a laptop core pair): Easy-VQA (1e9) and DAQUAR (1e10) stay exact and
instant; VQAv2 train (2.5e12 on itc) trains in minibatch epochs."""


def pass_cost(X, n_classes: int) -> float:
    """Multiply-adds of one forward pass of a linear layer over X (factorised: the image part once per image)."""
    from featcache.cache.views import FactorizedFeatures

    if isinstance(X, FactorizedFeatures):
        n_images = len(np.unique(X.image_row)) if len(X) else 0
        d_img = X.image_part.shape[1]
        return float((n_images * d_img + len(X) * (X.shape[1] - d_img)) * n_classes)
    return float(len(X) * X.shape[1] * n_classes)


class LogisticRegressionHead(HeadBase):
    """Multinomial logistic regression.

    Parameters
    ----------
    C : inverse L2 strength, as in scikit-learn.
    standardize : scale every feature to zero mean / unit variance first (helps both solvers on raw Q-Former
        states; harmless on the normalised projections).
    solver : "auto" (L-BFGS when one pass is cheap, `LBFGS_MAX_COST`, else minibatch), "lbfgs" or "minibatch".
    max_iter, tol : L-BFGS iterations and gradient tolerance.
    lr, max_epochs, batch_size, validation_fraction, patience : minibatch Adam (learning rate cosine-annealed over
        max_epochs) on the same objective, stopped when the validation score (accuracy; with soft targets the mean
        soft score of the predicted answer, the VQA accuracy on VQA's scores) has not improved for `patience`
        epochs; the best epoch's weights are kept. Validation rows are whole images on a factorised view.
        batch_size 2,048: a batch's logits over VQAv2's 3,129 answers (25.6 MB in float32) stay under glibc's
        32 MB mmap threshold, so each step's buffers are reused instead of mapped and zero-filled anew (4,096 rows
        took 16.1 against 11.3 s an epoch on the pooled view, 2 cores).
    precision : minibatch only: "auto" (bf16 products where the CPU or GPU does bf16 natively), "fp32" or "bf16".
    device : minibatch only: "cpu", "cuda" or "auto".
    num_threads : torch CPU threads; None: the cores idle at fit time (heads.threads.free_cores).
    block_images : images per block in which losses and gradients are summed; a streamed view
        (`cache.view(..., stream=True)`) is read one block at a time.
    loss : "auto" (bce with soft targets, else ce: scikit-learn's multinomial objective), "ce", "soft_ce"
        (cross-entropy against the soft scores made a distribution) or "bce" (one logistic regression per
        answer on its soft score, summed), with `fit(X, y, soft_targets=...)`; see heads/targets.py.
    """

    def __init__(self, C: float = 1.0, standardize: bool = True, solver: str = "auto", max_iter: int = 100,
                 tol: float = 1e-4, lr: float = 1e-3, max_epochs: int = 20, batch_size: int = 2048,
                 validation_fraction: float = 0.1, patience: int = 3, precision: str = "auto", device: str = "cpu",
                 num_threads: int | None = None, random_state: int | None = 0,
                 block_images: int = DEFAULT_BLOCK_IMAGES, loss: str = "auto") -> None:
        self.C = C
        self.standardize = standardize
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.precision = precision
        self.device = device
        self.num_threads = num_threads
        self.random_state = random_state
        self.block_images = block_images
        self.loss = loss

    def fit(self, X, y, soft_targets=None) -> "LogisticRegressionHead":
        """Fit on labels y; with `soft_targets` (one {answer: score} per row) on soft scores (see `loss`)."""
        if self.solver not in ("auto", "lbfgs", "minibatch"):
            raise ValueError(f"solver must be auto, lbfgs or minibatch, got {self.solver!r}")
        X, y_idx = self._validate_fit(X, y)
        y = np.asarray(y)
        if self._chosen_solver(X) == "minibatch":
            from .together import fit_together

            return fit_together([self], X, y, soft_targets, validated_labels=y_idx)[0]
        return self._fit_lbfgs(X, y, soft_targets)

    def _chosen_solver(self, X) -> str:
        """The solver `solver` names, "auto" resolved on validated X (classes_ set)."""
        if self.solver != "auto":
            return self.solver
        return "lbfgs" if pass_cost(X, len(self.classes_)) <= LBFGS_MAX_COST else "minibatch"

    def _check_C(self) -> None:
        if not (isinstance(self.C, (int, float)) and np.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C must be a positive number, got {self.C!r}")

    # -- minibatch (heads/together.py) ---------------------------------------------------------------
    def _check_params(self) -> None:
        self._check_C()
        check_minibatch_params(self)

    def _resolved_loss(self, soft) -> str:
        return resolve_loss(self.loss, soft)

    def _skips_single(self) -> bool:
        return False

    def _device(self) -> torch.device:
        return device_of(self.device)

    def _member(self, widths: tuple[int, int], n_train: int, seed: int, dev: torch.device) -> Member:
        def build():
            linear = FactorizedLinear(*widths, len(self.classes_))
            for w in linear.weights():
                nn.init.zeros_(w)
            return linear.to(dev)

        net, state = seeded(seed, build)
        return Member(net, self.loss_function_, self.lr, l2=1.0 / (2.0 * self.C * max(1, n_train)),
                      scheduler="cosine_run", eta_min=0.0, max_epochs=self.max_epochs, patience=self.patience,
                      weights=net.weights, rng_state=state, name="lr")

    def _adopt(self, member: Member, validated: bool) -> None:
        self.solver_ = "minibatch"
        self.linear_ = member.net
        self.history_ = member.history
        self.n_iter_ = len(self.history_)
        self.loss_ = float(self.history_[-1]["train_loss"]) if self.history_ else float("nan")
        self.best_validation_score_ = member.best_score if validated else None
        # predict in float64: a row's answer must not depend on the batch it comes in
        self.linear_.requires_grad_(False).to("cpu", torch.float64)

    # -- full batch -----------------------------------------------------------------------------------
    def _fit_lbfgs(self, X, y, soft_targets=None) -> "LogisticRegressionHead":
        X, y_idx = self._validate_fit(X, y)
        soft = self._soft(soft_targets, y_idx)
        self.loss_function_ = resolve_loss(self.loss, soft)
        self._check_C()
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
                    sparse = None if soft is None else soft.coo(idx)
                    loss = target_loss(self.linear_(block), self.loss_function_, target[idx], sparse,
                                       reduction="sum") / parts.n
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
            self.solver_, self.history_, self.best_validation_score_ = "lbfgs", [], None
            # predict in float64: a row's answer must not depend on the batch it comes in
            # (float32 GEMMs round differently for different batch sizes)
            self.linear_.zero_grad(set_to_none=True)
            self.linear_.requires_grad_(False).double()
        return self

    def _fitted_state(self) -> tuple[dict, dict]:
        from featcache.safe_folder import flatten

        attrs, tensors = super()._fitted_state()
        attrs.update(loss=self.loss_, n_iter=self.n_iter_, loss_function=self.loss_function_, solver=self.solver_,
                     history=self.history_, best_validation_score=self.best_validation_score_)
        tensors.update(self._scaler_tensors(), **flatten("linear", self.linear_.state_dict()))
        return attrs, tensors

    def _restore(self, attrs: dict, tensors: dict) -> None:
        from featcache.safe_folder import unflatten

        super()._restore(attrs, tensors)
        self.loss_, self.n_iter_ = attrs["loss"], attrs["n_iter"]
        self.loss_function_ = attrs.get("loss_function", "ce")  # heads saved before soft targets used ce
        self.solver_ = attrs.get("solver", "lbfgs")  # heads saved before the minibatch solver used L-BFGS
        self.history_ = attrs.get("history", [])
        self.best_validation_score_ = attrs.get("best_validation_score")
        self.scaler_ = self._scaler_from(tensors)
        from featcache.safe_folder import checked_module

        self.linear_ = checked_module(lambda: FactorizedLinear(*self._widths(), len(self.classes_)).double(),
                                      unflatten("linear", tensors), "head")
        self.linear_.requires_grad_(False)

    def _logits(self, X, fn=None) -> torch.Tensor:
        """fn(logits) (default: the logits), computed block by block into one float64 (n, classes) array: a
        whole-array softmax and its copies would need three of them (VQAv2 val: 5 GB each)."""
        X = self._validate_predict(X)
        parts = self._parts(X).to(torch.float64)
        if self.scaler_ is not None:
            parts = self.scaler_.transform(parts)
        out = torch.empty((parts.n, len(self.classes_)), dtype=torch.float64)
        with torch.no_grad():
            for idx, block in image_blocks(parts, min(getattr(self, "block_images", DEFAULT_BLOCK_IMAGES),
                                                      PREDICT_BLOCK_IMAGES)):
                logits = self.linear_(block)
                out[idx] = logits if fn is None else fn(logits)
        return out

    def decision_function(self, X) -> np.ndarray:
        """Class scores (n, k); for two classes the usual single score (n,), positive for classes_[1]."""
        logits = self._logits(X)
        return (logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits).numpy()

    def predict_proba(self, X) -> np.ndarray:
        return self._finite(self._logits(X, lambda z: torch.softmax(z, dim=1)).numpy())
