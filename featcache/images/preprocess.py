"""Preprocessing to the model's input, in one deliberate path.

transformers 5 picks torchvision or PIL for BLIP's image processor depending on what is installed,
and the two do not give identical pixels. We always use the checkpoint's processor settings through
the PIL backend, so a GPU machine (with torchvision) and a laptop (without) produce the same inputs,
and the cache records that choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .decode import DECODING, JPEG_DRAFT, load_image

PREPROCESSING = "transformers-pil"
"""Name recorded in caches for this preprocessing path."""


class ImagePreprocessor:
    """The checkpoint's image processor, split where the bytes get small: a resize to uint8 on the CPU
    (decode workers ship 1 byte per value, not 4), and the rescale + normalise as a per-channel lookup
    table applied wherever the model runs (on the GPU, after a uint8 copy). The table is computed with
    transformers' own arithmetic, so the result equals `processor(image)` bit for bit (tested)."""

    def __init__(self, processor, jpeg_draft: bool = False) -> None:
        self.processor = processor
        self.jpeg_draft = jpeg_draft
        """Decode large JPEGs at a reduced scale that keeps at least twice the model's size (`draft_size`)."""

    @classmethod
    def from_pretrained(cls, source: str, **kwargs) -> "ImagePreprocessor":
        from transformers import AutoImageProcessor

        return cls(AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs))

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) the model takes."""
        p = self.processor
        size = p.size if isinstance(p.size, dict) else {"height": p.size.height, "width": p.size.width}
        return int(size["height"]), int(size["width"])

    @property
    def draft_size(self) -> int | None:
        """The `load_image` draft size this preprocessing asks for (None: full decode)."""
        return 2 * max(self.size) if self.jpeg_draft else None

    def load(self, path: str | Path):
        """Decode an image file as this preprocessing expects (see `load_image`)."""
        return load_image(path, self.draft_size)

    def resize_uint8(self, image) -> np.ndarray:
        """RGB PIL image -> (3, H, W) uint8 at the model's size, resampled as the processor does."""
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), resample=int(self.processor.resample))
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))

    def lookup_table(self) -> np.ndarray:
        """(3, 256) float32: channel c's model input for byte value v, computed as transformers does
        (float64 rescale, cast to float32, then float32 (x - mean) / std)."""
        p = self.processor
        values = (np.arange(256, dtype=np.float64) * float(p.rescale_factor)).astype(np.float32)
        mean, std = np.asarray(p.image_mean, dtype=np.float32), np.asarray(p.image_std, dtype=np.float32)
        return np.ascontiguousarray((values[None, :] - mean[:, None]) / std[:, None], dtype=np.float32)

    def __call__(self, image) -> np.ndarray:
        """RGB PIL image -> (3, H, W) float32 model input (= the processor's output)."""
        u8 = self.resize_uint8(image)
        return self.lookup_table()[np.arange(3)[:, None, None], u8]

    def describe(self) -> dict:
        """HDF5-attribute-ready description; two caches are comparable only if these agree."""
        p = self.processor
        return {
            "preprocessing": PREPROCESSING,
            "image_decoding": DECODING + (JPEG_DRAFT if self.jpeg_draft else ""),
            "image_processor": type(p).__name__,
            "image_size": list(self.size),
            "image_mean": [float(v) for v in p.image_mean],
            "image_std": [float(v) for v in p.image_std],
            "image_resample": int(p.resample),
            "image_rescale_factor": float(p.rescale_factor),
        }


def normalize_uint8(pixels, table):
    """(B, 3, H, W) uint8 tensor -> float32 model input through the (3, 256) lookup table, on pixels' device."""
    import torch

    offsets = torch.arange(3, device=pixels.device).view(1, 3, 1, 1) * 256
    return table.reshape(-1)[pixels.long() + offsets]
