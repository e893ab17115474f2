"""Synthetic caches in the real format, with real class signal, for benchmarks and tests of heads.

Mimics Easy-VQA: each image has a colour (8) and a shape (3); a question asks for the colour, the
shape, or whether the image has a given colour (yes/no): 13 answers. Image features encode colour and
shape in random directions of every query token plus noise; question features encode the question
type. Colour and shape answers are linearly separable from [image, question]; yes/no needs an
interaction, as on the real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .file import CacheWriter

COLOURS = ["red", "green", "blue", "yellow", "teal", "black", "gray", "brown"]
SHAPES = ["circle", "rectangle", "triangle"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write_synthetic_cache(path: str | Path, n_train_images: int = 4000, n_test_images: int = 1000,
                          n_train_questions: int = 38575, n_test_questions: int = 9673, query_tokens: int = 32,
                          query_dim: int = 768, proj_dim: int = 256, noise: float = 1.0, seed: int = 0) -> Path:
    """Write a cache with Easy-VQA's shapes by default (38,575 / 9,673 questions, 4,000 / 1,000 images)."""
    rng = np.random.default_rng(seed)
    n_img = n_train_images + n_test_images
    colour = rng.integers(0, len(COLOURS), n_img)
    shape = rng.integers(0, len(SHAPES), n_img)
    attrs_img = np.zeros((n_img, len(COLOURS) + len(SHAPES)), np.float32)
    attrs_img[np.arange(n_img), colour] = 1
    attrs_img[np.arange(n_img), len(COLOURS) + shape] = 1

    def image_feats(dim: int, normalise: bool) -> np.ndarray:
        basis = rng.normal(size=(query_tokens, attrs_img.shape[1], dim)).astype(np.float32) / np.sqrt(dim) * 3
        out = np.empty((n_img, query_tokens, dim), np.float16)
        for start in range(0, n_img, 500):  # in slabs, to bound memory
            a = attrs_img[start:start + 500]
            x = np.einsum("na,tad->ntd", a, basis) + noise * rng.normal(size=(len(a), query_tokens, dim)) / np.sqrt(dim) * 3
            out[start:start + 500] = _unit(x) if normalise else x
        return out

    query = image_feats(query_dim, False)
    query_proj = image_feats(proj_dim, True)

    n_q = n_train_questions + n_test_questions
    split_of_q = np.array(["train"] * n_train_questions + ["test"] * n_test_questions, dtype=object)
    image_row = np.concatenate([rng.integers(0, n_train_images, n_train_questions),
                                n_train_images + rng.integers(0, n_test_images, n_test_questions)])
    kind = rng.integers(0, 3, n_q)  # 0 colour, 1 shape, 2 yes/no about a colour
    asked = rng.integers(0, len(COLOURS), n_q)
    c, s = colour[image_row], shape[image_row]
    yes = (asked == c) | (rng.random(n_q) < 0.45)  # balance yes/no
    asked = np.where(yes & (kind == 2), c, asked)
    is_yes = asked == c
    answer = np.where(kind == 0, np.array(COLOURS, dtype=object)[c],
                      np.where(kind == 1, np.array(SHAPES, dtype=object)[s], np.where(is_yes, "yes", "no")))
    text = np.where(kind == 0, "what color is the shape?",
                    np.where(kind == 1, "what shape is in the image?",
                             np.char.add(np.char.add("is there a ", np.array(COLOURS)[asked].astype(str)), " shape?")))
    q_code = np.zeros((n_q, 3 + len(COLOURS)), np.float32)
    q_code[np.arange(n_q), kind] = 1
    q_code[np.arange(n_q), 3 + asked] = (kind == 2)
    text_proj = _unit(q_code @ rng.normal(size=(q_code.shape[1], proj_dim)) * 3
                      + noise * rng.normal(size=(n_q, proj_dim))).astype(np.float16)
    text_cls = (q_code @ rng.normal(size=(q_code.shape[1], query_dim)) * 3
                + noise * rng.normal(size=(n_q, query_dim))).astype(np.float16)

    attrs = {"model_id": "synthetic", "model_class": "synthetic", "model_fingerprint": f"synthetic-{seed}",
             "compute_dtype": "float32", "has_text": True, "preprocessing": "synthetic",
             "dataset_name": "synthetic-easy-vqa-shapes", "dataset_source": "featcache.cache.synthetic", "created": "",
             "dim_query_tokens": query_tokens, "dim_query": query_dim, "dim_proj": proj_dim}
    writer = CacheWriter(path, attrs, n_img, n_q, {"query": query.shape[1:], "query_proj": query_proj.shape[1:]},
                         {"text_proj": (proj_dim,), "text_cls": (query_dim,)}, "float16")
    writer.write("images", 0, {"key": [f"img{i}" for i in range(n_img)], "error": [""] * n_img,
                               "query": query, "query_proj": query_proj})
    writer.write("questions", 0, {"text": list(text), "answer": list(answer), "split": list(split_of_q),
                                  "error": [""] * n_q, "image_row": image_row, "text_proj": text_proj,
                                  "text_cls": text_cls})
    writer.close()
    return Path(path)
