"""Tiny random retrieval BLIP-2 checkpoints (and the configs of every tiny or real-size random model),
saved like real ones.

Tests, the offline demo and benchmarks need a checkpoint that loads through exactly the path a hub
checkpoint takes (`from_pretrained` of a folder) without any download. Weights are random: nothing
computed from them means anything as accuracy.
"""

from __future__ import annotations

import string
from pathlib import Path

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = (
    "what is the shape color colour does image contain a an of in on there how many which where who "
    "yes no not this that it picture photo object table chair bed floor wall left right front behind "
    "circle rectangle triangle red green blue yellow gray grey teal black brown white"
).split()


def tiny_vocabulary() -> list[str]:
    """A WordPiece vocabulary that can spell any lower-case ASCII text (letters as ## pieces)."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    seen: dict[str, None] = {}
    for token in _SPECIAL + chars + pieces + _WORDS:
        seen.setdefault(token, None)
    return list(seen)


def blip2_config(kind: str = "itm", size: str = "tiny", image_size: int = 32):
    """A Blip2Config: `kind` itm (retrieval, with projections) or opt (generative);
    `size` tiny, or real (blip2-itm-vit-g dimensions: ViT-g 1408x39, Q-Former 768x12)."""
    from transformers import Blip2Config

    if size == "real":
        vision = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                      num_attention_heads=16, image_size=224, patch_size=14, layer_norm_eps=1e-6)
        qformer = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, cross_attention_frequency=2, vocab_size=30523,
                       max_position_embeddings=512)
        proj = 256
    elif size == "tiny":
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=image_size, patch_size=8, layer_norm_eps=1e-6)
        qformer = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       cross_attention_frequency=1, vocab_size=len(tiny_vocabulary()), max_position_embeddings=64)
        proj = 16
    else:
        raise ValueError(f"size must be 'tiny' or 'real', got {size!r}")
    # Blip2VisionConfig initialises at std 1e-10 (fine for loading weights, but a random ViT would
    # then map every image to the same output): random features must depend on the image.
    vision["initializer_range"] = 0.02
    config = dict(vision_config=vision, qformer_config=qformer, num_query_tokens=32,
                  image_text_hidden_size=proj)
    if kind == "itm":
        qformer["use_qformer_text_input"] = True  # the Q-Former's text feed-forward, as in blip2-itm-vit-g
        config["text_config"] = dict(model_type="opt", hidden_size=16, num_hidden_layers=1,
                                     ffn_dim=32, num_attention_heads=2, vocab_size=64,
                                     word_embed_proj_dim=16)
        arch = "Blip2ForImageTextRetrieval"
    elif kind == "opt":
        lm_hidden = 2560 if size == "real" else 64
        config["text_config"] = dict(model_type="opt", hidden_size=lm_hidden, num_hidden_layers=2,
                                     ffn_dim=2 * lm_hidden, num_attention_heads=2, vocab_size=2048,
                                     word_embed_proj_dim=lm_hidden)
        arch = "Blip2ForConditionalGeneration"
    else:
        raise ValueError(f"kind must be 'itm' or 'opt', got {kind!r}")
    cfg = Blip2Config(**config)
    cfg.architectures = [arch]
    return cfg


def build_tiny_blip2(out_dir: str | Path, kind: str = "itm", seed: int = 0, image_size: int = 32) -> Path:
    """Write a tiny random BLIP-2 checkpoint plus its processor files to `out_dir` and return it.

    `kind="itm"` mirrors Salesforce/blip2-itm-vit-g (text path and projections);
    `kind="opt"` mirrors the generative checkpoints (a language model, no projections).
    """
    import torch
    from transformers import (BertTokenizer, BlipImageProcessorPil, Blip2ForConditionalGeneration,
                              Blip2ForImageTextRetrieval)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = blip2_config(kind, "tiny", image_size)
    cls = Blip2ForImageTextRetrieval if kind == "itm" else Blip2ForConditionalGeneration
    model = cls(config).eval()
    with torch.no_grad():  # the library zero-initialises the query tokens: make them informative
        model.query_tokens.normal_(0.0, 0.5)
    model.save_pretrained(out)

    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(tiny_vocabulary()) + "\n")
    tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(out)
    BlipImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out
