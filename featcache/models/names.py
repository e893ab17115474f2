"""Model names featcache knows besides hub ids and folders: the tiny RANDOM checkpoints, built locally
(once, seeded, into the user's cache folder) the first time a name is used, then loaded through exactly
the path a real checkpoint takes (`from_pretrained` of a folder)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

TINY_RANDOM = "tiny-random"
"""Model name that the CLI and demo turn into a freshly built tiny random checkpoint."""
TINY_GENERATIVE = {"tiny-random-opt": "opt", "tiny-random-t5": "t5"}
"""Tiny random generative checkpoints (OPT or T5 language model), by name."""
TINY_INSTRUCTBLIP = {"tiny-random-instructblip-t5": "t5", "tiny-random-instructblip-llama": "llama"}
"""Tiny random InstructBLIP checkpoints (a Flan-T5 or a Llama/Vicuna-like language model), by name."""


def random_weights_warning(model: str = TINY_RANDOM) -> str:
    """What every command prints before it runs a tiny random model (named: tiny-random, tiny-random-opt, ...)."""
    family = "InstructBLIP" if model in TINY_INSTRUCTBLIP else "BLIP-2"
    return (f"WARNING: {model} is a tiny {family} with RANDOM weights, built locally to exercise the "
            "pipeline; every accuracy computed from it is meaningless.")


def _tiny_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "featcache"


def resolve_model(model: str, cache_dir: str | Path | None = None) -> str:
    """`tiny-random` (retrieval) or `tiny-random-opt|t5` (generative) -> the folder of that tiny random
    checkpoint, built on first use; any other name unchanged. A new recipe gets a new folder."""
    if model == TINY_RANDOM:
        from .tiny import blip2_config, build_tiny_blip2, tiny_vocabulary

        recipe = blip2_config("itm", "tiny").to_json_string() + "\n".join(tiny_vocabulary())
        folder = _tiny_root(cache_dir) / f"tiny-random-itm-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"
        if not (folder / "config.json").exists():
            build_tiny_blip2(folder, kind="itm", seed=0)
        return str(folder)
    if model in TINY_GENERATIVE:
        import transformers

        from . import tiny_generative

        recipe = Path(tiny_generative.__file__).read_text() + transformers.__version__
        folder = _tiny_root(cache_dir) / f"{model}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"
        if not (folder / "config.json").exists():
            tiny_generative.build_tiny_generative(folder, TINY_GENERATIVE[model], seed=0)
        return str(folder)
    if model in TINY_INSTRUCTBLIP:
        import transformers

        from . import tiny_generative, tiny_instructblip

        recipe = "".join(Path(m.__file__).read_text() for m in (tiny_instructblip, tiny_generative)) + transformers.__version__
        folder = _tiny_root(cache_dir) / f"{model}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"
        if not (folder / "config.json").exists():
            tiny_instructblip.build_tiny_instructblip(folder, TINY_INSTRUCTBLIP[model], seed=0)
        return str(folder)
    return model
