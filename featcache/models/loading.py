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


HUB_PROBE_SECONDS = 2.0
_hub_probed: bool | None = None


def offline_unless_hub_answers(model: str) -> None:
    """Before loading a hub id (not a local folder), ask the hub once, for HUB_PROBE_SECONDS: where it does not
    answer, work offline from the start (checkpoints already downloaded still load) instead of spending ~100 s in
    huggingface_hub's retries before the message that offers a local folder or tiny-random."""
    global _hub_probed
    import sys
    import urllib.error
    import urllib.request
    from pathlib import Path
    from urllib.parse import urlparse

    if _hub_probed is not None or Path(model).expanduser().exists():
        return
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    host = urlparse(endpoint).hostname or endpoint
    try:  # an HTTP answer, whatever its status, is the hub answering (a bare TCP connect can be a proxy's)
        urllib.request.urlopen(urllib.request.Request(endpoint + "/api/models/" + model, method="HEAD"),
                               timeout=HUB_PROBE_SECONDS).close()
        _hub_probed = True
        return
    except urllib.error.HTTPError:
        _hub_probed = True
        return
    except (OSError, ValueError):
        _hub_probed = False
    import huggingface_hub.constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    print(f"the model hub ({host}) does not answer: working offline (only checkpoints already downloaded load)",
          file=sys.stderr, flush=True)


def hub_hint(model: str, exc: BaseException) -> str:
    """Why a checkpoint did not load (no hub, offline, a wrong name) and the ways on."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = ("the model hub does not answer" if _hub_probed is False else
             "offline mode is on (HF_HUB_OFFLINE)" if offline else "the model hub could not be reached")
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
