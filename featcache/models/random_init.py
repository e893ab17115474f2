"""In-memory BLIP-2 feature extractors with random weights, for benchmarks: `real` has
blip2-itm-vit-g's dimensions, so its speed and memory are the real model's; its outputs mean nothing."""

from __future__ import annotations

from pathlib import Path

from ..images.preprocess import ImagePreprocessor
from .backbone import Backbone
from .loading import default_compute_dtype, resolve_device, weights_fingerprint
from .tiny import blip2_config, tiny_vocabulary


def _bert_tokenizer():
    """The tiny WordPiece vocabulary as a BertTokenizer (random models have no tokenizer files of their own)."""
    import tempfile

    from transformers import BertTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(tiny_vocabulary()) + "\n")
        return BertTokenizer(str(vocab), do_lower_case=True)


def random_backbone(size: str = "real", device: str = "cpu", dtype: str | None = None, seed: int = 0):
    """An in-memory Backbone with random weights (for benchmarks): `real` has blip2-itm-vit-g's
    dimensions, so its speed and memory are the real model's; its outputs mean nothing."""
    import torch
    from transformers import Blip2ForImageTextRetrieval, BlipImageProcessorPil

    dev = resolve_device(device)
    compute = getattr(torch, dtype) if dtype else default_compute_dtype(dev)
    torch.manual_seed(seed)
    config = blip2_config("itm", size)
    config.qformer_config.use_qformer_text_input = True
    model = Blip2ForImageTextRetrieval(config).eval().requires_grad_(False)
    model.itm_head = None
    if compute != torch.float32:  # as from_pretrained does: the Q-Former and query tokens stay fp32
        for name, module in model.named_children():
            if name not in ("qformer",):
                module.to(compute)
    model.to(dev)
    side = config.vision_config.image_size
    tokenizer = _bert_tokenizer()
    cfg = model.config
    return Backbone(model=model, preprocessor=ImagePreprocessor(BlipImageProcessorPil(size={"height": side, "width": side})),
                    tokenizer=tokenizer, model_id=f"random-init-{size}", model_class="Blip2ForImageTextRetrieval",
                    revision="", device=dev, compute_dtype=compute, fingerprint=weights_fingerprint(model),
                    dims={"query_tokens": cfg.num_query_tokens, "query": cfg.qformer_config.hidden_size,
                          "vision": cfg.vision_config.hidden_size, "proj": cfg.image_text_hidden_size})


def random_instructblip_backbone(size: str = "real", device: str = "cpu", dtype: str | None = None, seed: int = 0):
    """An in-memory InstructBLIP Backbone (ViT + instruction-aware Q-Former) with random weights: `real` has
    instructblip-flan-t5-xl's vision and Q-Former dimensions (ViT-g 1408x39, Q-Former 768x12). Benchmarks only."""
    import torch
    from transformers import BlipImageProcessorPil, InstructBlipConfig

    from .instructblip import ARCHITECTURE, _encoder_class

    dev = resolve_device(device)
    compute = getattr(torch, dtype) if dtype else default_compute_dtype(dev)
    torch.manual_seed(seed)
    base = blip2_config("itm", size).to_dict()
    qformer = {k: base["qformer_config"][k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                     "intermediate_size", "cross_attention_frequency",
                                                     "max_position_embeddings", "vocab_size")}
    config = InstructBlipConfig(vision_config=base["vision_config"], qformer_config=qformer,
                                text_config={"model_type": "t5", "d_model": 64, "num_layers": 1}, num_query_tokens=32)
    model = _encoder_class()(config).eval().requires_grad_(False)
    if compute != torch.float32:  # as from_pretrained does for BLIP-2: the Q-Former stays fp32
        model.vision_model.to(compute)
    model.text_projection = model.vision_projection = model.embeddings = None
    model.to(dev)
    side = config.vision_config.image_size
    tokenizer = _bert_tokenizer()
    return Backbone(model=model, preprocessor=ImagePreprocessor(BlipImageProcessorPil(size={"height": side, "width": side})),
                    tokenizer=None, model_id=f"random-init-instructblip-{size}", model_class=ARCHITECTURE, revision="",
                    device=dev, compute_dtype=compute, fingerprint=weights_fingerprint(model),
                    dims={"query_tokens": 32, "query": config.qformer_config.hidden_size,
                          "vision": config.vision_config.hidden_size}, family="instructblip", mm_tokenizer=tokenizer)
