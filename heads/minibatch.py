"""Minibatch training of many heads in one pass over the features (the DINOv2 / CAPI evaluation scheme).

Every candidate head of a group (logistic regressions at several C or learning rates, MLPs of several widths)
sees the same shuffled batches: each block of images is read, converted and normalised once, each batch's
targets are sliced once, and only each head's own forward, backward and update are paid per head. Each head
keeps its own optimiser, schedule, random stream (dropout) and early stopping on the validation rows, so a head
trained in a group is bit-identical to the same head trained alone (tests/test_minibatch.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from .factorized import PREDICT_BLOCK_IMAGES, Parts, image_blocks
from .heap import HeapGuard, trim_heap
from .mixed import MasterWeights
from .targets import SoftTargets, target_loss


def image_grouped_batches(row: np.ndarray, batch_size: int, rng: np.random.Generator, n_images: int,
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
        block_of = group_image // block
        members = [[] for _ in range(n_blocks)]
        for g, b in zip(groups, block_of):
            members[b].append(g)
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


def validation_split(X_row: np.ndarray | None, n: int, fraction: float, rng: np.random.Generator,
                     min_train: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): whole images to validation where the rows share images (`X_row`, their
    image of each row), so no validation question shares its image with a training one; a seeded random
    `fraction` of the rows otherwise. No validation where it would leave fewer than `min_train` rows."""
    n_val = int(round(fraction * n)) if fraction else 0
    if n_val < 1 or n - n_val < min_train:
        return np.arange(n), np.array([], dtype=np.int64)
    if X_row is None:
        perm = rng.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    images, counts = np.unique(X_row, return_counts=True)
    order = rng.permutation(len(images))
    taken = np.searchsorted(np.cumsum(counts[order]), n_val) + 1  # whole images until the fraction is reached
    held = np.isin(X_row, images[order[:min(taken, len(images) - 1)]])
    return np.flatnonzero(~held), np.flatnonzero(held)


@dataclass
class Member:
    """One head in training: its module, optimiser settings and early-stopping state."""

    net: nn.Module
    loss: str
    lr: float
    weight_decay: float = 0.0
    l2: float = 0.0
    """Coefficient of sum(w^2) added to the batch-mean loss (logistic regression's ||W||^2 / (2 C n))."""
    l1: float = 0.0
    """Strength of the mean |w| of each weight matrix (the reference paper's L1). Like `l2`, it enters the gradient
    (in place, heads/mixed.py) and not the reported train_loss, which is the data term."""
    scheduler: str | None = None
    """None; "cosine" (CosineAnnealingLR over t_max steps, the paper's); "cosine_run" (cosine to eta_min over
    every step of max_epochs)."""
    t_max: int = 500
    eta_min: float = 0.0
    max_epochs: int = 30
    patience: int = 4
    weights: Callable[[], list[torch.Tensor]] | None = None
    name: str = ""
    # state
    best_score: float = -math.inf
    best_state: dict | None = None
    stale: int = 0
    history: list = field(default_factory=list)
    done: bool = False
    rng_state: torch.Tensor | None = None
    opt: torch.optim.Optimizer | None = None
    sched: object = None
    master: MasterWeights | None = None

    def output_bias(self) -> torch.Tensor:
        """The bias of the layer that gives the class logits."""
        rest = getattr(self.net, "rest", None)
        if rest is not None and len(rest):
            return rest[-1].bias
        return getattr(self.net, "first", self.net).bias

    def matrices(self) -> list[torch.Tensor]:
        return self.weights() if self.weights is not None else [p for p in self.net.parameters() if p.dim() == 2]


def _member_step(m: Member, batch: Parts, y: torch.Tensor, soft, bf16: bool) -> float:
    """One optimiser step of `m` on a batch; returns the batch's mean data loss."""
    if m.master is None:
        m.master = MasterWeights(m.net, m.matrices(), bf16)
    m.master.zero_grad()
    with m.master.routed(), torch.autocast("cpu" if batch_device(batch).type == "cpu" else "cuda",
                                           dtype=torch.bfloat16, enabled=bf16):
        logits = m.net(batch)
    loss = target_loss(logits.float(), m.loss, y, soft)
    loss.backward()
    if m.l1:
        m.master.add_l1(m.l1)
    if m.l2:
        m.master.add_l2(m.l2)
    m.opt.step()
    if m.sched is not None:
        m.sched.step()
    return float(loss.detach())


