"""A generative BLIP-2's language side, fed from cached Q-Former query states.

The cache holds the Q-Former's query states of the checkpoint that made it. A generative checkpoint's
language model reads them through its `language_projection` (768 -> d_LLM, one small matmul), so
featcache computes the projected tokens when it needs them instead of storing 32 x d_LLM numbers per
image (2560 for OPT-2.7b: 3.3x the query states). The cache must come from the same checkpoint:
`check_cache` compares the fingerprint of the vision model, query tokens and Q-Former.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ModelLoadError
from .loading import hub_hint, quiet_transformers, resolve_device, weights_fingerprint
from .names import TINY_GENERATIVE, TINY_INSTRUCTBLIP, resolve_model

GENERATIVE_ARCHITECTURES = ("Blip2ForConditionalGeneration", "InstructBlipForConditionalGeneration")

_SHARED = ("vision_model.", "qformer.", "query_tokens")


@dataclass
class GenerativeLM:
    model: object  # Blip2ForConditionalGeneration
    tokenizer: object
    model_id: str
    device: torch.device
    dtype: torch.dtype
    qformer_adapted: bool = False
    """A fine-tune adapted the Q-Former: its query states must be recomputed from cached ViT states."""
    instruction_aware: bool = False
    """InstructBLIP: the language model reads the query states the Q-Former computed with the question
    (a cache's /pairs, `extract --features multimodal`), one set per question instead of per image."""
    _fingerprint: str = ""

    @property
    def decoder_only(self) -> bool:
        return bool(self.model.config.use_decoder_only_language_model)

    @property
    def lm(self):
        return self.model.language_model

    @property
    def answer_end(self) -> list[int]:
        """What closes a decoder-only model's answer: BLIP-2 OPT's "\n" (as LAVIS trained it), InstructBLIP's
        end of sequence (Vicuna answers end with </s>)."""
        if self.instruction_aware:
            return [self.tokenizer.eos_token_id]
        return self.tokenizer("\n", add_special_tokens=False).input_ids

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids.to(self.device))

    @torch.inference_mode()
    def project(self, query) -> torch.Tensor:
        """Cached query states (B, 32, 768) -> the language model's image tokens (B, 32, d_LLM), as
        `get_image_features(...).pooler_output` computes them."""
        query = torch.as_tensor(np.asarray(query, dtype=np.float32)).to(self.device, self.dtype)
        return self.model.language_projection(query)

    def image_tokens(self, cache, rows: np.ndarray) -> torch.Tensor:
        """The language model's image tokens for sorted unique cache rows: the cached query states
        projected, or, with an adapted Q-Former, the Q-Former rerun on the cached ViT states."""
        if self.instruction_aware:  # rows are pair rows: each question's own query states
            return self.project(cache.read("pairs", "mm_query", rows))
        if not self.qformer_adapted:
            return self.project(cache.read("images", "query", rows))
        with torch.inference_mode():
            return self.tokens_from_vision(read_vision(cache, rows))

    def tokens_from_vision(self, vision) -> torch.Tensor:
        """ViT states (B, 257, D) -> Q-Former (with any adapters) -> language_projection; keeps the graph."""
        vision = torch.as_tensor(np.asarray(vision, dtype=np.float32)).to(self.device, self.dtype)
        m = self.model
        query = m.qformer(query_embeds=m.query_tokens.expand(vision.shape[0], -1, -1), encoder_hidden_states=vision,
                          encoder_attention_mask=torch.ones(vision.shape[:2], dtype=torch.long, device=self.device)
                          ).last_hidden_state
        return m.language_projection(query.to(m.language_projection.weight.dtype))

    def qformer_fingerprint(self) -> str:
        """The fingerprint `extract` records for this checkpoint's vision model + Q-Former (computed once, at
        load: adapters injected later rename the weights they wrap)."""
        if not self._fingerprint:
            shared = {k: v for k, v in self.model.state_dict().items() if k.startswith(_SHARED)}
            self._fingerprint = weights_fingerprint(_StateDict(shared))
        return self._fingerprint

    def check_cache(self, attrs: dict, path, pairs=None) -> None:
        """The cache was made by this checkpoint's Q-Former (for InstructBLIP: with the questions, as /pairs)."""
        if self.instruction_aware and attrs.get("model_fingerprint") == self.qformer_fingerprint() and (
                attrs.get("features") != "multimodal" or (pairs is not None and "mm_query" not in pairs)):
            raise ModelLoadError(
                f"{path} holds {self.model_id}'s query states without the questions, but InstructBLIP's language model "
                f"reads the instruction-aware ones: extract with --model {self.model_id} --features multimodal "
                f"(--mm-store full; from a --store-vision cache add --from-vision CACHE)")
        if attrs.get("model_fingerprint") != self.qformer_fingerprint():
            raise ModelLoadError(
                f"{path} was extracted with {attrs.get('model_id')!r}, whose Q-Former is not {self.model_id!r}'s "
                f"(a generative checkpoint's Q-Former was trained further than the retrieval one's). Extract a "
                f"cache with --model {self.model_id} for zero-shot ranking with it.")


