"""A fitted head together with what it expects: its view and the provenance of its features.

Saved with joblib. Loading it for prediction on a cache or a live model refuses features from
another model or preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import joblib

from featcache.cache import MATCH_KEYS
from featcache.errors import CacheFormatError

PROVENANCE_KEYS = MATCH_KEYS + ("model_id", "model_class", "dataset_name", "compute_dtype", "store_dtype")


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
        return self.provenance.get("model_id") == "tiny-random"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, path)
        return path

    @staticmethod
    def load(path: str | Path) -> "TrainedHead":
        try:
            obj = joblib.load(path)
        except FileNotFoundError:
            raise CacheFormatError(f"head file {path} does not exist; train one with `featcache fit` or `sweep`") from None
        except Exception as exc:
            raise CacheFormatError(f"{path} is not a readable featcache head ({type(exc).__name__}: {exc})") from None
        if not isinstance(obj, TrainedHead):
            raise CacheFormatError(f"{path} holds a {type(obj).__name__}, not a featcache head")
        return obj
