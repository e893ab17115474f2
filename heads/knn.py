"""Weighted k-nearest neighbours over a feature cache: DINO's kNN evaluation, with VQA's soft scores as votes.

Features are L2-normalised and compared by cosine; each of the k most similar training rows votes for its label
(or, fitted with `soft_targets`, for its answers with their soft scores) with weight exp(similarity / T), T = 0.07
and k = 20 as in DINO's `eval_knn.py`. Fitting stores the normalised training features: zero epochs.

The search is exact and brute force, in blocks: a chunk of `query_rows` queries against one training block at a
time, keeping a running top k, so memory stays query_rows x block_rows whatever the training size. On a factorised
view the image part's similarities are computed once per (query image, training image) pair and shared by their
questions, and each part is normalised on its own, so image and question weigh the same (the 8,192-d image part
of `itc` would otherwise drown its 256-d question). FAISS (`pip install faiss-cpu`) searches plain matrices where
`backend` asks for it, and by default ("auto") where it is installed (faster there: benchmarks/token_heads.py).
"""

from __future__ import annotations

import numpy as np
import torch

from ._base import HeadBase
from .factorized import ArrayRows, LazyImage, Parts, image_blocks

FAISS_HINT = "pip install faiss-cpu (or: pip install 'featcache[knn]')"


