"""The factorised first layer: image features projected once per image, gathered per question.

For a linear map W = [W_img, W_q], X W^T = (image_part W_img^T)[image_row] + question_part W_q^T.
The gather's backward is a scatter-add, so the gradient for W_img is the sum over each image's
questions, as it should be, at 1/(questions per image) of the cost.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from featcache.cache.views import FactorizedFeatures, LazyImageRows

DEFAULT_BLOCK_IMAGES = 4096
"""Images per block: heads sum losses, statistics and predictions block by block, in memory and when
streaming alike (so the two give the same numbers); a streamed fit holds one block of images."""
PREDICT_BLOCK_IMAGES = 512
"""Images per block when predicting (in float64): VQAv2 has ~5.4 questions per image, so a 4,096-image block is
~22k rows, and the paper's MLP's first layer alone would hold 22k x 5,012 float64 activations (0.9 GB) twice."""


class ArrayRows:
    """An in-memory image part left in its stored dtype (the cache's float16) and made float32 a block at a time,
    as a streamed one is read: a float32 copy of VQAv2's 82k x 8192 image part would add 2.7 GB to the 1.4 GB
    the view holds. Same rows, same numbers, as converting it whole."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def __len__(self) -> int:
        return len(self.array)

    def take(self, index) -> "ArrayRows":
        index = np.asarray(index)
        if len(index) == len(self.array) and np.array_equal(index, np.arange(len(self.array))):
            return self
        return ArrayRows(self.array[index])

    def load(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows start:stop as a new float32 array (never a view of the stored one: the transforms a block goes
        through work on it in place)."""
        return np.array(self.array[start:stop], dtype=np.float32, copy=True)


class LazyImage:
    """A streamed image part on the torch side: cache rows plus the row-wise transforms (dtype,
    normalisation, standardisation) to apply once a block is read."""

    def __init__(self, rows: LazyImageRows, fns: tuple = ()) -> None:
        self.rows, self.fns = rows, fns

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape

    def __len__(self) -> int:
        return len(self.rows)

    def map(self, fn) -> "LazyImage":
        return LazyImage(self.rows, self.fns + (fn,))

    def take(self, index) -> "LazyImage":
        return LazyImage(self.rows.take(np.asarray(index)), self.fns)

    def load(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        t = torch.from_numpy(self.rows.load(start, stop))
        for fn in self.fns:
            t = fn(t)
        return t

    def gather(self, index: np.ndarray, block: int = DEFAULT_BLOCK_IMAGES) -> torch.Tensor:
        """Rows `index` (increasing) loaded into one tensor a block at a time: memory holds the result and one
        block, not a copy of the rows in their stored form beside it."""
        index = np.asarray(index)
        out = None
        for start in range(0, len(index), block):
            t = self.take(index[start:start + block]).load()
            if out is None:
                out = torch.empty((len(index), *t.shape[1:]), dtype=t.dtype)
            out[start:start + len(t)] = t
        return out if out is not None else self.take(index).load()


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
            if X.streamed:
                image = LazyImage(X.image_part)
            elif np.asarray(X.image_part).dtype != np.float32:  # kept as stored, converted block by block
                image = LazyImage(ArrayRows(np.asarray(X.image_part)))
            else:
                image = torch.from_numpy(np.asarray(X.image_part, dtype=np.float32))
            return cls(image, torch.from_numpy(X.image_row), q, X.image_tokens)
        matrix = torch.from_numpy(np.asarray(X, dtype=np.float32))
        if not image_width:
            return cls(None, None, matrix)
        q = matrix[:, image_width:] if matrix.shape[1] > image_width else None
        return cls(matrix[:, :image_width], torch.arange(len(matrix)), q, image_tokens)

    @property
    def streamed(self) -> bool:
        return isinstance(self.image, LazyImage)

    def map_image(self, fn) -> "Parts":
        """fn (row-wise) applied to the image part now, or when a block of it is read."""
        if self.image is None:
            return self
        image = self.image.map(fn) if self.streamed else fn(self.image)
        return Parts(image, self.row, self.question, self.image_tokens)

    def to(self, dtype: torch.dtype) -> "Parts":
        q = None if self.question is None else self.question.to(dtype)
        return Parts(self.map_image(lambda t: t.to(dtype)).image, self.row, q, self.image_tokens)

    def subset(self, idx: torch.Tensor) -> "Parts":
        """Rows `idx`, keeping only the images they use (still unread if streamed)."""
        if self.image is None:
            return Parts(None, None, self.question[idx])
        used, inv = torch.unique(self.row[idx], return_inverse=True)
        q = None if self.question is None else self.question[idx]
        if 2 * len(used) >= len(self.image):  # most images (a training part): shared, not copied, the rows kept
            image, inv = self.image, self.row[idx]  # (VQAv2's 82k x 8192 image part is 1.4 GB in float16)
        else:
            image = self.image.take(used.numpy()) if self.streamed else self.image[used]
        return Parts(image, inv, q, self.image_tokens)

    def image_block(self, start: int, stop: int) -> torch.Tensor:
        """Images start:stop as a tensor (read from the cache if streamed)."""
        return self.image.load(start, stop) if self.streamed else self.image[start:stop]

    def widths(self) -> tuple[int, int]:
        return (0 if self.image is None else self.image.shape[1], 0 if self.question is None else self.question.shape[1])

    def counts(self) -> torch.Tensor | None:
        """Questions per image: the weights that make per-image statistics equal per-question ones."""
        return None if self.image is None else torch.bincount(self.row, minlength=len(self.image)).to(torch.float32)


def image_blocks(parts: Parts, block: int = DEFAULT_BLOCK_IMAGES):
    """(question indices, their Parts with the images loaded) per block of `block` consecutive images:
    the unit in which heads stream. Questions come grouped by block; a plain matrix is cut into
    blocks of `block` rows."""
    if parts.image is None:
        for start in range(0, parts.n, block):
            idx = np.arange(start, min(start + block, parts.n))
            yield idx, Parts(None, None, parts.question[idx])
        return
    row = parts.row.cpu().numpy()
    order = np.argsort(row, kind="stable")
    n_images = len(parts.image)
    bounds = np.searchsorted(row[order], np.arange(0, n_images + block, block))
    for b, start in enumerate(range(0, max(n_images, 1), block)):
        idx = order[bounds[b]:bounds[b + 1]]
        if not len(idx):
            continue
        q = None if parts.question is None else _rows(parts.question, idx)
        yield idx, Parts(parts.image_block(start, start + block), torch.from_numpy(row[idx] - start).to(parts.row.device),
                         q, parts.image_tokens)


def _rows(t: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """t[idx]; a view where idx is a run of consecutive rows (questions stored image by image, as caches write
    them), so a search over every block of a training part copies none of it."""
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return t[int(idx[0]):int(idx[-1]) + 1]
    return t[idx]


class _Moments:
    """Weighted per-feature sums of x - shift and (x - shift)^2, made 1,024 rows at a time as float32 products
    (one pass; the shift, the first rows' mean, keeps the squares from cancelling) and added up in float64."""

    ROWS = 1024

    def __init__(self) -> None:
        self.shift = self.sum = self.squares = None
        self.total = 0.0

    def add(self, weights: torch.Tensor, rows: torch.Tensor) -> None:
        for start in range(0, len(rows), self.ROWS):
            x, w = rows[start:start + self.ROWS], weights[start:start + self.ROWS].to(torch.float32)
            if self.shift is None:
                self.shift = (w @ x) / w.sum().clamp_min(1.0)
                self.sum = torch.zeros(rows.shape[1], dtype=torch.float64)
                self.squares = torch.zeros(rows.shape[1], dtype=torch.float64)
            d = x - self.shift
            self.sum += (w @ d).double()
            self.squares += (w @ d.square_()).double()
            self.total += float(w.double().sum())

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shift is None:  # no rows
            return torch.zeros(0), torch.ones(0)
        mean = self.sum / max(self.total, 1e-12)
        var = (self.squares / max(self.total, 1e-12) - mean ** 2).clamp_min(0.0)
        return (mean + self.shift.double()).float(), var.sqrt().clamp_min(1e-6).float()


class Standardizer:
    """Per-feature mean/std over questions, computed and applied per part (images once each, weighted by their
    questions), in one pass over the image part block by block (one read of a streamed one)."""

    def fit(self, parts: Parts, block: int = DEFAULT_BLOCK_IMAGES) -> "Standardizer":
        self.image_ = None
        if parts.image is not None:
            counts, moments = parts.counts(), _Moments()
            for s in range(0, len(parts.image), block):
                moments.add(counts[s:s + block], parts.image_block(s, s + block).to(torch.float32))
            self.image_ = moments.mean_std()
        self.question_ = None
        if parts.question is not None:
            q = parts.question
            self.question_ = (q.mean(0), q.std(0, unbiased=False).clamp_min(1e-6))
        return self

    def shared_over_tokens(self, tokens: int) -> "Standardizer":
        """The image part's statistics pooled over its `tokens` tokens, channel by channel: the same scaling for
        every token, so a head without positions stays invariant to their order."""
        if self.image_ is None or tokens <= 1:
            return self
        mean, std = (t.double().reshape(tokens, -1) for t in self.image_)
        pooled = mean.mean(0)
        var = (std ** 2 + (mean - pooled) ** 2).mean(0)
        out = Standardizer()
        out.question_ = self.question_
        out.image_ = (pooled.repeat(tokens).float(), var.sqrt().clamp_min(1e-6).repeat(tokens).float())
        return out

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

    def transform(self, parts: Parts, inplace: bool = False, inplace_question: bool = False) -> Parts:
        """(x - mean) / std; `inplace` / `inplace_question` overwrite an image / question part the caller owns (no
        second copy)."""
        if self.image_ is not None:
            mean, std = self.image_
            in_place = inplace or parts.streamed  # (a streamed part's blocks are new copies as they are read)

            def scale(t: torch.Tensor) -> torch.Tensor:
                if not in_place:
                    return (t - mean.to(t.dtype)) / std.to(t.dtype)
                for start in range(0, len(t), 8192):
                    t[start:start + 8192].sub_(mean.to(t.dtype)).div_(std.to(t.dtype))
                return t

            parts = parts.map_image(scale)
        q = parts.question
        if self.question_ is not None and inplace_question:
            q.sub_(self.question_[0].to(q.dtype)).div_(self.question_[1].to(q.dtype))
        elif self.question_ is not None:
            q = (q - self.question_[0]) / self.question_[1]
        return Parts(parts.image, parts.row, q, parts.image_tokens)


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


def token_normalize(parts: Parts, inplace: bool = False, inplace_question: bool = False) -> Parts:
    """L2-normalise each query token of the image part and the question vector (the reference recipe).
    `inplace` / `inplace_question` overwrite an image / question part the caller owns (a private copy), so no
    second copy is made."""
    tokens = parts.image_tokens
    inplace = inplace or parts.streamed  # (a streamed part's blocks are new copies as they are read)

    def per_token(img: torch.Tensor) -> torch.Tensor:
        n, width = img.shape
        if inplace:
            for start in range(0, n, 8192):
                block = img[start:start + 8192].view(-1, tokens, width // tokens)
                block.div_(block.norm(dim=-1, keepdim=True).clamp_min(1e-12))  # F.normalize's eps
            return img
        return nn.functional.normalize(img.reshape(n, tokens, width // tokens), dim=-1).reshape(n, width)

    parts = parts.map_image(per_token)
    q = parts.question
    if q is not None and inplace_question:
        q.div_(q.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    elif q is not None:
        q = nn.functional.normalize(q, dim=-1)
    return Parts(parts.image, parts.row, q, parts.image_tokens)
