"""Fine-tune checkpoints as folders of JSON + safetensors (featcache.safe_folder): loading runs no code.

- `best/`: what prediction needs: LoRA adapters, classifier, labels, config, the base model's
  identity and fingerprint.
- `last/`: that plus the optimiser, scheduler and RNG state and the run's history, so the same
  command resumes after an interruption.

Checkpoints of featcache 0.1 (`best.pt`, `last.pt`, written with torch.save) are pickles: they load
only with trust_pickle=True.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import FeatcacheError
from ..safe_folder import flatten, load_folder, load_pickle, save_folder, unflatten

MODEL_FORMAT = "featcache-finetune-2"
STATE_FORMAT = "featcache-finetune-state-2"
LEGACY_FORMAT = "featcache-finetune-1"
BEST, LAST = "best", "last"


def _adapters_out(adapters: dict) -> dict:
    return {k: v for part, state in adapters.items() for k, v in flatten(f"adapters.{part}", state).items()}


def _adapters_in(tensors: dict) -> dict:
    return {part: unflatten(f"adapters.{part}", tensors) for part in ("qformer", "vision")
            if any(k.startswith(f"adapters.{part}.") for k in tensors)}


def save_model(path: Path, meta: dict, adapters: dict, head: dict) -> Path:
    """best/: everything prediction needs (meta: labels, config, provenance, base_model, epoch...)."""
    return save_folder(path, {"format": MODEL_FORMAT, **meta}, {**_adapters_out(adapters), **flatten("head", head)})


def load_model(path: str | Path, trust_pickle: bool = False) -> dict:
    """A saved fine-tune as a dict: labels, config, provenance, base_model, adapters, head."""
    path = Path(path)
    if path.is_file():  # featcache 0.1's torch.save checkpoint
        state = load_pickle(path, trust_pickle, "fine-tune checkpoint")
        if not isinstance(state, dict) or state.get("format") != LEGACY_FORMAT:
            raise FeatcacheError(f"{path} is not a featcache fine-tune checkpoint")
        return state
    meta, tensors = load_folder(path, (MODEL_FORMAT,), "fine-tune checkpoint")
    for key, kind in (("config", dict), ("labels", list), ("provenance", dict), ("base_model", str)):
        if not isinstance(meta.get(key), kind):
            raise FeatcacheError(f"{path}/featcache.json: {key!r} is missing or not a {kind.__name__}; the checkpoint "
                                 f"is damaged or from another featcache: save it again")
    if not isinstance(meta["provenance"].get("model_fingerprint"), str) or \
            not isinstance(meta["config"].get("hidden_sizes"), list):
        raise FeatcacheError(f"{path}/featcache.json lacks its model fingerprint or hidden sizes; the checkpoint is "
                             f"damaged: save it again")
    return {**meta, "adapters": _adapters_in(tensors), "head": unflatten("head", tensors)}


def save_state(path: Path, run: dict, adapters: dict, head: dict, optimizer: dict, scheduler: dict,
               progress: dict) -> Path:
    """last/: model plus optimiser (tensors per parameter; groups as JSON), scheduler and RNG state."""
    opt_tensors = {f"optimizer.{pid}.{name}": t for pid, st in optimizer["state"].items() for name, t in st.items()}
    meta = {"format": STATE_FORMAT, "run": run, "param_groups": optimizer["param_groups"], "scheduler": scheduler,
            **progress}
    tensors = {**_adapters_out(adapters), **flatten("head", head), **opt_tensors, "torch_rng": torch.get_rng_state()}
    return save_folder(path, meta, tensors)


def load_state(path: str | Path, trust_pickle: bool = False) -> dict:
    """What `finetune` needs to resume: run, adapters, head, optimizer, scheduler, torch_rng, epoch,
    best_acc, stale, history."""
    path = Path(path)
    if path.is_file():
        return load_pickle(path, trust_pickle, "fine-tune resume state")
    meta, tensors = load_folder(path, (STATE_FORMAT,), "fine-tune resume state")
    opt_state: dict[int, dict] = {}
    for key, t in unflatten("optimizer", tensors).items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = t
    return {**meta, "adapters": _adapters_in(tensors), "head": unflatten("head", tensors),
            "optimizer": {"state": opt_state, "param_groups": meta["param_groups"]},
            "torch_rng": tensors["torch_rng"]}


def find(out: Path, name: str) -> Path | None:
    """out/best (or out/last), else featcache 0.1's out/best.pt, else None (a save cut between its two renames is
    completed first: featcache.safe_folder.recover_folder)."""
    from ..safe_folder import recover_folder

    recover_folder(out / name)
    for candidate in (out / name, out / f"{name}.pt"):
        if candidate.exists():
            return candidate
    return None
