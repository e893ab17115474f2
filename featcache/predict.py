"""Answer new (image, question) pairs with a saved head: the backbone runs live, no cache needed.

Features are computed exactly as `extract` computes them and rounded to the head's cache store
dtype, so a pair that is also in a cache gets the prediction the cache would give.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .backbone import Backbone, load_backbone
from .cache import MATCH_KEYS
from .errors import CacheFormatError, DatasetError
from .images import load_image
from .views import VIEWS, view_from_arrays


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """A CSV with columns image, question (relative image paths resolve against the CSV's folder)."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image", "question"} <= set(rows[0]):
        raise DatasetError(f"{path} needs columns image, question")
    return [(str((path.parent / r["image"]) if not Path(r["image"]).is_absolute() else r["image"]), r["question"])
            for r in rows]


def check_head_matches(provenance: dict, backbone: Backbone) -> None:
    mine = backbone.provenance()
    diffs = [f"{k}: head {provenance[k]!r}, model {mine[k]!r}" for k in MATCH_KEYS
             if k in provenance and k in mine and provenance[k] != mine[k]]
    if diffs:
        raise CacheFormatError(f"the head was trained on features of {provenance.get('model_id')!r}, but --model "
                               f"{backbone.model_id!r} computes different ones:\n  " + "\n  ".join(diffs)
                               + "\nUse the model the head's cache was extracted with.")


def predict(trained, pairs: list[tuple[str, str]], model: str | Backbone | None = None, device: str = "auto",
            top_k: int = 3, batch_size: int = 32) -> list[dict]:
    """Top-k answers with probabilities for each (image path, question)."""
    backbone = model if isinstance(model, Backbone) else load_backbone(model or trained.provenance["model_id"], device)
    check_head_matches(trained.provenance, backbone)
    spec = VIEWS[trained.view]
    store = np.dtype(trained.provenance.get("store_dtype", "float32"))
    position = {p: i for i, p in enumerate(dict.fromkeys(p for p, _ in pairs))}
    paths = list(position)
    image_row = np.array([position[p] for p, _ in pairs])
    feats: dict[str, list] = {}
    for i in range(0, len(paths), batch_size):
        pixels = np.stack([backbone.preprocessor(load_image(p)) for p in paths[i:i + batch_size]])
        for k, v in backbone.encode_images(pixels).items():
            feats.setdefault(k, []).append(v)
    images = np.concatenate(feats[spec.image]).astype(store)
    question = None
    if spec.question:
        texts = [q for _, q in pairs]
        if any(not t.strip() for t in texts):
            raise DatasetError("a question is empty")
        question = backbone.encode_texts(texts)[spec.question].astype(store)
    X = view_from_arrays(trained.view, images, image_row, question)
    proba = trained.head.predict_proba(X)
    classes = trained.head.classes_
    out = []
    for (path, q), p in zip(pairs, proba):
        order = np.argsort(-p)[:top_k]
        out.append({"image": path, "question": q, "answer": str(classes[order[0]]), "probability": float(p[order[0]]),
                    "top_k": [(str(classes[j]), float(p[j])) for j in order]})
    return out