class KNNHead(HeadBase):
    """Weighted k-nearest-neighbour classifier (brute force, exact).

    The fitted head holds the training features and their votes (sparse): the image part as given (a view's
    float16, the view's own array where every image is used; normalised a block at a time as the search reads it),
    the question part normalised in float32. On Easy-VQA's itc view, 4,000 images x 8,192 and 38,575 questions x
    256 values, about 105 MB on disk when saved.

    Parameters
    ----------
    k : neighbours that vote (fewer where the training data has fewer rows).
    temperature : votes are weighted by exp(similarity / temperature).
    metric : "cosine" (features L2-normalised: per part on a factorised view) or "dot" (used as they are).
    normalize : "token" to L2-normalise each query token first (the image part of a token view), or None.
    backend : "torch", "faiss" (plain matrices only; needs faiss-cpu) or "auto" (FAISS for a plain matrix where it
        is installed, else torch).
    query_rows, block_rows : queries per chunk and training rows per block of the search (memory: their product
        in float32).
    num_threads : torch CPU threads; None: the idle cores (heads.threads.free_cores).
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, metric: str = "cosine", normalize: str | None = "token",
                 backend: str = "auto", query_rows: int = 1024, block_rows: int = 16384,
                 num_threads: int | None = None) -> None:
        self.k = k
        self.temperature = temperature
        self.metric = metric
        self.normalize = normalize
        self.backend = backend
        self.query_rows = query_rows
        self.block_rows = block_rows
        self.num_threads = num_threads

    # -- fitting -------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        whole = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1  # noqa: E731
        checks = [("k", whole(self.k), "a whole number >= 1"),
                  ("temperature", isinstance(self.temperature, (int, float)) and np.isfinite(self.temperature)
                   and self.temperature > 0, "a positive number"),
                  ("metric", self.metric in ("cosine", "dot"), "cosine or dot"),
                  ("normalize", self.normalize in (None, "token"), "None or 'token'"),
                  ("backend", self.backend in ("auto", "torch", "faiss"), "auto, torch or faiss"),
                  ("query_rows", whole(self.query_rows), "a whole number >= 1"),
                  ("block_rows", whole(self.block_rows), "a whole number >= 1")]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")

    def fit(self, X, y, soft_targets=None) -> "KNNHead":
        """Store X normalised, with y (or the soft scores, one {answer: score} per row) as each row's votes."""
        self._check_params()
        X, y_idx = self._validate_fit(X, y)
        soft = self._soft(soft_targets, y_idx)
        from .threads import torch_threads

        with torch_threads(self.num_threads):
            self.train_ = self._normalised(self._parts(X), self._owns_question(X), raw_image=True)
        self.raw_image_ = self.train_.image is not None
        n = len(y_idx)
        if soft is None:
            indptr, indices = np.arange(n + 1, dtype=np.int64), np.asarray(y_idx, dtype=np.int64)
            values = np.ones(n, dtype=np.float32)
        else:
            indptr, indices, values = soft.indptr, soft.indices, soft.values
        self.votes_ = (torch.from_numpy(indptr), torch.from_numpy(indices), torch.from_numpy(values))
        self.class_prior_ = np.bincount(indices, weights=values, minlength=len(self.classes_)) / max(1, n)
        self.n_samples_fit_ = n
        return self

    def _normalised(self, parts: Parts, owned_question: bool = False, raw_image: bool = False) -> Parts:
        """Parts in float32, token-normalised, then (cosine) each part L2-normalised and scaled so a row of two
        parts has norm 1: the similarity is the mean of the image and question cosines. Only the images the rows
        use are kept (a validation subset shares them all); `owned_question`: the question part is a private copy
        already (normalised in place, not copied again). `raw_image`: the image part is kept as given (a view's
        float16, shared where every image is used) and normalised a block at a time as the search reads it
        (`_image_normalised`): VQAv2's training images would be 2.7 GB as normalised float32."""
        question = parts.question
        if question is not None and not (owned_question and question.dtype == torch.float32):
            question = question.to(torch.float32, copy=True)
        image, row = None, None
        if parts.image is not None:
            used, row = torch.unique(parts.row, return_inverse=True)
            every = len(used) == len(parts.image)
            if raw_image and isinstance(parts.image, LazyImage) and isinstance(parts.image.rows, ArrayRows):
                array = parts.image.rows.array  # (in memory, as stored)
                if 2 * len(used) >= len(array):  # most images used (a training split): shared, rows as given
                    image, row = torch.from_numpy(np.ascontiguousarray(array)), parts.row  # (not 1.4 GB copied)
                else:
                    image = torch.from_numpy(array[used.numpy()])
            elif parts.streamed:  # the search reads the training features many times: held in memory
                image = parts.image.gather(used.numpy())
            else:
                image = parts.image if every else parts.image[used]
            if not raw_image:
                image = self._image_normalised(image, parts.image_tokens, question is not None)
        if self.metric == "cosine" and question is not None:
            share = 0.5 ** 0.5 if image is not None else 1.0
            question.div_(question.norm(dim=1, keepdim=True).clamp_min(1e-12)).mul_(share)
        return Parts(image, row, question, parts.image_tokens)

    def _image_normalised(self, image: torch.Tensor, tokens: int, with_question: bool) -> torch.Tensor:
        """Image rows in float32 (a copy), each token L2-normalised (normalize="token"), then (cosine) each row
        scaled to norm 1/sqrt(2) beside a question part, else 1: row by row, so a block gives the numbers the whole
        part would."""
        image = image.to(torch.float32, copy=True)
        if self.normalize == "token" and tokens > 1:
            n, width = image.shape
            view = image.view(n, tokens, width // tokens)
            view.div_(view.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        if self.metric == "cosine":
            share = 0.5 ** 0.5 if with_question else 1.0
            image.div_(image.norm(dim=1, keepdim=True).clamp_min(1e-12)).mul_(share)
        return image

    # -- search --------------------------------------------------------------------------------------
    def kneighbors(self, X, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, training row indices) of each row's k nearest training rows, most similar first."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        X = self._validate_predict(X)
        k = min(self.k if k is None else int(k), self.n_samples_fit_)
        from .threads import torch_threads

        with torch_threads(self.num_threads):
            queries = self._normalised(self._parts(X), self._owns_question(X))
            if self._use_faiss(queries):
                _, idx = _faiss_search(self.train_.question.numpy(), queries.question.numpy(), k)
            else:
                _, idx = self._search(queries, k)
            sims = self._rescore(queries, idx)
        order = np.argsort(-sims, axis=1, kind="stable")
        return np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)

    @torch.no_grad()
    def _rescore(self, queries: Parts, idx: np.ndarray, neighbours: int = 1280) -> np.ndarray:
        """The found neighbours' similarities again in float64, one query at a time: float32 products round
        differently in different batch sizes, and a row's probabilities must not depend on the rows beside it.
        Queries go `neighbours // k` at a time (their neighbours' images in float64: 1,280 x 8,192 is 84 MB)."""
        train, out = self.train_, np.empty(idx.shape, dtype=np.float64)
        chunk = max(1, neighbours // max(1, idx.shape[1]))
        for start in range(0, queries.n, chunk):
            rows = torch.arange(start, min(start + chunk, queries.n))
            nb = torch.from_numpy(idx[start:start + chunk])
            s = torch.zeros(nb.shape, dtype=torch.float64)
            if queries.image is not None:
                q_img = queries.image[queries.row[rows]].double()
                used, inverse = torch.unique(train.row[nb], return_inverse=True)
                t_img = self._train_image(train.image[used]).double()[inverse]
                s += torch.einsum("nd,nkd->nk", q_img, t_img)
            if queries.question is not None:
                s += torch.einsum("nd,nkd->nk", queries.question[rows].double(), train.question[nb].double())
            out[start:start + chunk] = s.numpy()
        return out

    def _use_faiss(self, queries: Parts) -> bool:
        """FAISS where asked, or ("auto") where installed and the features are a plain matrix: its exact search
        took 37 s against torch's 59 s for 100k x 100k at 256-d on 2 cores (benchmarks/token_heads.py). A factorised
        view stays with torch, which computes image similarities once per image pair."""
        plain = self.train_.image is None and queries.image is None
        if self.backend == "auto":
            return plain and _faiss_installed()
        if self.backend == "faiss" and not plain:
            raise ValueError("backend='faiss' searches plain matrices; a factorised view searches with "
                             "backend='torch' (it computes image similarities once per image pair)")
        return self.backend == "faiss"

    def _train_image(self, image: torch.Tensor) -> torch.Tensor:
        """Training image rows as the search compares them (normalised here where fit kept them as given)."""
        if not getattr(self, "raw_image_", False):
            return image
        return self._image_normalised(image, self.train_.image_tokens, self.train_.question is not None)

    @torch.no_grad()
    def _search(self, queries: Parts, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's running top k over the training blocks in order (each training block normalised once, then
        compared with every chunk of queries)."""
        train = self.train_
        out_s = np.empty((queries.n, k), dtype=np.float32)
        out_i = np.empty((queries.n, k), dtype=np.int64)
        if queries.n == 0:
            return out_s, out_i
        chunks = []
        for q_idx, q_block in image_blocks(queries, _images_per_block(queries, self.query_rows)):
            for start in range(0, len(q_idx), self.query_rows):
                chunk = q_block.subset(torch.arange(start, min(start + self.query_rows, len(q_idx))))
                chunks.append([q_idx[start:start + self.query_rows], chunk, None, None])
        for t_idx, t_block in image_blocks(train, _images_per_block(train, self.block_rows)):
            if t_block.image is not None:
                t_block = Parts(self._train_image(t_block.image), t_block.row, t_block.question, t_block.image_tokens)
            for entry in chunks:
                _, chunk, best_s, best_i = entry
                s = _similarity(chunk, t_block)
                top_s, top_j = torch.topk(s, min(k, s.shape[1]), dim=1)
                top_i = torch.from_numpy(t_idx)[top_j]
                if best_s is not None:
                    top_s, pick = torch.topk(torch.cat([best_s, top_s], 1), k, dim=1)
                    top_i = torch.gather(torch.cat([best_i, top_i], 1), 1, pick)
                entry[2], entry[3] = top_s, top_i
        for rows, _, best_s, best_i in chunks:
            out_s[rows], out_i[rows] = best_s.numpy(), best_i.numpy()
        return out_s, out_i

    # -- voting --------------------------------------------------------------------------------------
    def proba_from_neighbors(self, similarities: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Class probabilities from the first `k` of each row's neighbours (a sweep searches once with its largest
        k and scores every k from the same search): votes exp(s / T) per neighbour times its targets, normalised.
        A row whose neighbours vote for nothing (all their answers outside the classes) gets the class prior."""
        k = min(self.k, similarities.shape[1])
        s = torch.from_numpy(np.ascontiguousarray(similarities[:, :k], dtype=np.float64))
        weights = torch.exp((s - s[:, :1]) / self.temperature)  # (the top similarity factored out: no overflow)
        indptr, indices_, values = self.votes_
        idx = torch.from_numpy(np.ascontiguousarray(indices[:, :k]))
        starts, lengths = indptr[idx], indptr[idx + 1] - indptr[idx]
        flat_len = lengths.reshape(-1)
        row = torch.repeat_interleave(torch.arange(len(idx)).repeat_interleave(k), flat_len)
        offsets = torch.repeat_interleave(starts.reshape(-1) - torch.cumsum(flat_len, 0) + flat_len, flat_len)
        pick = offsets + torch.arange(int(flat_len.sum()))
        w = torch.repeat_interleave(weights.reshape(-1), flat_len) * values[pick].double()
        votes = torch.zeros((len(idx), len(self.classes_)), dtype=torch.float64)
        votes.index_put_((row, indices_[pick]), w, accumulate=True)
        total = votes.sum(1, keepdim=True)
        empty = (total[:, 0] <= 0).numpy()
        proba = votes.div_(total.clamp_min(1e-300)).numpy()  # (in place: one rows x classes matrix, not two)
        if empty.any():
            proba[empty] = self.class_prior_ / max(self.class_prior_.sum(), 1e-300)
        return proba

    def predict_proba(self, X) -> np.ndarray:
        return self._finite(self.proba_from_neighbors(*self.kneighbors(X)))

    # -- safe persistence ----------------------------------------------------------------------------
    def _fitted_state(self) -> tuple[dict, dict]:
        attrs, tensors = super()._fitted_state()
        attrs.update(n_samples_fit=self.n_samples_fit_, image_tokens=self.train_.image_tokens,
                     raw_image=bool(getattr(self, "raw_image_", False)))
        for name, t in (("image", self.train_.image), ("image_row", self.train_.row),
                        ("question", self.train_.question)):
            if t is not None:
                tensors[f"train.{name}"] = t.contiguous()
        tensors.update({"votes.indptr": self.votes_[0], "votes.indices": self.votes_[1],
                        "votes.values": self.votes_[2], "class_prior": torch.from_numpy(self.class_prior_)})
        return attrs, tensors

    def _restore(self, attrs: dict, tensors: dict) -> None:
        super()._restore(attrs, tensors)
        self.n_samples_fit_ = int(attrs["n_samples_fit"])
        image, row, question = (tensors.get(f"train.{n}") for n in ("image", "image_row", "question"))
        self.train_ = Parts(image, row, question, int(attrs["image_tokens"]))
        self.raw_image_ = bool(attrs.get("raw_image", False))  # (older saved heads hold them normalised)
        self.votes_ = (tensors["votes.indptr"], tensors["votes.indices"], tensors["votes.values"])
        self.class_prior_ = tensors["class_prior"].numpy()
        n_votes = len(self.votes_[1])
        if (self.train_.n != self.n_samples_fit_ or len(self.votes_[0]) != self.n_samples_fit_ + 1
                or int(self.votes_[0][-1]) != n_votes or len(self.class_prior_) != len(self.classes_)
                or (n_votes and int(self.votes_[1].max()) >= len(self.classes_))
                or (row is not None and (len(row) and int(row.max()) >= len(image)))):
            raise ValueError("the stored training features, votes and classes do not agree")


def _images_per_block(parts: Parts, rows: int) -> int:
    """Images per block so a block holds about `rows` rows (a plain matrix: `rows` rows)."""
    if parts.image is None or not parts.n:
        return max(1, rows)
    return max(1, int(rows * len(parts.image) / parts.n))


def _similarity(q: Parts, t: Parts) -> torch.Tensor:
    """(queries, training rows) dot products of the normalised parts: image part once per image pair."""
    s = None
    if q.image is not None:
        g = q.image @ t.image.T
        s = g.index_select(0, q.row).index_select(1, t.row)
    if q.question is not None:
        sq = q.question @ t.question.T
        s = sq if s is None else s.add_(sq)
    return s


def _faiss_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def _faiss_search(train: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        import faiss
    except ImportError:
        raise ImportError(f"backend='faiss' needs faiss: {FAISS_HINT}") from None
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(np.ascontiguousarray(train, dtype=np.float32))
    sims, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return sims, idx.astype(np.int64)