def batch_device(parts: Parts) -> torch.device:
    t = parts.question if parts.question is not None else parts.row
    return t.device


@contextlib.contextmanager
def _own_random_stream(m: Member):
    """Run with the member's torch random state (its dropout draws do not depend on the other members)."""
    outer = torch.get_rng_state()
    torch.set_rng_state(m.rng_state)
    try:
        yield
    finally:
        m.rng_state = torch.get_rng_state()
        torch.set_rng_state(outer)


@torch.no_grad()
def validation_scores(members: list[Member], parts: Parts, y: torch.Tensor, soft: SoftTargets | None, block: int,
                      bf16: bool) -> list[float]:
    """Each member's accuracy on `parts` (with soft targets: the mean soft score of its predicted answer, on exact
    VQA soft scores the VQA accuracy), from one read of each block."""
    totals = [0.0] * len(members)
    for m in members:
        m.net.eval()
    for idx, chunk in image_blocks(parts, min(block, PREDICT_BLOCK_IMAGES)):
        for i, m in enumerate(members):
            with torch.autocast(batch_device(chunk).type, dtype=torch.bfloat16, enabled=bf16):
                pred = m.net(chunk).float().argmax(1)
            if soft is not None:
                totals[i] += float(soft.score_of(idx, pred.cpu().numpy()).sum())
            else:
                totals[i] += int((pred == y[torch.from_numpy(idx).to(y.device)]).sum())
    return [t / max(1, parts.n) for t in totals]


def train_together(members: list[Member], train: Parts, y_train: torch.Tensor, soft_train: SoftTargets | None,
                   val: Parts | None, y_val: torch.Tensor | None, soft_val: SoftTargets | None, *, batch_size: int,
                   block: int, seed: int, bf16: bool = False, skip_single: bool = False,
                   progress: Callable[[int, int, list[Member]], None] | None = None) -> None:
    """Train every member over the same batches until each stops (its patience on `val`, or its max_epochs);
    each member ends holding its best epoch's weights. `skip_single`: drop batches of one row (BatchNorm).
    `progress(epoch, n_epochs, members)` is called after each epoch."""
    _train(members, train, y_train, soft_train, val, y_val, soft_val, batch_size, block, seed, bf16, skip_single,
           progress)


