"""What the torch network heads (MLPHead, AttentionPoolHead) share: training through heads/together.py, a module
`net_` kept in float64 for prediction, block-wise prediction over the factorised input, and safe persistence of
the module, its input scaling and its training record."""

from __future__ import annotations

import numpy as np
import torch

from ._base import HeadBase, device_of
from .factorized import DEFAULT_BLOCK_IMAGES, PREDICT_BLOCK_IMAGES, Parts, image_blocks, token_normalize
from .minibatch import Member
from .targets import resolve_loss


class NetHead(HeadBase):
    """A head whose fitted state is a torch module `net_` (subclasses give `_member` and `_build_net`)."""

    # -- what heads/together.py asks of a minibatch head ---------------------------------------------
    def _resolved_loss(self, soft) -> str:
        return resolve_loss(self.loss, soft)

    def _skips_single(self) -> bool:
        return False

    def _device(self) -> torch.device:
        return device_of(self.device)

    def _adopt(self, member: Member, validated: bool) -> None:
        self.net_ = member.net
        self.history_ = member.history
        self.n_epochs_ = len(self.history_)
        self.best_validation_score_ = member.best_score if validated else None
        # predict in float64: a row's answer must not depend on the batch it comes in
        self.net_.eval().requires_grad_(False).to("cpu", torch.float64)

    # -- prediction ----------------------------------------------------------------------------------
    def _prepare(self, parts: Parts) -> Parts:
        parts = parts.to(next(self.net_.parameters()).dtype)
        if self.normalize == "token":
            parts = token_normalize(parts)
        if self.scaler_ is not None:
            parts = self.scaler_.transform(parts)
        return parts

    @torch.no_grad()
    def _apply(self, X, fn, width: int) -> np.ndarray:
        """fn(block of prepared parts) for every row of X, as one float64 (n, width) array."""
        parts = self._prepare(self._parts(X))
        out = torch.empty((parts.n, width), dtype=torch.float64)
        for idx, block in image_blocks(parts, min(getattr(self, "block_images", DEFAULT_BLOCK_IMAGES),
                                                  PREDICT_BLOCK_IMAGES)):
            out[idx] = fn(block).to(torch.float64)
        return out.numpy()

    def predict_proba(self, X) -> np.ndarray:
        X = self._validate_predict(X)
        return self._finite(self._apply(X, lambda p: torch.softmax(self.net_(p), dim=1), len(self.classes_)))

    # -- safe persistence ----------------------------------------------------------------------------
    def _fitted_state(self) -> tuple[dict, dict]:
        from featcache.safe_folder import flatten

        attrs, tensors = super()._fitted_state()
        attrs.update(n_epochs=self.n_epochs_, best_validation_score=self.best_validation_score_,
                     history=self.history_, loss_function=self.loss_function_)
        tensors.update(self._scaler_tensors(), **flatten("net", self.net_.state_dict()))
        return attrs, tensors

    def _restore(self, attrs: dict, tensors: dict) -> None:
        from featcache.safe_folder import checked_module, unflatten

        super()._restore(attrs, tensors)
        self.n_epochs_, self.best_validation_score_ = attrs["n_epochs"], attrs["best_validation_score"]
        self.history_ = attrs["history"]
        self.loss_function_ = attrs.get("loss_function", "ce")  # heads saved before soft targets used ce
        self.scaler_ = self._scaler_from(tensors)
        self.net_ = checked_module(lambda: self._build_net().to(torch.float64), unflatten("net", tensors), "head")
        self.net_.eval().requires_grad_(False)

    def _build_net(self) -> torch.nn.Module:
        """The module of the fitted layout (before its weights are loaded)."""
        raise NotImplementedError
