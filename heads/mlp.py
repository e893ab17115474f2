"""MLP classifier in torch (CPU, or GPU when asked), with the reference paper's recipe as a preset.

On a factorised view the first layer runs once per image of a batch, and batches are formed from
whole images (all of an image's questions together), so the image part costs ~1/9 of the naive way
on Easy-VQA. The module is `ClassifierNet`, shared with the fine-tuning mode.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._base import check_memory, check_minibatch_params
from .factorized import DEFAULT_BLOCK_IMAGES, FactorizedLinear, Parts
from .minibatch import Member, seeded
from .nethead import NetHead


class Dropout(nn.Dropout):
    """nn.Dropout with its mask drawn by torch.rand: CPU's bernoulli_ (nn.Dropout's) takes 4x as long, ~10% of a
    step of the paper's MLP (15 against 4 ms for a 256 x 5,012 batch on 2 cores). Same keep probability and scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p >= 1:
            return x * 0
        keep = (torch.rand(x.shape, device=x.device) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep


class ClassifierNet(nn.Module):
    """Factorised first linear layer, then per hidden layer ReLU -> [BatchNorm] -> Dropout -> Linear.

    That is the reference paper's block order (Linear -> ReLU -> BatchNorm1d -> Dropout per hidden
    layer), ending in a Linear to the class logits.
    """

    def __init__(self, image_width: int, question_width: int, hidden_sizes: tuple[int, ...], n_classes: int,
                 dropout: float, batch_norm: bool) -> None:
        super().__init__()
        sizes = list(hidden_sizes) + [n_classes]
        self.first = FactorizedLinear(image_width, question_width, sizes[0])
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.ReLU())
            if batch_norm:
                layers.append(nn.BatchNorm1d(sizes[i]))
            layers += [Dropout(dropout), nn.Linear(sizes[i], sizes[i + 1])]
        self.rest = nn.Sequential(*layers)

    def forward(self, parts: Parts) -> torch.Tensor:
        return self.rest(self.first(parts))

    def hidden(self, parts: Parts) -> torch.Tensor:
        """The last hidden layer's activations (what the UMAP plot shows)."""
        h = self.first(parts)
        for layer in list(self.rest)[:-1]:
            h = layer(h)
        return h

    def weight_matrices(self) -> list[torch.Tensor]:
        return self.first.weights() + [m.weight for m in self.rest if isinstance(m, nn.Linear)]


PAPER_HIDDEN_SIZES = (5012, 2056, 1024, 512)
PAPER_OPTIMISATION = dict(normalize="token", standardize=False, lr=1e-4, weight_decay=1e-6, l1=0.01,
                          scheduler="cosine", t_max=500, eta_min=1e-6, max_epochs=60, patience=6)
"""The reference paper's input normalisation and optimiser (plus our early stopping)."""
COMPACT_OPTIMISATION = dict(lr=1e-3, scheduler=None, max_epochs=30, patience=4)
"""Where the compact preset departs from the paper (see MLPHead.compact)."""