def _train(members, train, y_train, soft_train, val, y_val, soft_val, batch_size, block, seed, bf16, skip_single,
           progress) -> None:
    rng = np.random.default_rng(seed)
    train_row = train.row.cpu().numpy() if train.row is not None else None
    n_batches = _batches_per_epoch(train_row, train.n, batch_size, len(train.image) if train_row is not None else 0,
                                   block)
    for m in members:
        m.opt = torch.optim.AdamW(m.net.parameters(), lr=m.lr, weight_decay=m.weight_decay,
                                  fused=batch_device(train).type in ("cpu", "cuda"))
        if m.scheduler == "cosine":
            m.sched = torch.optim.lr_scheduler.CosineAnnealingLR(m.opt, T_max=m.t_max, eta_min=m.eta_min)
        elif m.scheduler == "cosine_run":
            m.sched = torch.optim.lr_scheduler.CosineAnnealingLR(m.opt, T_max=max(1, m.max_epochs * n_batches),
                                                                 eta_min=m.eta_min)
        m.history, m.best_score, m.best_state, m.stale, m.done = [], -math.inf, None, 0, False
        m.master = MasterWeights(m.net, m.matrices(), bf16)
    epochs = max(m.max_epochs for m in members)
    guard = HeapGuard()
    for epoch in range(epochs):
        active = [m for m in members if not m.done and epoch < m.max_epochs]
        if not active:
            break
        for m in active:
            m.net.train()
        totals = {id(m): 0.0 for m in active}
        blocks = (image_grouped_batches(train_row, batch_size, rng, len(train.image), block)
                  if train_row is not None else
                  [(0, np.array_split(rng.permutation(train.n), max(1, int(np.ceil(train.n / batch_size)))))])
        for start, batches in blocks:
            images = train.image_block(start, start + block) if train_row is not None else None
            for b in batches:
                if len(b) < 2 and skip_single:
                    continue  # BatchNorm cannot train on a single row
                idx = torch.from_numpy(b).to(y_train.device)
                if images is None:
                    batch = train.subset(idx)
                else:  # rows sorted by image: the gather's backward then adds each image's rows in one sweep
                    b = b[np.argsort(train_row[b], kind="stable")]
                    idx = torch.from_numpy(b).to(y_train.device)
                    used, inv = torch.unique(train.row[idx] - start, return_inverse=True)
                    q = None if train.question is None else train.question[idx]
                    batch = Parts(images[used], inv, q, train.image_tokens)
                soft = None if soft_train is None else soft_train.coo(b, y_train.device)
                y = y_train[idx]
                for m in active:
                    with _own_random_stream(m):
                        totals[id(m)] += _member_step(m, batch, y, soft, bf16) * len(b)
                batch = None
                guard.check()  # (the heap's growth within an epoch, bounded: heads/heap.py)
            images = None
        scores = (validation_scores(active, val, y_val, soft_val, block, bf16) if val is not None
                  else [-totals[id(m)] for m in active])
        for m, score in zip(active, scores):
            m.history.append({"epoch": epoch, "train_loss": totals[id(m)] / max(1, train.n),
                              "val_accuracy": score if val is not None else None})
            if score > m.best_score + 1e-6:
                m.best_score, m.best_state, m.stale = score, _kept(m.net.state_dict(), m.best_state), 0
            else:
                m.stale += 1
                if val is not None and m.stale >= m.patience:
                    m.done = True
            if epoch + 1 >= m.max_epochs:
                m.done = True
        trim_heap(collect=False)  # (the epoch's freed buffers: else each epoch's peak stacks on the last's)
        if progress is not None:
            progress(epoch, epochs, members)
    for m in members:
        if m.best_state is not None:
            m.net.load_state_dict(m.best_state)
        m.net.zero_grad(set_to_none=True)  # (a fitted head's gradients would follow it into float64: 2x its weights)
        m.best_state, m.opt, m.sched, m.master = None, None, None, None


def _kept(state: dict, previous: dict | None) -> dict:
    """A copy of `state`, written into `previous` (the last best epoch's copy) where there is one: a new copy beside
    the old would hold a candidate's weights twice (the logistic regression on VQAv2's itc: 105 MB each)."""
    if previous is None:
        return copy.deepcopy(state)
    for key, value in state.items():
        previous[key].copy_(value)
    return previous


def _batches_per_epoch(row: np.ndarray | None, n: int, batch_size: int, n_images: int, block: int) -> int:
    """About how many batches an epoch has (for a schedule over the whole run)."""
    return max(1, int(np.ceil(n / batch_size)) + (max(1, -(-n_images // block)) if row is not None else 0))


def class_prior(y: torch.Tensor, soft: SoftTargets | None, n_classes: int) -> torch.Tensor:
    """Each class's mean target over the training rows (its soft scores where given, else its frequency)."""
    if soft is None:
        counts = torch.bincount(y.cpu(), minlength=n_classes).double()
    else:
        counts = torch.zeros(n_classes, dtype=torch.float64)
        counts.index_add_(0, torch.from_numpy(soft.indices), torch.from_numpy(soft.values).double())
    return counts / max(1, len(y))


def init_output_bias(bias: torch.Tensor, prior: torch.Tensor, loss: str) -> None:
    """Start the output layer's bias at the training targets' log-odds (bce) or log-frequencies (ce, soft_ce).
    Adam moves a weight about `lr` per step, so from 0 a rare answer's bias (log-odds near -9 among VQAv2's 3,129
    answers) would take thousands of steps to reach: a BCE head otherwise spends its epochs on the priors
    (measured: 45 against 66 held-out VQA accuracy on the synthetic VQAv2 cache at scale 0.2)."""
    p = prior.clamp(1e-6, 1 - 1e-6)
    value = torch.log(p / (1 - p)) if loss == "bce" else torch.log(p)
    with torch.no_grad():
        bias.copy_(value.to(bias.dtype))


def seeded(seed: int, build: Callable[[], nn.Module]) -> tuple[nn.Module, torch.Tensor]:
    """(module built from `seed`, the random state after it): a member's initial weights and dropout stream are
    the same whether it trains alone or in a group."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build()
        return net, torch.get_rng_state()
