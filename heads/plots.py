"""2-D UMAP of a learned representation (an MLP's last hidden layer) or of a feature view itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def balanced_subsample(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(idx))


def umap_plot(X, y, path: str | Path, title: str, per_class: int = 300, seed: int = 0,
              transform=None, subtitle: str = "") -> Path:
    """UMAP of `transform(X)` (or X) on a class-balanced subsample, coloured by class, saved as PNG."""
    from featcache.plotting import pyplot, save_figure

    plt = pyplot()
    import umap

    y = np.asarray(y, dtype=object)
    idx = balanced_subsample(y, per_class, seed)
    Xs = X[idx] if not isinstance(X, np.ndarray) else X[idx]
    Z = transform(Xs) if transform is not None else np.asarray(Xs, dtype=np.float32)
    import warnings

    import sys

    print(f"UMAP of {len(Z)} points x {Z.shape[1]} features (a minute or so on a laptop)...", file=sys.stderr, flush=True)
    with warnings.catch_warnings():  # UMAP's "spectral initialisation failed" falls back on its own: not the user's
        warnings.simplefilter("ignore")
        emb = umap.UMAP(n_components=2, random_state=seed, n_jobs=1, n_neighbors=15, min_dist=0.1).fit_transform(Z)
    classes = sorted(set(y[idx]))
    cmap = plt.get_cmap("tab20", max(len(classes), 1))
    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    for i, c in enumerate(classes):
        m = y[idx] == c
        ax.scatter(emb[m, 0], emb[m, 1], s=6, color=cmap(i), label=f"{c} ({m.sum()})", alpha=0.8)
    ax.legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    return save_figure(fig, path)


def plot_umap(source: str | Path, out: str | Path, cache: str | Path | None = None, view: str = "pooled",
              split: str = "test", per_class: int = 300, seed: int = 0, trust_pickle: bool = False) -> Path:
    """`source` is a cache (plot a view) or a saved head (plot its representation on `cache`)."""
    from featcache import open_cache

    from .attnpool import AttentionPoolHead
    from .mlp import MLPHead
    from .trained import TrainedHead

    source = Path(source)
    if (source.is_file() and source.suffix in (".h5", ".hdf5")) or (source / "manifest.json").is_file():
        with open_cache(source) as c:
            X, y = c.view(view, split)
            random = str(c.attrs.get("model_id", "")).startswith("tiny-random")
        return umap_plot(X, y, out, f"UMAP of view '{view}' ({split})", per_class, seed,
                         subtitle="RANDOM WEIGHTS (tiny-random)" if random else "")
    trained = TrainedHead.load(source, trust_pickle)
    if cache is None:
        from featcache.errors import FeatcacheError

        raise FeatcacheError("plotting a head needs --cache CACHE (the features to embed)")
    with open_cache(cache, expect=trained.provenance) as c:
        X, y = c.view(trained.view, split)
    head = trained.head
    if isinstance(head, MLPHead):
        what, transform = "the MLP's last hidden layer", head.transform_hidden
    elif isinstance(head, AttentionPoolHead):
        what, transform = "the attention probe's pooled tokens", head.transform_pooled
    else:
        what, transform = f"view '{trained.view}'", None
    return umap_plot(X, y, out, f"UMAP of {what} ({split})", per_class, seed, transform=transform,
                     subtitle="RANDOM WEIGHTS (tiny-random)" if trained.random_weights else "")
