"""A synthetic cache with VQAv2 train's shapes and real structure, written in featcache's format (references
included): 443,757 questions over 82,783 images, 3,129 Zipf-distributed answers, 10 human answers per question.

Each answer has a latent vector; a question's text features are its main answer's latent plus noise, and an
image's query states are the mean latent of its questions' answers plus noise, each mapped into its feature space
by a fixed random projection. So both parts carry the answer, neither alone gives it exactly, and a head that
overfits does worse on held-out images than a nearest-class-mean classifier: what a real cache of this size asks
of a head's defaults. A tenth of the images (and their questions) form the split "val", held out by image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHAPES = {"questions": 443_757, "images": 82_783, "answers": 3_129}
LATENT = 64
QUESTION_NOISE, IMAGE_NOISE, FEATURE_NOISE = 1.5, 0.5, 0.3


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write_cache(path: Path, scale: float = 1.0, seed: int = 0) -> dict:
    from featcache.cache.file import CacheWriter

    rng = np.random.default_rng(seed)
    n_q, n_img, k = int(SHAPES["questions"] * scale), int(SHAPES["images"] * scale), SHAPES["answers"]
    vocab = np.array([f"answer{i}" for i in range(k)], dtype=object)
    zipf = 1.0 / np.arange(1, k + 1)
    zipf /= zipf.sum()
    main = rng.choice(k, size=n_q, p=zipf)
    other = rng.choice(k, size=(n_q, 2), p=zipf)
    image_row = np.sort(rng.integers(0, n_img, n_q))
    latent = rng.standard_normal((k, LATENT)).astype(np.float32)
    image_latent = np.zeros((n_img, LATENT), np.float32)
    np.add.at(image_latent, image_row, latent[main])
    image_latent /= np.maximum(np.bincount(image_row, minlength=n_img), 1)[:, None]
    image_latent += IMAGE_NOISE * rng.standard_normal(image_latent.shape, dtype=np.float32)
    to_query = rng.standard_normal((LATENT, 32 * 768), dtype=np.float32) / np.sqrt(LATENT)
    to_proj = rng.standard_normal((LATENT, 32 * 256), dtype=np.float32) / np.sqrt(LATENT)
    to_text = rng.standard_normal((LATENT, 256), dtype=np.float32) / np.sqrt(LATENT)
    to_cls = rng.standard_normal((LATENT, 768), dtype=np.float32) / np.sqrt(LATENT)
    val_images = rng.random(n_img) < 0.1
    split = np.where(val_images[image_row], "val", "train").astype(object)  # per question, by its image

    attrs = {"model_id": "synthetic", "model_class": "synthetic", "model_fingerprint": f"synthetic-vqav2-{seed}",
             "compute_dtype": "float16", "has_text": True, "preprocessing": "synthetic", "created": "",
             "dataset_name": "synthetic-vqav2-train", "dataset_source": "benchmarks/vqav2_synthetic.py"}
    strings = ("question_id", "references", "answer_type", "question_type")
    writer = CacheWriter(path, attrs, n_img, n_q, {"query": (32, 768), "query_proj": (32, 256)},
                         {"text_proj": (256,), "text_cls": (768,)}, "float16", question_strings=strings)
    slab = 2048
    for start in range(0, n_img, slab):
        z = image_latent[start:start + slab]
        n = len(z)
        query = (z @ to_query).reshape(n, 32, 768) + FEATURE_NOISE * rng.standard_normal((n, 32, 768), np.float32)
        proj = (z @ to_proj).reshape(n, 32, 256) + FEATURE_NOISE * rng.standard_normal((n, 32, 256), np.float32)
        writer.write("images", start, {"key": [f"img{start + i}" for i in range(n)], "error": [""] * n,
                                       "query": query.astype(np.float16), "query_proj": _unit(proj).astype(np.float16)})
    agree = rng.integers(5, 11, n_q)  # k of 10 humans give the main answer
    for start in range(0, n_q, 65536):
        stop = min(n_q, start + 65536)
        n = stop - start
        z = latent[main[start:stop]] + QUESTION_NOISE * rng.standard_normal((n, LATENT), dtype=np.float32)
        refs = []
        for m, (o1, o2), a in zip(main[start:stop], other[start:stop], agree[start:stop]):
            refs.append(json.dumps([vocab[m]] * a + [vocab[o1]] * ((10 - a) // 2) + [vocab[o2]] * (10 - a - (10 - a) // 2)))
        writer.write("questions", start, {
            "text": [f"question {i % 20000}?" for i in range(start, stop)], "answer": list(vocab[main[start:stop]]),
            "split": list(split[start:stop]), "error": [""] * n, "image_row": image_row[start:stop],
            "truncated": np.zeros(n, np.uint8),
            "text_proj": _unit(z @ to_text + FEATURE_NOISE * rng.standard_normal((n, 256), np.float32)).astype(np.float16),
            "text_cls": (z @ to_cls).astype(np.float16),
            "question_id": [str(i) for i in range(start, stop)], "references": refs,
            "answer_type": ["other"] * n, "question_type": ["what is"] * n})
    writer.close()
    return {"questions": n_q, "images": n_img, "answers": k, "val_questions": int((split == "val").sum()),
            "file_gib": round(path.stat().st_size / 2**30, 2)}
