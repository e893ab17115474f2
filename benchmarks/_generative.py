"""Random-init generative BLIP-2 models for the benchmarks: the tiny test model, or blip2-opt-2.7b's sizes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from featcache.models.generative import GenerativeLM
from featcache.models.tiny_generative import build_tiny_generative

FLAN_T5_XL = dict(d_model=2048, d_ff=5120, num_layers=24, num_decoder_layers=24, num_heads=32, d_kv=64,
                  vocab_size=32128)


def sync(device) -> None:
    """Wait for the GPU, so a timer measures the work, not its launch."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def peak_gpu_gib(device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if str(device).startswith("cuda") else None


OPT_2_7B = dict(hidden_size=2560, num_hidden_layers=32, ffn_dim=10240, num_attention_heads=32, vocab_size=50272,
                word_embed_proj_dim=2560, max_position_embeddings=2048)
SIZES = {"opt": OPT_2_7B, "t5": FLAN_T5_XL}


def random_lm(lm: str, size: str, device: str, dtype: str = "float32", real_vision: bool = False) -> GenerativeLM:
    """`tiny`: the test checkpoint (`lm` opt or t5). `real`: blip2-opt-2.7b's or blip2-flan-t5-xl's language model
    (random init) behind the tiny vision side, or with `real_vision` behind ViT-g + the Q-Former at blip2's sizes;
    the tokenizer is the tiny one. In `dtype` (bfloat16 on a GPU, as users run it)."""
    from transformers import AutoTokenizer, Blip2Config, Blip2ForConditionalGeneration

    from featcache.models.tiny import blip2_config

    folder = build_tiny_generative(Path(tempfile.mkdtemp()) / lm, lm, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if size == "tiny":
        model = Blip2ForConditionalGeneration.from_pretrained(folder)
    else:
        config = Blip2Config.from_pretrained(folder)
        vision = blip2_config("opt", "real").to_dict() if real_vision else config.to_dict()
        config = Blip2Config(vision_config=vision["vision_config"], qformer_config=vision["qformer_config"],
                             text_config=config.text_config.to_dict() | SIZES[lm], num_query_tokens=32,
                             image_token_index=config.image_token_index)
        torch.manual_seed(0)
        with torch.device(device):  # initialised where it runs: 3.8B random parameters take minutes on a CPU
            model = Blip2ForConditionalGeneration(config)
    made = GenerativeLM(model.eval().requires_grad_(False).to(device), tokenizer, f"random-init-{lm}-{size}",
                        torch.device(device), torch.float32)
    if dtype != "float32":
        made.model.to(getattr(torch, dtype))
        made.dtype = getattr(torch, dtype)
    return made
