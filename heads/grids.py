"""The heads a sweep knows and their hyperparameter grids: built in (small, default, probe) or a JSON file."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

from featcache.errors import FeatcacheError

from featcache.cache.views import VIEWS

from .attnpool import AttentionPoolHead
from .gbm import LightGBMHead
from .knn import KNNHead
from .linear import LogisticRegressionHead
from .mlp import MLPHead

DEFAULT_HEADS = ("lr", "mlp", "lgbm", "knn", "attnpool")
"""What a sweep fits by default (each on the views it fits, `fits_view`)."""


def head_types() -> dict[str, type]:
    return {"lr": LogisticRegressionHead, "mlp": MLPHead, "lgbm": LightGBMHead, "knn": KNNHead,
            "attnpool": AttentionPoolHead}


def fits_view(kind: str, view: str) -> bool:
    """Whether a sweep fits head `kind` on `view`: the attention probe needs a view of several tokens (itc, full,
    image_proj, mm), every other head fits every view."""
    if kind != "attnpool":
        return True
    spec = VIEWS.get(view)
    return spec is not None and spec.image is not None and not spec.pool and view != "sim"


LINEAR_PROBE_C = tuple(10.0 ** e for e in range(-6, 7))
"""The linear probe's regularisation sweep: C = 1e-6 ... 1e6, a decade apart (CLIP's range)."""


def builtin_grid(name: str) -> dict[str, list[dict]]:
    """Hyperparameter candidates per head type: `small` (quick), `default`, or `probe` (the linear probe:
    logistic regression over C = 1e-6 ... 1e6, chosen on the validation fraction, refit, tested once)."""
    if name == "probe":
        return {"lr": [{"C": c} for c in LINEAR_PROBE_C]}
    if name == "small":
        return {"lr": [{"C": 0.1}, {"C": 1.0}], "mlp": [{"hidden_sizes": (256,)}], "lgbm": [{}],
                "knn": [{"k": 10}, {"k": 20}], "attnpool": [{}]}
    if name == "default":
        return {"lr": [{"C": c} for c in (0.01, 0.1, 1.0, 10.0)],
                "mlp": [{"hidden_sizes": h, "dropout": d} for h, d in product([(256,), (512,), (512, 256)], [0.2, 0.4])]
                + [{"preset": "compact"}, {"preset": "reference"}],
                "lgbm": [{}, {"num_leaves": 31, "n_components": 128}],
                "knn": [{"k": k} for k in (10, 20, 100, 200)],  # DINO's k values, all from one search
                "attnpool": [{}, {"num_queries": 4}, {"hidden_sizes": (512,), "dropout": 0.1}]}
    raise FeatcacheError(f"unknown grid {name!r}: use small, default, probe, or a JSON file {{head: [params, ...]}}")


def load_grid(grid: str) -> dict[str, list[dict]]:
    if grid in ("small", "default", "probe"):
        return builtin_grid(grid)
    path = Path(grid)
    if not path.is_file():
        raise FeatcacheError(f"grid {grid!r} is neither small/default/probe nor a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FeatcacheError(f"grid {path} is not valid JSON ({str(exc)[:100]}); it must look like "
                             f'{{"lr": [{{"C": 0.1}}, {{"C": 1}}], "mlp": [{{"hidden_sizes": [256]}}]}}') from None
    types = head_types()
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(p, dict) for p in v)
                                             for v in data.values()):
        raise FeatcacheError(f"grid {path} must map head names to lists of parameter objects, e.g. "
                             f'{{"lr": [{{"C": 0.1}}, {{"C": 1}}]}}')
    empty = sorted(k for k, v in data.items() if not v)
    if empty:
        raise FeatcacheError(f"grid {path} gives no candidates for {', '.join(empty)}; give at least one parameter "
                             f"object (an empty one, {{}}, for the defaults) or leave the head out")
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise FeatcacheError(f"grid {path} names unknown head(s) {unknown}; heads: {', '.join(types)}")
    grid = {k: [{p: tuple(v) if isinstance(v, list) else v for p, v in params.items()} for params in vals]
            for k, vals in data.items()}
    for kind, vals in grid.items():
        for params in vals:
            make_head(kind, params)  # unknown parameter names fail here, before any fit
    return grid


def make_head(kind: str, params: dict, num_threads: int | None = None):
    types = head_types()
    if kind not in types:
        raise FeatcacheError(f"unknown head {kind!r}: use {', '.join(types)}")
    params = dict(params)
    preset = params.pop("preset", None)
    presets = {"reference": MLPHead.reference, "compact": MLPHead.compact}
    if preset is not None and (kind != "mlp" or preset not in presets):
        raise FeatcacheError(f"unknown preset {preset!r} for head {kind!r}: the mlp head has presets "
                             f"{', '.join(presets)}")
    cls = presets[preset] if preset else types[kind]
    known = set(types[kind]().get_params())
    unknown = sorted(set(params) - known)
    if unknown:
        raise FeatcacheError(f"unknown parameter(s) {unknown} for head {kind!r}; its parameters: "
                             f"{', '.join(sorted(known))}")
    head = cls(**params)
    if num_threads and "num_threads" in head.get_params():
        head.set_params(num_threads=num_threads)
    return head


