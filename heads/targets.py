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
        """Rows `rows` (any order, repeats allowed), sliced without a Python loop: it runs at every batch."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # entry k of output row r comes from starts[r] + (k - indptr[r])
        picks = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        return SoftTargets(indptr, self.indices[picks], self.values[picks], self.n_classes)

    def coo(self, rows: np.ndarray | torch.Tensor | None = None, device=None) -> "SparseBlock":
        """Rows `rows` (all where None) as the (row, class, value) triples the sparse losses take."""
        part = self if rows is None else self.take(rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows)
        row_of = np.repeat(np.arange(len(part), dtype=np.int64), np.diff(part.indptr))
        block = SparseBlock(torch.from_numpy(row_of), torch.from_numpy(part.indices), torch.from_numpy(part.values),
                            len(part), self.n_classes)
        return block if device is None else block.to(device)

    def dense(self, rows: np.ndarray | torch.Tensor, device=None) -> torch.Tensor:
        """The (len(rows), n_classes) float32 target block of `rows` (for tests and small data: the losses stay
        sparse)."""
        return self.coo(rows, device).dense()

    def score_of(self, rows: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Each row's soft score of its predicted class: on exact VQA soft scores, its VQA accuracy."""
        part = self.take(rows)
        predicted = np.asarray(predicted, dtype=np.int64)
        row_of = np.repeat(np.arange(len(part), dtype=np.int64), np.diff(part.indptr))
        hit = part.indices == predicted[row_of]
        out = np.zeros(len(part), dtype=np.float32)
        np.add.at(out, row_of[hit], part.values[hit])
        return out


class SparseBlock:
    """A batch's soft targets as (row, class, value) triples: the sparse losses read them without ever making the
    (rows, classes) matrix (VQAv2: 3,129 classes, ~3 non-zero per row)."""

    def __init__(self, row: torch.Tensor, col: torch.Tensor, value: torch.Tensor, n_rows: int, n_classes: int) -> None:
        self.row, self.col, self.value, self.n_rows, self.n_classes = row, col, value, n_rows, n_classes

    def to(self, device) -> "SparseBlock":
        return SparseBlock(self.row.to(device), self.col.to(device), self.value.to(device), self.n_rows, self.n_classes)

    def dense(self) -> torch.Tensor:
        out = torch.zeros((self.n_rows, self.n_classes), dtype=torch.float32, device=self.value.device)
        out[self.row, self.col] = self.value
        return out

    @classmethod
    def one_hot(cls, y: torch.Tensor, n_classes: int) -> "SparseBlock":
        return cls(torch.arange(len(y), device=y.device), y, torch.ones(len(y), device=y.device), len(y), n_classes)


class _SparseBCE(torch.autograd.Function):
    """sum_ij softplus(z_ij) - sum_(ij in targets) t_ij z_ij, the summed BCE with logits, and its gradient
    sigmoid(z) - T made in the forward pass (three passes over z in all, no dense T, no per-element loss matrix)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, row: torch.Tensor, col: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.softplus(z).sum() - (value.to(z.dtype) * z[row, col]).sum()
        if ctx.needs_input_grad[0]:
            grad = torch.sigmoid(z)
            grad.index_put_((row, col), -value.to(z.dtype), accumulate=True)
            ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad.mul_(g), None, None, None


def sparse_bce(logits: torch.Tensor, targets: SparseBlock) -> torch.Tensor:
    """BCE with logits against sparse soft targets, summed over rows and classes (equals
    binary_cross_entropy_with_logits(logits, targets.dense(), reduction="sum"))."""
    return _SparseBCE.apply(logits, targets.row, targets.col, targets.value)


def sparse_soft_ce(logits: torch.Tensor, targets: SparseBlock) -> torch.Tensor:
    """Cross-entropy against each row's soft scores made a distribution, summed over rows, from the triples."""
    mass = torch.zeros(targets.n_rows, dtype=logits.dtype, device=logits.device)
    mass.index_add_(0, targets.row, targets.value.to(logits.dtype))
    p = targets.value.to(logits.dtype) / mass.clamp_min(1e-12)[targets.row]
    has = (mass > 0).to(logits.dtype)
    return (torch.logsumexp(logits, 1) * has).sum() - (p * logits[targets.row, targets.col]).sum()


def resolve_loss(loss: str, soft: SoftTargets | None) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if loss == "auto":
        return "bce" if soft is not None else "ce"
    return loss


def target_loss(logits: torch.Tensor, loss: str, y: torch.Tensor, soft: SparseBlock | None,
                reduction: str = "mean") -> torch.Tensor:
    """The per-batch loss (mean or sum over rows) of `logits` for `loss` (resolved: ce, soft_ce or bce); soft
    targets stay sparse (no (rows, classes) target or loss matrix is made)."""
    if loss == "ce":
        return torch.nn.functional.cross_entropy(logits, y, reduction=reduction)
    if soft is None:
        soft = SparseBlock.one_hot(y, logits.shape[1])
    total = sparse_bce(logits, soft) if loss == "bce" else sparse_soft_ce(logits, soft)
    return total / max(1, len(logits)) if reduction == "mean" else total
