"""MLP classifier in torch (CPU, or GPU when asked), with the reference paper's recipe as a preset.

On a factorised view the first layer runs once per image of a batch, and batches are formed from
whole images (all of an image's questions together), so the image part costs ~1/9 of the naive way
on Easy-VQA. The module is `ClassifierNet`, shared with the fine-tuning mode.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ._base import HeadBase
from .factorized import DEFAULT_BLOCK_IMAGES, FactorizedLinear, Parts, Standardizer, image_blocks, token_normalize
from .targets import SoftTargets, resolve_loss, target_loss


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
            layers += [nn.Dropout(dropout), nn.Linear(sizes[i], sizes[i + 1])]
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


def _image_grouped_batches(row: np.ndarray, batch_size: int, rng: np.random.Generator, n_images: int,
                           block: int) -> list[tuple[int, list[np.ndarray]]]:
    """Shuffled batches of question indices made of whole images (about batch_size questions each),
    as (first image of the block, its batches) per block of `block` images: blocks in random order,
    images shuffled within a block, so a streamed fit reads each block once per epoch."""
    order = np.argsort(row, kind="stable")
    bounds = np.flatnonzero(np.diff(row[order])) + 1
    groups = np.split(order, bounds)
    group_image = row[order][np.r_[0, bounds]] if len(order) else np.zeros(0, dtype=np.int64)
    n_blocks = max(1, -(-n_images // block))
    if n_blocks == 1:
        members = [groups]
    else:
        members = [[g for g, i in zip(groups, group_image) if i // block == b] for b in range(n_blocks)]
    out = []
    for b in (rng.permutation(n_blocks) if n_blocks > 1 else [0]):
        block_groups = members[b]
        rng.shuffle(block_groups)
        batches, current, size = [], [], 0
        for g in block_groups:
            current.append(g)
            size += len(g)
            if size >= batch_size:
                batches.append(np.concatenate(current))
                current, size = [], 0
        if current:
            batches.append(np.concatenate(current))
        out.append((int(b) * block, batches))
    return out


class MLPHead(HeadBase):
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
    """

    def __init__(self, hidden_sizes: tuple[int, ...] = (512,), dropout: float = 0.2, batch_norm: bool = True,
                 lr: float = 1e-3, weight_decay: float = 1e-4, l1: float = 0.0, scheduler: str | None = None,
                 t_max: int = 500, eta_min: float = 1e-6, normalize: str | None = None, standardize: bool = True,
                 max_epochs: int = 30, batch_size: int = 256, validation_fraction: float = 0.1, patience: int = 4,
                 device: str = "cpu", num_threads: int | None = None, random_state: int | None = 0,
                 verbose: bool = False, block_images: int = DEFAULT_BLOCK_IMAGES, loss: str = "auto") -> None:
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
        """The paper's inputs and optimiser with one hidden layer of 512 (dropout 0.1, no BatchNorm):
        ~1/40 of the reference's multiply-adds, for quick sweeps on a laptop."""
        params = dict(hidden_sizes=(512,), batch_norm=False, dropout=0.1, **PAPER_OPTIMISATION)
        params.update(overrides)
        return cls(**params)

    # -- safe persistence -----------------------------------------------------------------------------
    def _fitted_state(self) -> tuple[dict, dict]:
        from featcache.safe_folder import flatten

        attrs, tensors = super()._fitted_state()
        attrs.update(n_epochs=self.n_epochs_, best_validation_score=self.best_validation_score_,
                     history=self.history_, loss_function=self.loss_function_)
        tensors.update(self._scaler_tensors(), **flatten("net", self.net_.state_dict()))
        return attrs, tensors

    def _restore(self, attrs: dict, tensors: dict) -> None:
        from featcache.safe_folder import unflatten

        super()._restore(attrs, tensors)
        self.n_epochs_, self.best_validation_score_ = attrs["n_epochs"], attrs["best_validation_score"]
        self.history_ = attrs["history"]
        self.loss_function_ = attrs.get("loss_function", "ce")  # heads saved before soft targets used ce
        self.scaler_ = self._scaler_from(tensors)
        from featcache.safe_folder import checked_module

        self.net_ = checked_module(lambda: ClassifierNet(*self._widths(), tuple(self.hidden_sizes), len(self.classes_),
                                                         self.dropout, self.batch_norm).to(torch.float64),
                                   unflatten("net", tensors), "head")
        self.net_.eval().requires_grad_(False)

    # -- helpers ------------------------------------------------------------------------------------
    def _prepare(self, parts: Parts) -> Parts:
        parts = parts.to(next(self.net_.parameters()).dtype)
        if self.normalize == "token":
            parts = token_normalize(parts)
        if self.scaler_ is not None:
            parts = self.scaler_.transform(parts)
        return parts

    def _device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    @staticmethod
    def _to(parts: Parts, dev: torch.device) -> Parts:
        mv = lambda t: None if t is None else t.to(dev)  # noqa: E731
        return Parts(parts.map_image(mv).image, mv(parts.row), mv(parts.question), parts.image_tokens)

    def _blocks(self, parts: Parts):
        return image_blocks(parts, getattr(self, "block_images", DEFAULT_BLOCK_IMAGES))

    # -- estimator API ------------------------------------------------------------------------------
    def fit(self, X, y, soft_targets=None) -> "MLPHead":
        """Fit on labels y; with `soft_targets` (one {answer: score} per row) on soft scores (see `loss`)."""
        X, y_idx = self._validate_fit(X, y)
        soft = self._soft(soft_targets, y_idx)
        self.loss_function_ = resolve_loss(self.loss, soft)
        if self.normalize not in (None, "token"):
            raise ValueError(f"normalize must be None or 'token', got {self.normalize!r}")
        if self.scheduler not in (None, "cosine"):
            raise ValueError(f"scheduler must be None or 'cosine', got {self.scheduler!r}")
        from .threads import torch_threads

        with torch_threads(self.num_threads):  # None: the idle cores (heads/threads.py)
            self._fit(X, np.asarray(y_idx), soft)
        return self

    def _fit(self, X, y_idx: np.ndarray, soft: SoftTargets | None = None) -> None:
        seed = 0 if self.random_state is None else self.random_state
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        dev = self._device()
        parts = self._parts(X)
        owned = self._owns_image(X)  # a private copy: normalised in place (one copy of the images, not three)
        self.scaler_ = None
        if self.normalize == "token":
            parts = token_normalize(parts, inplace=owned, inplace_question=self._owns_question(X))
            owned = not parts.streamed
        if self.standardize:
            self.scaler_ = Standardizer().fit(parts, self.block_images)
            parts = self.scaler_.transform(parts, inplace=owned)

        n = parts.n
        n_val = int(round(self.validation_fraction * n)) if self.validation_fraction else 0
        if n_val >= 1 and n - n_val >= len(self.classes_):
            perm = rng.permutation(n)
            val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        else:
            val_idx, train_idx = np.array([], dtype=np.int64), np.arange(n)
        train = parts.subset(torch.from_numpy(train_idx))
        val = parts.subset(torch.from_numpy(val_idx)) if len(val_idx) else None
        y_train = torch.from_numpy(y_idx[train_idx]).to(dev)
        y_val = torch.from_numpy(y_idx[val_idx]).to(dev)
        self._soft_train = soft.take(train_idx) if soft is not None else None
        soft_val = soft.take(val_idx) if soft is not None and len(val_idx) else None
        train, val = self._to(train, dev), (self._to(val, dev) if val is not None else None)

        self.net_ = ClassifierNet(*parts.widths(), tuple(self.hidden_sizes), len(self.classes_),
                                  self.dropout, self.batch_norm).to(dev)
        # fused: one kernel for the whole update; on wide views the step over the first layer's
        # weights otherwise costs as much as the factorised forward and backward together
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.t_max, eta_min=self.eta_min)
                 if self.scheduler == "cosine" else None)
        train_row = train.row.cpu().numpy() if train.row is not None else None
        block = self.block_images
        best_score, best_state, stale = -1.0, None, 0
        self.history_ = []
        for epoch in range(self.max_epochs):
            self.net_.train()
            blocks = (_image_grouped_batches(train_row, self.batch_size, rng, len(train.image), block)
                      if train_row is not None else
                      [(0, np.array_split(rng.permutation(train.n), max(1, int(np.ceil(train.n / self.batch_size)))))])
            total = 0.0
            for start, batches in blocks:
                images = train.image_block(start, start + block) if train_row is not None else None
                for b in batches:
                    if len(b) < 2 and self.batch_norm:
                        continue  # BatchNorm cannot train on a single row
                    idx = torch.from_numpy(b).to(dev)
                    total += self._train_step(train, images, start, idx, y_train, opt, sched) * len(b)
            score = self._accuracy(val, y_val, soft_val) if val is not None else -total
            self.history_.append({"epoch": epoch, "train_loss": total / max(1, train.n),
                                  "val_accuracy": score if val is not None else None})
            if self.verbose:
                print(f"epoch {epoch}: loss {total / max(1, train.n):.4f} val acc {score:.4f}")
            if score > best_score + 1e-6:
                best_score, best_state, stale = score, copy.deepcopy(self.net_.state_dict()), 0
            else:
                stale += 1
                if val is not None and stale >= self.patience:
                    break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self._soft_train = None
        self.n_epochs_ = len(self.history_)
        self.best_validation_score_ = best_score if val is not None else None
        # predict in float64: a row's answer must not depend on the batch it comes in
        self.net_.eval().requires_grad_(False).to("cpu", torch.float64)

    def _train_step(self, train: Parts, images, start: int, idx: torch.Tensor, y: torch.Tensor, opt, sched) -> float:
        """One batch: the questions `idx` of `train`, their images taken from the loaded block."""
        if images is None:
            batch = train.subset(idx)
        else:
            used, inv = torch.unique(train.row[idx] - start, return_inverse=True)
            q = None if train.question is None else train.question[idx]
            batch = Parts(images[used], inv, q, train.image_tokens)
        soft = None if self._soft_train is None else self._soft_train.dense(idx, y.device)
        loss = target_loss(self.net_(batch), self.loss_function_, y[idx], soft)
        if self.l1:
            loss = loss + self.l1 * sum(w.abs().mean() for w in self.net_.weight_matrices())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        return float(loss.detach())

    @torch.no_grad()
    def _accuracy(self, parts: Parts, y: torch.Tensor, soft: SoftTargets | None = None) -> float:
        """Validation accuracy; with soft targets, the mean soft score of the predicted answer."""
        self.net_.eval()
        total = 0.0
        for idx, block in self._blocks(parts):
            pred = self.net_(block).argmax(1)
            if soft is not None:
                total += float(soft.score_of(idx, pred.cpu().numpy()).sum())
            else:
                total += int((pred == y[torch.from_numpy(idx).to(y.device)]).sum())
        return total / parts.n

    @torch.no_grad()
    def _apply(self, X, fn, width: int) -> np.ndarray:
        parts = self._prepare(self._parts(X))
        out = torch.empty((parts.n, width), dtype=torch.float64)
        for idx, block in self._blocks(parts):
            out[idx] = fn(block).to(torch.float64)
        return out.numpy()

    def predict_proba(self, X) -> np.ndarray:
        X = self._validate_predict(X)
        return self._finite(self._apply(X, lambda p: torch.softmax(self.net_(p), dim=1), len(self.classes_)))

    def transform_hidden(self, X) -> np.ndarray:
        """Last hidden layer activations for X (for embedding plots)."""
        X = self._validate_predict(X)
        return self._apply(X, self.net_.hidden, self.net_.rest[-1].in_features if len(self.net_.rest)
                           else len(self.classes_)).astype(np.float32)
