"""Attention-pooling probe over BLIP-2's 32 query tokens (CAPI's `AttnPoolClassifier`), conditioned on the question.

BLIP-2's Q-Former output is a set of 32 query states. `full` flattens them into one 24,576-d vector (a huge first
layer), `pooled` averages them (which query saw what is lost). This head lets a learned query attend over the
tokens: keys and values are projected once per image, the query is a learned vector plus a projection of the
question's text feature (zero at the start, so it begins as CAPI's probe), and the attended vector, with the
question feature, goes to a linear layer (or a small MLP). There is no positional input, so the probe is invariant
to the order of the tokens, as the Q-Former's queries carry no order either.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._base import check_memory, check_minibatch_params
from .factorized import DEFAULT_BLOCK_IMAGES, Parts
from .minibatch import Member, seeded
from .nethead import NetHead

HEAD_WIDTH = 64
"""Channels per attention head (CAPI's: embed_dim // 64 heads)."""


class AttentionPoolNet(nn.Module):
    """Tokens -> keys, values (once per image); learned queries (+ the question's projection) attend;
    [pooled, question] -> hidden layers (ReLU, Dropout) -> class logits (`rest`, its last layer the output)."""

    def __init__(self, token_width: int, n_tokens: int, question_width: int, embed_dim: int, num_queries: int,
                 hidden_sizes: tuple[int, ...], n_classes: int, dropout: float) -> None:
        super().__init__()
        self.n_tokens, self.embed_dim, self.num_queries = n_tokens, embed_dim, num_queries
        self.n_heads = embed_dim // HEAD_WIDTH
        self.query = nn.Parameter(torch.empty(num_queries, embed_dim))
        self.kv = nn.Linear(token_width, 2 * embed_dim)
        nn.init.trunc_normal_(self.query, std=0.02)
        nn.init.trunc_normal_(self.kv.weight, std=0.02)
        nn.init.zeros_(self.kv.bias)
        self.question_query = nn.Linear(question_width, embed_dim, bias=False) if question_width else None
        if self.question_query is not None:
            nn.init.zeros_(self.question_query.weight)
        layers: list[nn.Module] = []
        width = num_queries * embed_dim + question_width
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        nn.init.trunc_normal_(layers[-1].weight, std=0.02)
        self.rest = nn.Sequential(*layers)

    def forward(self, parts: Parts) -> torch.Tensor:
        return self.rest(self.pooled(parts))

    def pooled(self, parts: Parts) -> torch.Tensor:
        """[attended tokens, question] per row: what the classifier layers read."""
        n_images, width = parts.image.shape
        tokens = parts.image.reshape(n_images, self.n_tokens, width // self.n_tokens)
        k, v = self.kv(tokens).chunk(2, dim=-1)  # (images, tokens, embed): once per image

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(len(t), t.shape[1], self.n_heads, HEAD_WIDTH).transpose(1, 2)

        if parts.question is None:  # one attention per image, shared by its rows
            q = self.query.expand(n_images, -1, -1)
            out = nn.functional.scaled_dot_product_attention(heads(q), heads(k), heads(v))
            return out.transpose(1, 2).reshape(n_images, -1).index_select(0, parts.row)
        question = parts.question
        q = self.query[None] + self.question_query(question)[:, None, :]  # (rows, queries, embed)
        # each image's rows side by side as one longer query sequence against that image's keys and values, padded
        # to the most rows an image has: gathering keys and values per row instead cost 1.5x the MLP's epoch
        row = parts.row
        counts = torch.bincount(row, minlength=n_images)
        width = int(counts.max()) if len(row) else 1
        order = torch.argsort(row, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = row[order] * width + (torch.arange(len(row), device=row.device) - starts[row[order]])
        padded = q.new_zeros((n_images * width, self.num_queries, self.embed_dim)).index_copy(0, slot, q[order])
        padded = padded.reshape(n_images, width * self.num_queries, self.embed_dim)
        out = nn.functional.scaled_dot_product_attention(heads(padded), heads(k), heads(v))
        out = out.transpose(1, 2).reshape(n_images * width, self.num_queries * self.embed_dim)
        pooled = out.index_select(0, slot).index_select(0, torch.argsort(order))  # back in the rows' order
        return torch.cat([pooled, question], dim=1)


class AttentionPoolHead(NetHead):
    """Attention-pooling probe: learned queries attend over the image part's tokens.

    Accepts a token view of a cache (`itc`: 32 x 256 `query_proj` tokens, `full`: 32 x 768 query states, `mm`,
    `image_proj`), factorised or plain, the question's text feature conditioning the queries where the view has
    one; or a plain matrix (n, tokens x width) with `tokens` saying how many tokens a row holds (default 1).

    Parameters
    ----------
    embed_dim : attention width (None: the token width rounded up to a multiple of 64); heads of 64 channels.
    num_queries : learned queries (their attended vectors are concatenated).
    hidden_sizes : hidden layers after the pooling ((): a linear classifier, CAPI's probe); dropout after each.
    tokens : tokens per row of a plain matrix (a factorised view says it itself).
    normalize, standardize : as for MLPHead: "token" L2-normalises each token and the question vector;
        standardize scales every feature to zero mean / unit variance over the training rows.
    lr, weight_decay, max_epochs, batch_size, validation_fraction, patience, loss, precision, device, num_threads,
    random_state, verbose, block_images : as for MLPHead (AdamW, cosine schedule over the run, early stopping on
        whole held-out images, the best epoch kept; trained in one pass with other heads by heads.together).
    """

    def __init__(self, embed_dim: int | None = None, num_queries: int = 1, hidden_sizes: tuple[int, ...] = (),
                 dropout: float = 0.0, tokens: int | None = None, normalize: str | None = None,
                 standardize: bool = True, lr: float = 1e-3, weight_decay: float = 1e-4,
                 max_epochs: int = 30, batch_size: int = 256, validation_fraction: float = 0.1, patience: int = 4,
                 loss: str = "auto", precision: str = "auto", device: str = "cpu", num_threads: int | None = None,
                 random_state: int | None = 0, verbose: bool = False,
                 block_images: int = DEFAULT_BLOCK_IMAGES) -> None:
        self.embed_dim = embed_dim
        self.num_queries = num_queries
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.tokens = tokens
        self.normalize = normalize
        self.standardize = standardize
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.loss = loss
        self.precision = precision
        self.device = device
        self.num_threads = num_threads
        self.random_state = random_state
        self.verbose = verbose
        self.block_images = block_images

    _input_kind = "tokens"

    def fit(self, X, y, soft_targets=None) -> "AttentionPoolHead":
        """Fit on labels y; with `soft_targets` (one {answer: score} per row) on soft scores (see MLPHead's `loss`)."""
        from .together import fit_together

        return fit_together([self], X, y, soft_targets, progress="attnpool" if self.verbose else None)[0]

    def _validate_fit(self, X, y):
        X, y_idx = super()._validate_fit(X, y)
        if self.input_layout_[0] == 0:  # a plain matrix: all of it is tokens
            tokens = 1 if self.tokens is None else self.tokens
            if not (isinstance(tokens, (int, np.integer)) and tokens >= 1 and X.shape[1] % tokens == 0):
                raise ValueError(f"tokens must be a whole number >= 1 dividing the {X.shape[1]} features, "
                                 f"got {self.tokens!r}")
            self.input_layout_ = (X.shape[1], int(tokens))
        return X, y_idx

    # -- what heads/together.py asks of a minibatch head ---------------------------------------------
    def _check_params(self) -> None:
        if self.normalize not in (None, "token"):
            raise ValueError(f"normalize must be None or 'token', got {self.normalize!r}")
        whole = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1  # noqa: E731
        if not (self.embed_dim is None or (whole(self.embed_dim) and self.embed_dim % HEAD_WIDTH == 0)):
            raise ValueError(f"embed_dim must be None or a multiple of {HEAD_WIDTH}, got {self.embed_dim!r}")
        if not whole(self.num_queries):
            raise ValueError(f"num_queries must be a whole number >= 1, got {self.num_queries!r}")
        if not all(whole(h) for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be whole numbers >= 1, got {self.hidden_sizes!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        check_minibatch_params(self)

    def _net(self, image_width: int, question_width: int) -> AttentionPoolNet:
        n_tokens = self.input_layout_[1]
        token_width = image_width // n_tokens
        embed = self.embed_dim or max(HEAD_WIDTH, -(-token_width // HEAD_WIDTH) * HEAD_WIDTH)
        return AttentionPoolNet(token_width, n_tokens, question_width, embed, self.num_queries,
                                tuple(self.hidden_sizes), len(self.classes_), self.dropout)

    def _member(self, widths: tuple[int, int], n_train: int, seed: int, dev: torch.device) -> Member:
        check_memory(lambda: self._net(*widths), f"embed_dim {self.embed_dim}, hidden_sizes {tuple(self.hidden_sizes)}")
        net, state = seeded(seed, lambda: self._net(*widths).to(dev))
        return Member(net, self.loss_function_, self.lr, self.weight_decay, scheduler="cosine_run", eta_min=0.0,
                      max_epochs=self.max_epochs, patience=self.patience, rng_state=state, name="attnpool")

    # -- prediction ----------------------------------------------------------------------------------
    def transform_pooled(self, X) -> np.ndarray:
        """The attended vector (with the question feature) per row: what the classifier reads."""
        X = self._validate_predict(X)
        return self._apply(X, self.net_.pooled, self.net_.rest[0].in_features).astype(np.float32)

    # -- safe persistence ----------------------------------------------------------------------------
    def _build_net(self) -> AttentionPoolNet:
        image, tokens = self.input_layout_
        if not (isinstance(tokens, int) and tokens >= 1 and image % tokens == 0):
            raise ValueError(f"input layout {self.input_layout_} does not split into tokens")
        return self._net(*self._widths())
