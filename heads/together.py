"""Fit several minibatch heads in one pass over the same features (heads/minibatch.py), or one head alone.

`fit_together(heads, X, y)` fits every head as `head.fit(X, y)` would with the same validation rows, but reads,
converts and normalises each block of features once for all of them. The heads must agree on what shapes the
shared data: input normalisation, standardisation, batch size, block size, seed, device and precision
(`together_key`); `group_heads` sorts a list of candidates into such groups.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from .factorized import Parts, Standardizer, token_normalize
from .minibatch import Member, class_prior, init_output_bias, train_together, validation_split
from .precision import resolve_precision


def together_key(head) -> tuple:
    """What heads must share to train in one pass (`_input_kind`: how X is cut into parts; the attention probe
    reads a plain matrix as tokens, the other heads as a question part)."""
    return (getattr(head, "_input_kind", "parts"), getattr(head, "normalize", None), bool(head.standardize),
            int(head.batch_size), int(head.block_images), head.random_state, str(head.device), head.precision,
            head.validation_fraction)


def group_heads(heads: list) -> list[list[int]]:
    """Indices of `heads` grouped by `together_key` (heads that cannot train in one pass stay alone)."""
    groups: dict = {}
    for i, head in enumerate(heads):
        key = together_key(head) if hasattr(head, "_member") else ("alone", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def prepared_parts(head, X) -> tuple[Parts, Standardizer | None]:
    """X's parts normalised and standardised as `head` asks (a private float32 copy is changed in place)."""
    parts = head._parts(X)
    owned, owned_question = head._owns_image(X), head._owns_question(X)
    if getattr(head, "normalize", None) == "token":
        parts = token_normalize(parts, inplace=owned, inplace_question=owned_question)
        owned, owned_question = not parts.streamed, parts.question is not None
    scaler = None
    if head.standardize:
        scaler = Standardizer().fit(parts, head.block_images)
        if getattr(head, "_input_kind", "parts") == "tokens":
            scaler = scaler.shared_over_tokens(parts.image_tokens)
        parts = scaler.transform(parts, inplace=owned, inplace_question=owned_question)
    return parts, scaler


class EpochBar:
    """One line per long fit: epoch, members still training, best validation score, seconds per epoch."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.bar = None
        if enabled:  # (made before the first epoch, so its rate and ETA count that epoch's time)
            from tqdm.auto import tqdm

            self.bar = tqdm(total=None, desc=label, unit="epoch", leave=False, file=sys.stderr)

    def __call__(self, epoch: int, epochs: int, members: list[Member]) -> None:
        if self.bar is None:
            return
        self.bar.total = epochs
        active = sum(not m.done for m in members)
        best = max(m.best_score for m in members)
        last = [m.history[-1]["train_loss"] for m in members if m.history]
        self.bar.set_postfix_str(f"loss {min(last):.4f}, best val {best:.4f}, {active}/{len(members)} training",
                                 refresh=False)
        self.bar.update(1)
        if active == 0:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def fit_together(heads: list, X, y, soft_targets=None, validation_rows: np.ndarray | None = None,
                 progress: str | None = None, validated_labels: np.ndarray | None = None) -> list:
    """Fit `heads` (minibatch heads with one `together_key`) on X, y in one pass; each ends as `head.fit` would
    leave it with the validation rows `validation_rows` (None: each head's image-disjoint validation_fraction).
    `progress`: a label for an epoch bar on stderr. `validated_labels`: y as indices into heads[0].classes_ where
    heads[0]._validate_fit(X, y) has just run (X is then not checked twice: a pass over VQAv2's features).
    Returns the heads."""
    from .threads import torch_threads

    first = heads[0]
    keys = {together_key(h) for h in heads}
    if len(keys) > 1:
        raise ValueError(f"these heads cannot train in one pass (they differ in {sorted(map(str, keys))}); "
                         f"group them with heads.together.group_heads")
    X, y_idx = first._validate_fit(X, y) if validated_labels is None else (X, validated_labels)
    soft = first._soft(soft_targets, y_idx)
    for head in heads:
        head._check_params()
        if head is not first:
            head.n_features_in_, head.classes_, head.input_layout_ = first.n_features_in_, first.classes_, \
                first.input_layout_
            if hasattr(first, "feature_names_in_"):
                head.feature_names_in_ = first.feature_names_in_
        head.loss_function_ = head._resolved_loss(soft)
        head.precision_ = resolve_precision(head.precision, head.device)
    seed = 0 if first.random_state is None else first.random_state
    dev = first._device()
    with torch_threads(first.num_threads):
        parts, scaler = prepared_parts(first, X)
        rng = np.random.default_rng(seed)
        if validation_rows is not None:
            val_idx = np.unique(np.asarray(validation_rows, dtype=np.int64))
            train_idx = np.setdiff1d(np.arange(parts.n), val_idx)
        else:
            row = parts.row.numpy() if parts.row is not None else None
            train_idx, val_idx = validation_split(row, parts.n, first.validation_fraction or 0.0, rng,
                                                  min_train=len(first.classes_))
        y_idx = np.asarray(y_idx)
        train = _to(parts.subset(torch.from_numpy(train_idx)), dev)
        val = _to(parts.subset(torch.from_numpy(val_idx)), dev) if len(val_idx) else None
        widths = parts.widths()
        del parts  # (the training part holds what it needs: the whole question part is not kept twice)
        y_train = torch.from_numpy(y_idx[train_idx]).to(dev)
        y_val = torch.from_numpy(y_idx[val_idx]).to(dev) if len(val_idx) else None
        soft_train = soft.take(train_idx) if soft is not None else None
        soft_val = soft.take(val_idx) if soft is not None and len(val_idx) else None
        prior = class_prior(y_train, soft_train, len(first.classes_))
        members = [head._member(widths, len(train_idx), seed, dev) for head in heads]
        for m in members:
            init_output_bias(m.output_bias(), prior, m.loss)
        bar = EpochBar(progress or "", progress is not None)
        try:
            train_together(members, train, y_train, soft_train, val, y_val, soft_val,
                           batch_size=first.batch_size, block=first.block_images, seed=seed,
                           bf16=first.precision_ == "bf16", skip_single=any(h._skips_single() for h in heads),
                           progress=bar)
        finally:
            bar.close()
        for head, m in zip(heads, members):
            head.scaler_ = scaler
            head._adopt(m, val is not None)
    return heads


def _to(parts: Parts, dev: torch.device) -> Parts:
    mv = lambda t: None if t is None else t.to(dev)  # noqa: E731
    return Parts(parts.map_image(mv).image, mv(parts.row), mv(parts.question), parts.image_tokens)
