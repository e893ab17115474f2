"""A fitted head together with what it expects: its view and the provenance of its features.

Saved as a folder (`featcache.json` + `tensors.safetensors`, see featcache.safe_folder), in the spirit of
`save_pretrained`: loading it runs no code, so a head from a colleague or a paper's supplement is
safe to open. Loading it for prediction on a cache or a live model refuses features from another
model or preprocessing. Pickled heads (joblib) load only with `trust_pickle=True`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

from featcache.cache import MATCH_KEYS
from featcache.errors import CacheFormatError
from featcache.safe_folder import load_folder, load_pickle, save_folder

PROVENANCE_KEYS = MATCH_KEYS + ("model_id", "model_class", "dataset_name", "compute_dtype", "store_dtype")
HEAD_FORMAT = "featcache-head-1"


def _head_classes() -> dict[str, type]:
    """The only classes a saved head may name: ours, never an arbitrary import path."""
    from .grids import head_types

    return {c.__name__: c for c in head_types().values()}


def _params_back(cls: type, params: dict) -> dict:
    """JSON lists back to tuples where the estimator's default is a tuple (e.g. hidden_sizes)."""
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
    return {k: tuple(v) if isinstance(v, list) and isinstance(defaults.get(k), tuple) else v
            for k, v in params.items()}


@dataclass
class TrainedHead:
    head: object
    view: str
    provenance: dict
    train_split: str | list[str] | None
    name: str = ""
    params: dict = field(default_factory=dict)

    @classmethod
    def from_cache(cls, head, view: str, cache, train_split, name: str = "", params: dict | None = None) -> "TrainedHead":
        prov = {k: cache.attrs[k] for k in PROVENANCE_KEYS if k in cache.attrs}
        return cls(head, view, prov, train_split, name, dict(params or {}))

    @property
    def random_weights(self) -> bool:
        return str(self.provenance.get("model_id", "")).startswith("tiny-random")

    def save(self, path: str | Path) -> Path:
        """Write the head as a folder of JSON + safetensors (replacing an earlier save atomically)."""
        attrs, tensors = self.head._fitted_state()
        meta = {"format": HEAD_FORMAT, "head_class": type(self.head).__name__,
                "head_params": self.head.get_params(), "fitted": attrs, "view": self.view,
                "provenance": self.provenance, "train_split": self.train_split, "name": self.name,
                "search_params": self.params}
        return save_folder(path, meta, tensors)

    @staticmethod
    def load(path: str | Path, trust_pickle: bool = False) -> "TrainedHead":
        """A head saved by `save`; a joblib/pickle file only with trust_pickle=True (it can run code)."""
        path = Path(path)
        if path.is_file():
            obj = load_pickle(path, trust_pickle, "head")
            if not isinstance(obj, TrainedHead):
                raise CacheFormatError(f"{path} holds a {type(obj).__name__}, not a featcache head")
            return obj
        meta, tensors = load_folder(path, (HEAD_FORMAT,), "head")
        classes = _head_classes()
        if meta.get("head_class") not in classes:
            raise CacheFormatError(f"{path} names head class {meta.get('head_class')!r}; featcache knows "
                                   f"{', '.join(classes)}")
        cls = classes[meta["head_class"]]
        try:
            head = cls(**_params_back(cls, meta["head_params"]))
            head._restore(meta["fitted"], tensors)
            view, provenance, split = meta["view"], meta["provenance"], meta["train_split"]
            if not isinstance(view, str) or not isinstance(provenance, dict):
                raise TypeError(f"view must be text and provenance an object, got {type(view).__name__} and "
                                f"{type(provenance).__name__}")
            from featcache.cache.views import VIEWS

            if view not in VIEWS:
                raise ValueError(f"view {view[:40]!r} is not one of featcache's views ({', '.join(VIEWS)})")
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            raise CacheFormatError(f"{path} is damaged or from an incompatible featcache version "
                                   f"({type(exc).__name__}: {str(exc)[:120]}); save the head again") from None
        return TrainedHead(head, view, provenance, split, meta.get("name", ""), meta.get("search_params", {}))


def load_head(path: str | Path, trust_pickle: bool = False) -> TrainedHead:
    """Load a saved head (`TrainedHead.save`); see TrainedHead.load."""
    return TrainedHead.load(path, trust_pickle)