class MLPHead(NetHead):
    """Multi-layer perceptron head.

    Parameters
    ----------
    hidden_sizes : widths of the hidden layers.
    dropout, batch_norm : regularisation after each hidden linear layer.
    lr, weight_decay : AdamW settings.
    l1 : L1 strength on the mean absolute weight of each linear layer (a plain sum over 8k x 512
        weights would swamp the cross-entropy).
    scheduler : None or "cosine" (CosineAnnealingLR stepped per batch, with t_max and eta_min).
    normalize : None, or "token" to L2-normalise each query token and the question vector.
    standardize : scale features to zero mean / unit variance (after `normalize`).
    max_epochs, batch_size, validation_fraction, patience : early stopping on the validation
        accuracy of a held-out fraction of the training data; the best epoch's weights are kept.
    device : "cpu", "cuda" or "auto".
    num_threads : torch CPU threads; None: the cores idle at fit time (heads.threads.free_cores), so a fit
        beside a busy process does not oversubscribe the cores.
    block_images : images per block: batches are drawn block by block (blocks in random order), and
        a streamed view (`cache.view(..., stream=True)`) is read one block at a time.
    loss : "auto" (bce with soft targets, else ce), "ce", "soft_ce" or "bce" (heads/targets.py). With
        `fit(X, y, soft_targets=...)` (VQA's soft scores) early stopping follows the mean soft score of the
        predicted answer, which on exact VQA soft scores is the VQA accuracy.
    precision : "auto" (bf16 matrix products where the CPU or GPU does bf16 natively, else fp32), "fp32" or
        "bf16" (heads/precision.py); weights, optimiser state and losses stay fp32.

    The validation rows are whole images (no validation question shares its image with a training one) on a
    factorised view, a seeded random fraction of the rows on a plain matrix. Several MLPs (and minibatch logistic
    regressions) with the same inputs train in one pass with `heads.together.fit_together`.
    """

    def __init__(self, hidden_sizes: tuple[int, ...] = (512,), dropout: float = 0.2, batch_norm: bool = True,
                 lr: float = 1e-3, weight_decay: float = 1e-4, l1: float = 0.0, scheduler: str | None = None,
                 t_max: int = 500, eta_min: float = 1e-6, normalize: str | None = None, standardize: bool = True,
                 max_epochs: int = 30, batch_size: int = 256, validation_fraction: float = 0.1, patience: int = 4,
                 device: str = "cpu", num_threads: int | None = None, random_state: int | None = 0,
                 verbose: bool = False, block_images: int = DEFAULT_BLOCK_IMAGES, loss: str = "auto",
                 precision: str = "auto") -> None:
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.lr = lr
        self.weight_decay = weight_decay
        self.l1 = l1
        self.scheduler = scheduler
        self.t_max = t_max
        self.eta_min = eta_min
        self.normalize = normalize
        self.standardize = standardize
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.num_threads = num_threads
        self.random_state = random_state
        self.verbose = verbose
        self.block_images = block_images
        self.loss = loss
        self.precision = precision

    @classmethod
    def reference(cls, **overrides) -> "MLPHead":
        """The BLIP-2 Classifier paper's classifier exactly: hidden layers 5012 -> 2056 -> 1024 -> 512, each
        Linear -> ReLU -> BatchNorm1d -> Dropout(0.5); per-token L2-normalised inputs; AdamW lr 1e-4,
        weight decay 1e-6, L1 0.01, CosineAnnealingLR(T_max=500, eta_min=1e-6). Early stopping on a
        validation fraction is ours (the paper trained a fixed number of epochs)."""
        params = dict(hidden_sizes=PAPER_HIDDEN_SIZES, batch_norm=True, dropout=0.5, **PAPER_OPTIMISATION)
        params.update(overrides)
        return cls(**params)

    @classmethod
    def compact(cls, **overrides) -> "MLPHead":
        """The paper's inputs (per-token L2 normalisation), its L1 and weight decay, with one hidden layer of 512
        (dropout 0.1, no BatchNorm): ~1/40 of the reference's multiply-adds, for quick sweeps on a laptop. It
        trains at AdamW's usual lr 1e-3 without the cosine schedule: the paper's 1e-4 suits its 55 M weights,
        and at 4 M it was still improving after 60 epochs on VQAv2-size data (1,412 s, held-out 87.90), where
        1e-3 early-stops after 12 (286 s, 88.35; benchmarks/vqav2_heads.py)."""
        params = dict(hidden_sizes=(512,), batch_norm=False, dropout=0.1,
                      **{**PAPER_OPTIMISATION, **COMPACT_OPTIMISATION})
        params.update(overrides)
        return cls(**params)

    def _build_net(self) -> ClassifierNet:
        return ClassifierNet(*self._widths(), tuple(self.hidden_sizes), len(self.classes_), self.dropout,
                             self.batch_norm)

    # -- estimator API ------------------------------------------------------------------------------
    def fit(self, X, y, soft_targets=None) -> "MLPHead":
        """Fit on labels y; with `soft_targets` (one {answer: score} per row) on soft scores (see `loss`)."""
        from .together import fit_together

        return fit_together([self], X, y, soft_targets, progress="mlp" if self.verbose else None)[0]

    # -- what heads/together.py asks of a minibatch head ---------------------------------------------
    def _check_params(self) -> None:
        if self.normalize not in (None, "token"):
            raise ValueError(f"normalize must be None or 'token', got {self.normalize!r}")
        if self.scheduler not in (None, "cosine"):
            raise ValueError(f"scheduler must be None or 'cosine', got {self.scheduler!r}")
        if not all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be whole numbers >= 1, got {self.hidden_sizes!r}")
        check_minibatch_params(self)

    def _skips_single(self) -> bool:
        return bool(self.batch_norm)

    def _member(self, widths: tuple[int, int], n_train: int, seed: int, dev: torch.device) -> Member:
        make = lambda: ClassifierNet(*widths, tuple(self.hidden_sizes), len(self.classes_), self.dropout,  # noqa
                                     self.batch_norm)
        check_memory(make, f"hidden_sizes {tuple(self.hidden_sizes)} over {sum(widths)} inputs")
        net, state = seeded(seed, lambda: make().to(dev))
        return Member(net, self.loss_function_, self.lr, self.weight_decay, l1=self.l1, scheduler=self.scheduler,
                      t_max=self.t_max, eta_min=self.eta_min, max_epochs=self.max_epochs, patience=self.patience,
                      weights=net.weight_matrices, rng_state=state, name="mlp")

    def transform_hidden(self, X) -> np.ndarray:
        """Last hidden layer activations for X (for embedding plots)."""
        X = self._validate_predict(X)
        return self._apply(X, self.net_.hidden, self.net_.rest[-1].in_features if len(self.net_.rest)
                           else len(self.classes_)).astype(np.float32)
