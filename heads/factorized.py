"""The factorised first layer: image features projected once per image, gathered per question.

For a linear map W = [W_img, W_q], X W^T = (image_part W_img^T)[image_row] + question_part W_q^T.
The gather's backward is a scatter-add, so the gradient for W_img is the sum over each image's
questions, as it should be, at 1/(questions per image) of the cost.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from featcache.views import FactorizedFeatures


class Parts:
    """A batch of inputs as (image part, image_row, question part); a plain matrix is all question part."""

    def __init__(self, image: torch.Tensor | None, row: torch.Tensor | None, question: torch.Tensor | None,
                 image_tokens: int = 1) -> None:
        self.image, self.row, self.question, self.image_tokens = image, row, question, image_tokens

    @property
    def n(self) -> int:
        return len(self.row) if self.row is not None else len(self.question)

    @classmethod
    def from_input(cls, X, image_width: int | None = None, image_tokens: int = 1) -> "Parts":
        """Parts of X. With `image_width` (a model's layout at fit time) a plain matrix is split into
        its image and question columns, and a factorised X for a plain-matrix model is materialised,
        so either form predicts with either model."""
        if isinstance(X, FactorizedFeatures) and image_width != 0:
            q = None if X.question_part is None else torch.from_numpy(np.asarray(X.question_part, dtype=np.float32))
            return cls(torch.from_numpy(np.asarray(X.image_part, dtype=np.float32)),
                       torch.from_numpy(X.image_row), q, X.image_tokens)
        matrix = torch.from_numpy(np.asarray(X, dtype=np.float32))
        if not image_width:
            return cls(None, None, matrix)
        q = matrix[:, image_width:] if matrix.shape[1] > image_width else None
        return cls(matrix[:, :image_width], torch.arange(len(matrix)), q, image_tokens)

    def to(self, dtype: torch.dtype) -> "Parts":
        cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
        return Parts(cast(self.image), self.row, cast(self.question), self.image_tokens)

    def subset(self, idx: torch.Tensor) -> "Parts":
        """Rows `idx`, keeping only the images they use."""
        if self.image is None:
            return Parts(None, None, self.question[idx])
        used, inv = torch.unique(self.row[idx], return_inverse=True)
        q = None if self.question is None else self.question[idx]
        return Parts(self.image[used], inv, q, self.image_tokens)

    def widths(self) -> tuple[int, int]:
        return (0 if self.image is None else self.image.shape[1], 0 if self.question is None else self.question.shape[1])

    def counts(self) -> torch.Tensor | None:
        """Questions per image: the weights that make per-image statistics equal per-question ones."""
        return None if self.image is None else torch.bincount(self.row, minlength=len(self.image)).to(torch.float32)


class Standardizer:
    """Per-feature mean/std over questions, computed and applied per part (images once each)."""

    def fit(self, parts: Parts) -> "Standardizer":
        self.image_ = None
        if parts.image is not None:
            w = parts.counts()[:, None]
            mean = (w * parts.image).sum(0) / w.sum()
            var = (w * (parts.image - mean) ** 2).sum(0) / w.sum()
            self.image_ = (mean, var.sqrt().clamp_min(1e-6))
        self.question_ = None
        if parts.question is not None:
            q = parts.question
            self.question_ = (q.mean(0), q.std(0, unbiased=False).clamp_min(1e-6))
        return self

    def state(self) -> dict:
        """Named tensors for safe saving (absent parts are left out)."""
        out = {}
        for part in ("image", "question"):
            stats = getattr(self, f"{part}_")
            if stats is not None:
                out[f"{part}.mean"], out[f"{part}.std"] = stats
        return out

    @classmethod
    def from_state(cls, tensors: dict) -> "Standardizer":
        self = cls()
        for part in ("image", "question"):
            setattr(self, f"{part}_", (tensors[f"{part}.mean"], tensors[f"{part}.std"]) if f"{part}.mean" in tensors
                    else None)
        return self

    def transform(self, parts: Parts) -> Parts:
        img = parts.image if self.image_ is None else (parts.image - self.image_[0]) / self.image_[1]
        q = parts.question if self.question_ is None else (parts.question - self.question_[0]) / self.question_[1]
        return Parts(img, parts.row, q, parts.image_tokens)


class FactorizedLinear(nn.Module):
    """Linear layer over Parts; on a plain matrix it is an ordinary nn.Linear."""

    def __init__(self, image_width: int, question_width: int, out_features: int) -> None:
        super().__init__()
        self.image = nn.Linear(image_width, out_features, bias=False) if image_width else None
        self.question = nn.Linear(question_width, out_features, bias=False) if question_width else None
        self.bias = nn.Parameter(torch.zeros(out_features))
        fan_in = image_width + question_width
        for lin in (self.image, self.question):  # init as one nn.Linear of the full width would be
            if lin is not None:
                nn.init.uniform_(lin.weight, -fan_in ** -0.5, fan_in ** -0.5)

    def forward(self, parts: Parts) -> torch.Tensor:
        out = self.bias
        if self.image is not None:
            # index_select: its backward sums in a fixed order (plain indexing's scatter-add does not)
            out = out + torch.index_select(self.image(parts.image), 0, parts.row)
        if self.question is not None:
            out = out + self.question(parts.question)
        return out

    def weights(self) -> list[torch.Tensor]:
        return [lin.weight for lin in (self.image, self.question) if lin is not None]


def token_normalize(parts: Parts) -> Parts:
    """L2-normalise each query token of the image part and the question vector (the reference recipe)."""
    img = parts.image
    if img is not None:
        n, width = img.shape
        img = nn.functional.normalize(img.reshape(n, parts.image_tokens, width // parts.image_tokens), dim=-1)
        img = img.reshape(n, width)
    q = None if parts.question is None else nn.functional.normalize(parts.question, dim=-1)
    return Parts(img, parts.row, q, parts.image_tokens)
