"""What every model loader shares: the device and dtype defaults, the weights fingerprint that caches
record, the message for a checkpoint that cannot be had, and a quiet transformers while loading."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

import torch
from torch import nn

from ..errors import ModelLoadError


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} was asked for but torch sees no CUDA GPU; use --device cpu")
    return torch.device(device)


def default_compute_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPU (the Q-Former stays fp32, as transformers keeps it), fp32 on CPU."""
    return torch.float16 if device.type == "cuda" else torch.float32


def hub_hint(model: str, exc: BaseException) -> str:
    """Why a checkpoint did not load (no hub, offline, a wrong name) and the ways on."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = "offline mode is on (HF_HUB_OFFLINE)" if offline else "the model hub could not be reached"
    return (f"Could not load BLIP-2 checkpoint {model!r}: {where}, or the name is wrong, and it is not in "
            f"the local cache ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).\n"
            f"Ways on: download it where the hub is reachable (`hf download {model}`) and pass the folder "
            f"with --model /path/to/folder, or use --model tiny-random for a tiny RANDOM model that tests "
            f"the pipeline (its numbers mean nothing).")


def weights_fingerprint(model: nn.Module) -> str:
    """A short hash of a sample of every tensor, rounded to fp16: equal for the same weights whether
    they were loaded in fp16 or fp32, different for different checkpoints (or random inits)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 512)
        sample = flat[::step][:512].to("cpu", torch.float32).to(torch.float16).numpy()
        h.update(name.encode())
        h.update(json.dumps(list(tensor.shape)).encode())
        h.update(sample.tobytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def quiet_transformers(progress_bars: bool = True):
    """transformers' loading report at error level only (the expected UNEXPECTED/MISSING keys of loading a
    part of a checkpoint would alarm users); with progress_bars=False its bars are hidden too."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    if not progress_bars:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if not progress_bars:
            hf_logging.enable_progress_bar()
