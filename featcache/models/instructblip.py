"""InstructBLIP backbones: the ViT and the instruction-aware Q-Former of an InstructBLIP checkpoint.

InstructBLIP's Q-Former reads the instruction (the question) together with its 32 queries, so its query states
are per (image, question). Extraction loads only the vision model, the query tokens and the Q-Former
(`InstructBlipEncoder`, whose weights carry the checkpoint's own names): a 7B language model's weights are
never read. Zero-shot loads the whole `InstructBlipForConditionalGeneration` (featcache.models.generative).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from ..images.preprocess import ImagePreprocessor
from .loading import hub_hint, quiet_transformers

ARCHITECTURE = "InstructBlipForConditionalGeneration"


def is_instructblip(model: str, revision: str | None = None) -> bool:
    """Whether the checkpoint `model` (folder or hub id) is an InstructBLIP; False when its config cannot be read."""
    from transformers import AutoConfig

    if Path(model).exists() and not (Path(model) / "config.json").is_file():
        return False
    try:
        with quiet_transformers(progress_bars=False):
            config = AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError):
        return False
    return getattr(config, "model_type", "") == "instructblip"


def _encoder_class():
    from transformers import InstructBlipConfig
    from transformers.models.instructblip.modeling_instructblip import (InstructBlipPreTrainedModel,
                                                                        InstructBlipQFormerModel,
                                                                        InstructBlipVisionModel)

    class InstructBlipEncoder(InstructBlipPreTrainedModel):
        """vision_model + query_tokens + qformer of an InstructBLIP checkpoint, under the checkpoint's names."""

        config_class = InstructBlipConfig
        main_input_name = "pixel_values"
        _keys_to_ignore_on_load_unexpected = [r"^language_model\.", r"^language_projection\."]

        def __init__(self, config) -> None:
            super().__init__(config)
            self.vision_model = InstructBlipVisionModel(config.vision_config)
            self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
            self.qformer = InstructBlipQFormerModel(config.qformer_config)
            self.post_init()

    return InstructBlipEncoder


def load_instructblip_parts(model: str, dev: torch.device, compute_dtype: torch.dtype, revision: str | None,
                            jpeg_draft: bool) -> tuple[nn.Module, ImagePreprocessor, object, dict]:
    """(ViT + instruction-aware Q-Former, its image preprocessor, the Q-Former's tokenizer, dims) of an InstructBLIP
    checkpoint; featcache.models.backbone wraps them in a Backbone."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers(progress_bars=False):
            net, info = _encoder_class().from_pretrained(model, revision=revision, dtype=compute_dtype,
                                                         output_loading_info=True)
            preprocessor = ImagePreprocessor.from_pretrained(model, revision=revision)
            tokenizer = AutoTokenizer.from_pretrained(model, revision=revision, subfolder="qformer_tokenizer")
    except OSError as exc:
        raise ModelLoadError(hub_hint(model, exc)) from exc
    except ValueError as exc:
        raise ModelLoadError(f"{model!r} is not an InstructBLIP checkpoint that featcache can read: {exc}") from exc
    if info["missing_keys"]:
        raise ModelLoadError(f"{model!r} lacks InstructBLIP vision model / Q-Former weights (missing e.g. "
                             f"{sorted(info['missing_keys'])[:3]})")
    preprocessor.jpeg_draft = jpeg_draft
    net.text_projection = net.vision_projection = net.embeddings = None  # no ITC path: image-only views, mm views
    net.eval().requires_grad_(False).to(dev)
    cfg = net.config
    dims = {"query_tokens": int(cfg.num_query_tokens), "query": int(cfg.qformer_config.hidden_size),
            "vision": int(cfg.vision_config.hidden_size)}
    return net, preprocessor, tokenizer, dims
