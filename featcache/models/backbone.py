"""The frozen BLIP-2 parts we run: ViT -> Q-Former queries, and the Q-Former text path.

We load `Blip2ForImageTextRetrieval` from any BLIP-2 checkpoint. It has no language model, so
generative checkpoints (OPT, Flan-T5) load with only their ViT, query tokens and Q-Former in
memory; their language-model weights are never read. Retrieval checkpoints also bring the Q-Former
word embeddings and the 256-d vision/text projections of the ITC objective. The computations below
are the ITC branch of `Blip2ForImageTextRetrieval.forward`, step for step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ModelLoadError
from ..images.preprocess import ImagePreprocessor, normalize_uint8
from .loading import default_compute_dtype, hub_hint, quiet_transformers, resolve_device, weights_fingerprint
from .names import TINY_RANDOM, resolve_model

DEFAULT_MODEL = "Salesforce/blip2-itm-vit-g"
DEFAULT_MAX_TEXT_LENGTH = 64
_TEXT_PARTS = ("embeddings.", "text_projection.", "vision_projection.")
_CORE_PARTS = ("vision_model.", "qformer.", "query_tokens")


@dataclass
class Backbone:
    """A loaded BLIP-2 feature extractor plus everything that identifies its outputs."""

    model: nn.Module
    preprocessor: ImagePreprocessor
    tokenizer: object | None
    model_id: str
    model_class: str
    revision: str
    device: torch.device
    compute_dtype: torch.dtype
    max_text_length: int = DEFAULT_MAX_TEXT_LENGTH
    fingerprint: str = ""
    dims: dict = field(default_factory=dict)
    itm_head: nn.Module | None = field(default=None, repr=False)
    """The image-text matching head (retrieval checkpoints), apart from `model` so the fingerprint ignores it."""
    _table: torch.Tensor | None = field(default=None, repr=False)
    _pad_to: int = field(default=0, repr=False)
    """With a compiled ViT: every batch is padded to this size, so one compiled graph serves them all."""
    graphs: object | None = field(default=None, repr=False)
    """The image forward captured as a CUDA graph (featcache.models.graphs), when extraction asked for it."""
    family: str = "blip2"
    """blip2 (Blip2ForImageTextRetrieval's parts) or instructblip (the instruction-aware Q-Former)."""
    mm_tokenizer: object | None = None
    """The Q-Former's tokenizer for question-conditioned features (BLIP-2's text path, InstructBLIP's own)."""

    def __post_init__(self) -> None:
        if self.mm_tokenizer is None and self.family == "blip2":  # BLIP-2's Q-Former reads text with its own
            self.mm_tokenizer = self.tokenizer

    @property
    def has_text(self) -> bool:
        """Retrieval checkpoints have the text path and projections; generative ones do not."""
        return self.tokenizer is not None and self.model.text_projection is not None

    @property
    def has_multimodal(self) -> bool:
        """Whether the Q-Former can read a question with the queries: InstructBLIP always, BLIP-2 where the
        checkpoint has the Q-Former's text path (retrieval checkpoints; the generative ones have none)."""
        return self.family == "instructblip" or self.has_text

    def pixel_values(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Model input on the device. uint8 (B, 3, H, W) from `ImagePreprocessor.resize_uint8` is copied as
        bytes and normalised there (= the processor's float output, bit for bit); float input as given."""
        pixels = torch.as_tensor(pixels)
        if pixels.dtype == torch.uint8:
            if self._table is None:
                self._table = torch.from_numpy(self.preprocessor.lookup_table()).to(self.device)
            pixels = normalize_uint8(pixels.to(self.device, non_blocking=True), self._table)
        return pixels.to(self.device, self.compute_dtype, non_blocking=True)

    def compile_vision(self) -> None:
        """Run the ViT (~97% of the FLOPs) through torch.compile, in place (state dict keys unchanged).
        Smaller batches (a shard's last) are padded to the largest seen: a new batch shape would
        recompile (minutes for ViT-g), and a few of them exhaust torch's recompile limit."""
        self.model.vision_model.compile(dynamic=False)
        self._pad_to = 1

    @property
    def qformer_tf32(self) -> bool:
        """The Q-Former keeps fp32 weights (as transformers loads it) but, when the ViT runs in half
        precision on a GPU, its matmuls use TF32 tensor cores: on an H100 that is 4x faster than fp32
        for a Q-Former that would otherwise take 20% of the forward (benchmarks/extract_speed.py), and
        its 10-bit mantissa is the precision of the fp16 ViT states it reads. fp32 runs stay fp32."""
        return self.device.type == "cuda" and self.compute_dtype != torch.float32

    def _qformer_precision(self):
        if not self.qformer_tf32:
            return contextlib.nullcontext()
        return _matmul_tf32()

    def vision_states(self, pixel_values: torch.Tensor | np.ndarray) -> torch.Tensor:
        """ViT last hidden state (B, 257, 1408 at 224 px): the frozen part fine-tuning can cache."""
        pixels = self.pixel_values(pixel_values)
        n = pixels.shape[0]
        if self._pad_to:
            self._pad_to = max(self._pad_to, n)
            if n < self._pad_to:
                pixels = torch.cat([pixels, pixels.new_zeros((self._pad_to - n, *pixels.shape[1:]))])
        return self.model.vision_model(pixel_values=pixels).last_hidden_state[:n]

    def queries(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Q-Former query states (B, 32, 768) from ViT states."""
        m = self.model
        image_embeds = image_embeds.to(self.device)
        image_attention_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        query_tokens = m.query_tokens.expand(image_embeds.shape[0], -1, -1)
        text = {"input_ids": None} if self.family == "instructblip" else {}  # no instruction: the queries alone
        with self._qformer_precision():
            return m.qformer(query_embeds=query_tokens, encoder_hidden_states=image_embeds,
                             encoder_attention_mask=image_attention_mask, **text).last_hidden_state

    def project_queries(self, query: torch.Tensor) -> torch.Tensor:
        """L2-normalised ITC projection of each query state."""
        proj = self.model.vision_projection(query.to(self.model.vision_projection.weight.dtype))
        return nn.functional.normalize(proj, dim=-1)

    def image_feature_shapes(self, keep_vision: bool = False) -> dict[str, tuple[int, ...]]:
        """Per-image shapes of what encode_images returns (for rows of images that failed)."""
        shapes = {"query": (self.dims["query_tokens"], self.dims["query"])}
        if self.model.vision_projection is not None:
            shapes["query_proj"] = (self.dims["query_tokens"], self.dims["proj"])
        if keep_vision:
            side = self.preprocessor.describe()["image_size"][0]
            shapes["vision"] = ((side // self.model.config.vision_config.patch_size) ** 2 + 1, self.dims["vision"])
        return shapes

    def mm_tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.mm_tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_text_length,
                                 return_tensors="pt")

    def multimodal_queries(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                           attention_mask: torch.Tensor) -> torch.Tensor:
        """The 32 query states (P, 32, 768) of P (image, text) pairs: queries and text tokens in one
        self-attention, only the queries cross-attending to the image. BLIP-2: the states
        `Blip2ForImageTextRetrieval(..., use_image_text_matching_head=True)` feeds its ITM head;
        InstructBLIP: `get_image_features(pixel_values, qformer_input_ids)`'s query output."""
        m = self.model
        image_embeds = image_embeds.to(self.device)
        n = image_embeds.shape[0]
        query_tokens = m.query_tokens.expand(n, -1, -1)
        ids, text_mask = input_ids.to(self.device), attention_mask.to(self.device)
        mask = torch.cat([torch.ones(query_tokens.shape[:2], dtype=torch.long, device=self.device), text_mask], 1)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        with self._qformer_precision():
            if self.family == "instructblip":
                hidden = m.qformer(input_ids=ids, attention_mask=mask, query_embeds=query_tokens,
                                   encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask)[0]
            else:
                embeds = m.embeddings(input_ids=ids, query_embeds=query_tokens)
                hidden = m.qformer(query_embeds=embeds, query_length=query_tokens.shape[1], attention_mask=mask,
                                   encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask
                                   ).last_hidden_state
        return hidden[:, :query_tokens.shape[1]]

    PAIR_CHUNK = 256
    """Pairs per Q-Former pass: bounds its attention memory however many questions a batch's images have."""

    def pair_features(self, image_embeds: torch.Tensor, owner: np.ndarray, texts: list[str],
                      store: str = "full") -> torch.Tensor:
        """Question-conditioned states of pairs (image `owner[i]` of the batch, texts[i]): (P, 32, 768), or their
        mean over the queries (P, 768) with store="pooled"; float32 on the device."""
        out = []
        for a in range(0, len(texts), self.PAIR_CHUNK):
            tokens = self.mm_tokenize(texts[a:a + self.PAIR_CHUNK])
            index = torch.as_tensor(owner[a:a + self.PAIR_CHUNK], device=image_embeds.device)
            states = self.multimodal_queries(image_embeds[index], tokens["input_ids"], tokens["attention_mask"]).float()
            out.append(states.mean(dim=1) if store == "pooled" else states)
        if not out:
            width = self.dims["query"]
            return torch.zeros((0, width) if store == "pooled" else (0, self.dims["query_tokens"], width),
                               device=self.device)
        return torch.cat(out)

    def use_cuda_graphs(self, batch_size: int, keep_vision: bool) -> str:
        """Capture the image forward as a CUDA graph for this batch size; "on", or "off: why" (runs eagerly)."""
        from .graphs import capture

        self.graphs, state = capture(self, batch_size, keep_vision)
        return state

    def image_forward(self, pixels: torch.Tensor, keep_vision: bool = False) -> dict[str, torch.Tensor]:
        """uint8 or float pixels on the device -> query, query_proj (if present) and, with keep_vision, the ViT
        states, float32: the part of encode_images a CUDA graph can hold (fixed shapes, no host work)."""
        return self._image_outputs(self.vision_states(pixels), keep_vision)

    def _image_outputs(self, image_embeds: torch.Tensor, keep_vision: bool) -> dict[str, torch.Tensor]:
        query = self.queries(image_embeds)
        out = {"query": query.float()}
        if self.model.vision_projection is not None:
            out["query_proj"] = self.project_queries(query).float()
        if keep_vision:
            out["vision"] = image_embeds.float()
        return out

    def _add_pairs(self, out: dict, image_embeds: torch.Tensor, pairs: tuple | None) -> dict:
        if pairs is not None:
            owner, texts, store = pairs
            out["mm_pooled" if store == "pooled" else "mm_query"] = self.pair_features(image_embeds, owner, texts, store)
        return out

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor | np.ndarray, keep_vision: bool = False,
                      to_numpy: bool = True, pairs: tuple | None = None) -> dict:
        """(B, 3, H, W) pixels (uint8 or preprocessed float) -> query (B, 32, 768) and, if present,
        query_proj (B, 32, 256); with keep_vision also the ViT states (`vision`); with pairs = (owner, texts,
        store) the question-conditioned states `mm_query` or `mm_pooled` from the same ViT states. With
        to_numpy=False the float32 tensors stay on the device (for an asynchronous copy back)."""
        pixels = torch.as_tensor(pixel_values)
        if self.graphs is not None and pixels.dtype == torch.uint8 and pixels.shape[0] <= self.graphs.batch_size:
            names = ("query", "query_proj") + (("vision",) if keep_vision else ())
            out, vision = self.graphs(pixels.to(self.device, non_blocking=True), names)
            out = self._add_pairs(out, vision.to(self.compute_dtype), pairs)  # before the next replay reuses vision
            return {k: v.cpu().numpy() for k, v in out.items()} if to_numpy else out
        return self._features(self.vision_states(pixel_values), keep_vision, to_numpy, pairs)

    @torch.inference_mode()
    def encode_vision(self, vision: np.ndarray | torch.Tensor, keep_vision: bool = False, to_numpy: bool = True,
                      pairs: tuple | None = None) -> dict:
        """As encode_images, from ViT states a cache stored (`extract --store-vision`): the ViT is not run."""
        image_embeds = torch.as_tensor(np.asarray(vision)).to(self.device, self.compute_dtype)
        return self._features(image_embeds, keep_vision, to_numpy, pairs)

    def _features(self, image_embeds, keep_vision, to_numpy, pairs) -> dict:
        out = self._add_pairs(self._image_outputs(image_embeds, keep_vision), image_embeds, pairs)
        return {k: v.cpu().numpy() for k, v in out.items()} if to_numpy else out

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding="longest", truncation=True,
                              max_length=self.max_text_length, return_tensors="pt")

    def token_counts(self, texts: list[str]) -> np.ndarray:
        """Tokens per text before truncation, so questions cut at max_text_length can be counted and flagged."""
        return np.array([len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]], dtype=np.int64)

    def text_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-Former text-only path: (CLS state, L2-normalised text projection)."""
        m = self.model
        embeds = m.embeddings(input_ids=input_ids.to(self.device))
        with self._qformer_precision():
            hidden = m.qformer(query_embeds=embeds, query_length=0,
                               attention_mask=attention_mask.to(self.device)).last_hidden_state
        cls = hidden[:, 0, :]
        proj = m.text_projection(cls.to(m.text_projection.weight.dtype))
        return cls, nn.functional.normalize(proj, dim=-1)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Questions -> text_cls (B, 768), the Q-Former CLS state, and text_proj (B, 256), its ITC embedding."""
        if not self.has_text:
            raise ModelLoadError(f"{self.model_id} has no Q-Former text path (a generative checkpoint); "
                                 f"use a retrieval checkpoint such as {DEFAULT_MODEL} for text features")
        tokens = self.tokenize(texts)
        cls, proj = self.text_states(tokens["input_ids"], tokens["attention_mask"])
        return {"text_cls": cls.float().cpu().numpy(), "text_proj": proj.float().cpu().numpy()}

    def provenance(self) -> dict:
        """What made the features: stored as cache attributes and compared by readers."""
        import transformers

        from ..version import __version__

        meta = {
            "model_id": self.model_id,
            "model_revision": self.revision,
            "model_class": self.model_class,
            "model_fingerprint": self.fingerprint,
            "compute_dtype": str(self.compute_dtype).replace("torch.", ""),
            "has_text": self.has_text,
            "model_family": self.family,
            "max_text_length": self.max_text_length if self.has_text else 0,
            "tokenizer": type(self.tokenizer).__name__ if self.tokenizer is not None else "",
            "attn_implementation": str(self.model.config.vision_config._attn_implementation),
            "qformer_matmul": "tf32" if self.qformer_tf32 else "fp32",
            "featcache_version": __version__,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }
        meta.update(self.preprocessor.describe())
        meta.update({f"dim_{k}": v for k, v in self.dims.items()})
        return meta


@contextlib.contextmanager
def _matmul_tf32():
    """TF32 for CUDA float32 matmuls inside the block only (the flag is global: restored after)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def load_backbone(model: str = DEFAULT_MODEL, device: str = "auto", dtype: str | None = None,
                  revision: str | None = None, max_text_length: int = DEFAULT_MAX_TEXT_LENGTH,
                  jpeg_draft: bool = False) -> Backbone:
    """Load the ViT + Q-Former (+ text path where the checkpoint has one) from a hub id or a folder."""
    from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

    requested = model
    model = resolve_model(model)
    dev = resolve_device(device)
    compute_dtype = getattr(torch, dtype) if dtype else default_compute_dtype(dev)
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser())
        if not (Path(model) / "config.json").exists():
            raise ModelLoadError(f"{model} is a folder but has no config.json: not a saved checkpoint "
                                 f"(save one with save_pretrained or `hf download`)")
    from .instructblip import ARCHITECTURE, is_instructblip, load_instructblip_parts
    from .loading import offline_unless_hub_answers

    offline_unless_hub_answers(model)
    if is_instructblip(model, revision):
        net, preprocessor, qformer_tokenizer, dims = load_instructblip_parts(model, dev, compute_dtype, revision,
                                                                             jpeg_draft)
        return Backbone(model=net, preprocessor=preprocessor, tokenizer=None,
                        model_id=requested if requested.startswith(TINY_RANDOM) else model, model_class=ARCHITECTURE,
                        revision=revision or getattr(net.config, "_commit_hash", None) or "", device=dev,
                        compute_dtype=compute_dtype, max_text_length=max_text_length,
                        fingerprint=weights_fingerprint(net), dims=dims, family="instructblip",
                        mm_tokenizer=qformer_tokenizer)
    try:
        with quiet_transformers(progress_bars=False):
            net, info = Blip2ForImageTextRetrieval.from_pretrained(
                model, revision=revision, dtype=compute_dtype, output_loading_info=True)
            preprocessor = ImagePreprocessor.from_pretrained(model, revision=revision)
        preprocessor.jpeg_draft = jpeg_draft
    except OSError as exc:
        raise ModelLoadError(hub_hint(model, exc)) from exc
    except ValueError as exc:
        raise ModelLoadError(f"{model!r} is not a BLIP-2 checkpoint that featcache can read: {exc}") from exc

    missing = set(info["missing_keys"])
    if any(k.startswith(_CORE_PARTS) for k in missing):
        raise ModelLoadError(f"{model!r} lacks the BLIP-2 vision model / Q-Former weights "
                             f"(missing e.g. {sorted(missing)[:3]}); is it a BLIP-2 checkpoint?")
    tokenizer = None
    # the ITM head is kept beside the model (zeroshot --method itm), outside the weights that are fingerprinted
    itm_head = None if any(k.startswith("itm_head") for k in missing) else net.itm_head.eval().requires_grad_(False)
    net.itm_head = None
    text_ffn = bool(getattr(net.config.qformer_config, "use_qformer_text_input", False))
    if not text_ffn or any(k.startswith(_TEXT_PARTS) for k in missing):
        net.embeddings = net.text_projection = net.vision_projection = None  # never use random weights
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
        except OSError as exc:
            raise ModelLoadError(hub_hint(model, exc)) from exc
    net.eval().requires_grad_(False).to(dev)

    cfg = net.config
    dims = {"query_tokens": int(cfg.num_query_tokens), "query": int(cfg.qformer_config.hidden_size),
            "vision": int(cfg.vision_config.hidden_size)}
    if tokenizer is not None:
        dims["proj"] = int(cfg.image_text_hidden_size)
    return Backbone(
        model=net, preprocessor=preprocessor, tokenizer=tokenizer,
        model_id=requested if requested.startswith(TINY_RANDOM) else model,
        model_class=(cfg.architectures or [type(net).__name__])[0],
        revision=revision or getattr(cfg, "_commit_hash", None) or "", device=dev,
        compute_dtype=compute_dtype, max_text_length=max_text_length,
        fingerprint=weights_fingerprint(net), dims=dims, itm_head=itm_head.to(dev) if itm_head is not None else None,
        mm_tokenizer=tokenizer)
