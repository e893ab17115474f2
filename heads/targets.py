"""Soft targets: a score per answer for each row (VQA's soft scores), kept sparse and made dense a batch at a time.

A head takes them as `fit(X, y, soft_targets=...)`: a 1-d sequence with one {answer: score} mapping per row (so
scikit-learn's GridSearchCV slices it with X and y), scored over the head's `classes_`; answers outside them are
left out. VQAv2 train has 443,757 rows x 3,129 answers: dense float32 that would be 5.5 GB, sparse ~10 MB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

LOSSES = ("auto", "ce", "soft_ce", "bce")
"""auto: bce with soft targets, else ce. ce: cross-entropy on y. soft_ce: cross-entropy against the soft scores
made a distribution. bce: binary cross-entropy per answer against the soft scores, summed over answers (the VQA
recipe of bottom-up-top-down, ViLT, LXMERT: their mean times the number of answers)."""


class SoftTargets:
    """Rows of (answer index, score) pairs in CSR form over a fixed list of classes."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, n_classes: int) -> None:
        self.indptr, self.indices, self.values, self.n_classes = indptr, indices, values, n_classes

    @classmethod
    def build(cls, soft: Sequence[Mapping[str, float]], classes: np.ndarray, y_idx: np.ndarray) -> "SoftTargets":
        """From per-row mappings; a row whose mapping has no score over `classes` falls back to its label."""
        index = {c: i for i, c in enumerate(classes.tolist())}
        indptr, indices, values = [0], [], []
        for row, scores in enumerate(soft):
            if not isinstance(scores, Mapping):
                raise ValueError(f"soft_targets[{row}] is a {type(scores).__name__}, not a mapping answer -> score")
            pairs = [(index[a], float(s)) for a, s in scores.items() if a in index and s > 0]
            if not pairs:
                pairs = [(int(y_idx[row]), 1.0)]
            for i, s in sorted(pairs):
                if not 0 <= s <= 1:
                    raise ValueError(f"soft_targets[{row}] scores {s} for an answer; soft scores lie in [0, 1]")
                indices.append(i)
                values.append(s)
            indptr.append(len(indices))
        return cls(np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64),
                   np.asarray(values, dtype=np.float32), len(classes))

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def take(self, rows: np.ndarray) -> "SoftTargets":
        rows = np.asarray(rows, dtype=np.int64)
        starts, stops = self.indptr[rows], self.indptr[rows + 1]
        lengths = stops - starts
        picks = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) if len(rows) else np.zeros(0, np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return SoftTargets(indptr, self.indices[picks], self.values[picks], self.n_classes)

    def dense(self, rows: np.ndarray | torch.Tensor, device=None) -> torch.Tensor:
        """The (len(rows), n_classes) float32 target block of `rows`."""
        rows = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        part = self.take(rows)
        out = torch.zeros((len(rows), self.n_classes), dtype=torch.float32)
        row_of = np.repeat(np.arange(len(rows)), np.diff(part.indptr))
        out[torch.from_numpy(row_of), torch.from_numpy(part.indices)] = torch.from_numpy(part.values)
        return out if device is None else out.to(device)

    def score_of(self, rows: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Each row's soft score of its predicted class: on exact VQA soft scores, its VQA accuracy."""
        dense = self.dense(rows)
        return dense[torch.arange(len(rows)), torch.as_tensor(predicted, dtype=torch.long)].numpy()


def resolve_loss(loss: str, soft: SoftTargets | None) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if loss == "auto":
        return "bce" if soft is not None else "ce"
    return loss


def target_loss(logits: torch.Tensor, loss: str, y: torch.Tensor, soft: torch.Tensor | None,
                reduction: str = "mean") -> torch.Tensor:
    """The per-batch loss (mean or sum over rows) of `logits` for `loss` (resolved: ce, soft_ce or bce)."""
    if loss == "ce":
        return torch.nn.functional.cross_entropy(logits, y, reduction=reduction)
    if soft is None:
        soft = torch.nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
    if loss == "bce":
        per_row = torch.nn.functional.binary_cross_entropy_with_logits(logits, soft.to(logits.dtype),
                                                                       reduction="none").sum(1)
    else:
        dist = soft / soft.sum(1, keepdim=True).clamp_min(1e-12)
        per_row = -(dist.to(logits.dtype) * torch.log_softmax(logits, 1)).sum(1)
    return per_row.mean() if reduction == "mean" else per_row.sum()
