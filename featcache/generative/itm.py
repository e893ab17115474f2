"""`zeroshot --method itm`: a retrieval checkpoint's image-text matching head as a closed-set classifier.

ITM reads the ViT states through the Q-Former's cross-attention together with each candidate text
("Question: {question} Answer: {answer}" by default), so unlike ITC it cannot start from the cached
query states: it takes the ViT states from the cache when it holds them (`extract --store-vision`),
and otherwise encodes the cache's images again from the dataset (the ViT runs once per image).
The score of a candidate is the log-probability of "match", as `Blip2ForImageTextRetrieval(...,
use_image_text_matching_head=True)` computes it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import CacheFormatError


@torch.inference_mode()
def itm_scores(bb, image_embeds: torch.Tensor, texts: list[str]) -> np.ndarray:
    """log P(match) of one image's ViT states (1, N, D) with each text, (len(texts),)."""
    m = bb.model
    tokens = bb.tokenize(texts)
    k = len(texts)
    image = image_embeds.to(bb.device, bb.compute_dtype).expand(k, -1, -1)
    query_tokens = m.query_tokens.expand(k, -1, -1)
    embeds = m.embeddings(input_ids=tokens["input_ids"].to(bb.device), query_embeds=query_tokens)
    mask = torch.cat([torch.ones(query_tokens.shape[:2], dtype=torch.long, device=bb.device),
                      tokens["attention_mask"].to(bb.device)], dim=1)
    with bb._qformer_precision():
        hidden = m.qformer(query_embeds=embeds, query_length=query_tokens.shape[1], attention_mask=mask,
                           encoder_hidden_states=image,
                           encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long, device=bb.device)
                           ).last_hidden_state
    logits = bb.itm_head(hidden[:, :query_tokens.shape[1]].to(bb.itm_head.weight.dtype)).mean(dim=1)
    return torch.log_softmax(logits.double(), dim=-1)[:, 1].cpu().numpy()


class VisionStates:
    """The ViT states of a cache's image rows: read from /images/vision, or computed from the dataset."""

    def __init__(self, cache, bb, dataset=None) -> None:
        self.cache, self.bb, self.dataset = cache, bb, dataset
        self.stored = "vision" in cache.images
        if not self.stored and dataset is None:
            raise CacheFormatError(
                f"--method itm needs the ViT states: {cache.path} has none (extract it with --store-vision), so "
                f"give the dataset it was made from (--dataset, with --root/--images as for extract) and the images "
                f"are encoded again")
        if not self.stored:
            self.keys = cache.strings("images", "key")
            missing = [k for k in self.keys[:1000] if k not in dataset.image_paths and k not in dataset.augmented]
            if missing:
                raise CacheFormatError(f"the dataset given does not hold {cache.path}'s images (e.g. {missing[0]!r}); "
                                       f"give the one the cache was extracted from")

    def __call__(self, row: int) -> torch.Tensor:
        if self.stored:
            return torch.as_tensor(self.cache.read("images", "vision", np.array([row])).astype(np.float32))
        image = self.dataset.open_image(str(self.keys[row]))
        pixels = self.bb.preprocessor.resize_uint8(image)[None]
        with torch.inference_mode():
            return self.bb.vision_states(pixels)