def read_vision(cache, rows: np.ndarray) -> np.ndarray:
    if "vision" not in cache.images:
        raise ModelLoadError(f"this fine-tune adapted the Q-Former, which reads the ViT states: {cache.path} has none; "
                             f"extract it with --store-vision")
    return cache.read("images", "vision", rows)


class _StateDict(torch.nn.Module):
    def __init__(self, tensors: dict) -> None:
        super().__init__()
        self.tensors = tensors

    def state_dict(self, *args, **kwargs):  # noqa: D102 (what weights_fingerprint reads)
        return self.tensors


def is_generative_checkpoint(model: str) -> bool:
    """Whether `model` (hub id, folder, tiny-random-opt|t5) is a Blip2ForConditionalGeneration; False
    when its config cannot be read (the loader then says why)."""
    from transformers import AutoConfig

    if model in TINY_GENERATIVE or model in TINY_INSTRUCTBLIP:
        return True
    from pathlib import Path

    local = Path(resolve_model(model))
    if local.exists() and not (local / "config.json").is_file():
        return False  # a local folder that is no transformers checkpoint: never ask the hub about its name
    from .loading import offline_unless_hub_answers

    offline_unless_hub_answers(str(local))
    try:
        config = AutoConfig.from_pretrained(str(local))
    except (OSError, ValueError):
        return False
    return (getattr(config, "architectures", None) or [""])[0] in GENERATIVE_ARCHITECTURES


def load_generative(model: str, device: str = "auto", dtype: str | None = None) -> GenerativeLM:
    """A generative BLIP-2 (OPT / Flan-T5) from a hub id or folder; `tiny-random-opt|t5` build one locally.
    Default dtype: bf16 on GPU (fp16 overflows in T5), fp32 on CPU."""
    from transformers import AutoConfig, AutoTokenizer

    from .loading import offline_unless_hub_answers

    path = resolve_model(model)
    dev = resolve_device(device)
    compute = getattr(torch, dtype) if dtype else (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    offline_unless_hub_answers(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise ModelLoadError(hub_hint(model, exc)) from exc
    arch = (getattr(config, "architectures", None) or [""])[0]
    if arch not in GENERATIVE_ARCHITECTURES:
        raise ModelLoadError(f"{model!r} is a {arch or type(config).__name__} checkpoint without a language model; "
                             f"zero-shot rank/generate need a generative BLIP-2 such as Salesforce/blip2-opt-2.7b, "
                             f"Salesforce/blip2-flan-t5-xl, Salesforce/instructblip-flan-t5-xl, or tiny-random-opt "
                             f"for a RANDOM test model")
    import transformers

    try:
        with quiet_transformers(progress_bars=False):  # ("Loading weights" bars on every command were noise)
            net = getattr(transformers, arch).from_pretrained(path, dtype=compute).eval().requires_grad_(False).to(dev)
            tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelLoadError(hub_hint(model, exc)) from exc
    tiny = model in TINY_GENERATIVE or model in TINY_INSTRUCTBLIP
    lm = GenerativeLM(net, tokenizer, model if tiny else path, dev, compute,
                      instruction_aware=arch == "InstructBlipForConditionalGeneration")
    lm.qformer_fingerprint()
    return lm
