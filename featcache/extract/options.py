"""The public `extract(dataset, out, model, compute=..., storage=..., spread=..., features=...)`: its settings in
four typed groups (what runs where, what is stored, how the work is spread, which features), same defaults as
`featcache extract`'s options, which map onto them. The keywords of the flat signature it replaced are refused
with the group each moved to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import ExtractError
from ..models.backbone import DEFAULT_MAX_TEXT_LENGTH, DEFAULT_MODEL
from .pairs import DEFAULT_MM_PROMPT


@dataclass(frozen=True)
class Compute:
    """What runs where: device and dtype, batch and decode workers, text batches, compilation, the writer."""

    device: str = "auto"
    dtype: str | None = None
    batch_size: int | str = 32
    workers: int | str = "auto"
    text_batch_size: int = 128
    max_text_length: int = DEFAULT_MAX_TEXT_LENGTH
    compile: bool = False
    jpeg_draft: bool = False
    cuda_graphs: bool = False
    writer: str = "auto"


@dataclass(frozen=True)
class Storage:
    """What is stored and how: dtype, compression, shard size, the ViT states, replacing, failed rows."""

    store_dtype: str = "float16"
    compression: str | None = None
    shard_size: int = 1024
    store_vision: bool = False
    overwrite: bool = False
    skip_bad: bool = False


@dataclass(frozen=True)
class Spread:
    """How the work is spread: the engine (local or Ray), SLURM-style shards, merging."""

    engine: str = "local"
    ray_address: str | None = None
    gpus_per_worker: float = 1.0
    workers_per_node: int | None = None
    shard_index: int | None = None
    num_shards: int | None = None
    merge_output: bool = True


@dataclass(frozen=True)
class Features:
    """Which features: unimodal or question-conditioned (multimodal), how pairs are stored and prompted, and ViT
    states taken from another cache."""

    kind: str = "unimodal"
    mm_store: str = "full"
    mm_prompt: str = DEFAULT_MM_PROMPT
    from_vision: str | Path | None = None


GROUPS = {"compute": Compute, "storage": Storage, "spread": Spread, "features": Features}
MOVED = {f.name: group for group, cls in GROUPS.items() for f in fields(cls)}
"""Each setting's group (the flat keyword `features` is now Features.kind)."""


def extract(dataset, out, model=DEFAULT_MODEL, compute: Compute = Compute(), storage: Storage = Storage(),
            spread: Spread = Spread(), features: Features = Features(), progress: bool = True, **moved):
    """Extract features of `dataset` into the cache `out` (docs/FORMAT.md) with `model` (a hub id, a checkpoint
    folder, "tiny-random", or a loaded Backbone). See featcache.extract.run.extract_with for what each setting
    does."""
    from .run import extract_with

    if isinstance(features, str) or moved:
        hints = [f"features={features!r} -> features=Features(kind={features!r})"] if isinstance(features, str) else []
        for name in sorted(moved):
            group = MOVED.get(name)
            hints.append(f"{name}= -> {group}={GROUPS[group].__name__}({name}=...)" if group and name != "kind"
                         else f"{name}= (no such setting)")
        raise ExtractError("extract() takes its settings in four groups (featcache.extract.Compute, Storage, "
                           "Spread, Features): " + "; ".join(hints))
    for name, value in (("compute", compute), ("storage", storage), ("spread", spread), ("features", features)):
        if not isinstance(value, GROUPS[name]):
            raise ExtractError(f"{name}= must be a featcache.extract.{GROUPS[name].__name__}, got "
                               f"{type(value).__name__}")
    flat = {**asdict(compute), **asdict(storage), **asdict(spread), **asdict(features)}
    flat["features"] = flat.pop("kind")
    return extract_with(dataset, out, model=model, progress=progress, **flat)
