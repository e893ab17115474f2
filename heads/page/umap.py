"""The page's UMAP: a class-balanced sample of the evaluated questions' features (or a head's representation of
them) in 2-D, each point keeping its question's index so the page can show its question and image on hover."""

from __future__ import annotations

import sys
import warnings

import numpy as np

UMAP_POINTS = 1500


def umap_points(X, samples: list[dict], what: str, transform=None, points: int = UMAP_POINTS, seed: int = 0) -> dict:
    """{index, x, y, top_classes, what} for the page; `transform` maps rows of X to what is embedded."""
    import umap

    labels = np.array([s["label"] for s in samples], dtype=object)
    classes, counts = np.unique(labels, return_counts=True)
    per_class = max(1, points // max(1, len(classes)))
    rng = np.random.default_rng(seed)
    index = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]))
    rows = X[index]
    Z = transform(rows) if transform is not None else np.asarray(rows, dtype=np.float32)
    print(f"UMAP of {len(Z)} points for report.html...", file=sys.stderr, flush=True)
    with warnings.catch_warnings():  # UMAP's "spectral initialisation failed" falls back on its own
        warnings.simplefilter("ignore")
        emb = umap.UMAP(n_components=2, random_state=seed, n_jobs=1, n_neighbors=min(15, max(2, len(Z) - 1)),
                        min_dist=0.1).fit_transform(Z)
    top = [str(c) for c in classes[np.argsort(-counts, kind="stable")][:12]]
    return {"index": index.tolist(), "x": np.round(emb[:, 0], 3).tolist(), "y": np.round(emb[:, 1], 3).tolist(),
            "top_classes": top, "what": what}
