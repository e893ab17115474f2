"""In-memory BLIP-2 feature extractors with random weights, for benchmarks: `real` has
blip2-itm-vit-g's dimensions, so its speed and memory are the real model's; its outputs mean nothing."""

from __future__ import annotations

from pathlib import Path

from ..images.preprocess import ImagePreprocessor
from .backbone import Backbone
from .loading import default_compute_dtype, resolve_device, weights_fingerprint
from .tiny import blip2_config, tiny_vocabulary


def random_backbone(size: str = "real", device: str = "cpu", dtype: str | None = None, seed: int = 0):
    """An in-memory Backbone with random weights (for benchmarks): `real` has blip2-itm-vit-g's
    dimensions, so its speed and memory are the real model's; its outputs mean nothing."""
    import tempfile

    import torch
    from transformers import BertTokenizer, Blip2ForImageTextRetrieval, BlipImageProcessorPil

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
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(tiny_vocabulary()) + "\n")
        tokenizer = BertTokenizer(str(vocab), do_lower_case=True)
    cfg = model.config
    return Backbone(model=model, preprocessor=ImagePreprocessor(BlipImageProcessorPil(size={"height": side, "width": side})),
                    tokenizer=tokenizer, model_id=f"random-init-{size}", model_class="Blip2ForImageTextRetrieval",
                    revision="", device=dev, compute_dtype=compute, fingerprint=weights_fingerprint(model),
                    dims={"query_tokens": cfg.num_query_tokens, "query": cfg.qformer_config.hidden_size,
                          "vision": cfg.vision_config.hidden_size, "proj": cfg.image_text_hidden_size})
