"""`featcache convert`: a featcache 0.1 pickle (a joblib head or a torch.save fine-tune checkpoint)
re-saved as a safe folder, once, by a user who trusts where it came from."""

from __future__ import annotations

from pathlib import Path

from heads.trained import TrainedHead

from ..errors import FeatcacheError
from ..finetune import checkpoints
from ..safe_folder import load_pickle


def convert_legacy(source: str | Path, out: str | Path, trust_pickle: bool = False) -> Path:
    """Re-save a featcache 0.1 pickle (a joblib head or a torch.save fine-tune `best.pt`) as a safe folder."""
    obj = load_pickle(Path(source), trust_pickle, "head or fine-tune checkpoint")
    if isinstance(obj, TrainedHead):
        return obj.save(out)
    if isinstance(obj, dict) and obj.get("format") == checkpoints.LEGACY_FORMAT:
        meta = {k: v for k, v in obj.items() if k not in ("format", "adapters", "head")}
        return checkpoints.save_model(Path(out), meta, obj["adapters"], obj["head"])
    from heads._base import HeadBase

    if isinstance(obj, HeadBase):  # a bare estimator, pickled without its view and provenance
        raise FeatcacheError(f"{source} holds a bare {type(obj).__name__} without the view and provenance a featcache "
                             f"head carries; wrap it: TrainedHead(head, view, provenance, train_split).save(OUT), or "
                             f"fit it again with `featcache fit`")
    raise FeatcacheError(f"{source} holds a {type(obj).__name__} that is neither a featcache head nor a fine-tune "
                         f"checkpoint (a featcache 0.1 last.pt resume state cannot be converted: resume it with "
                         f"--trust-pickle, or start afresh with --overwrite)")
