"""Image decoding and preprocessing, in one deliberate path.

transformers 5 picks torchvision or PIL for BLIP's image processor depending on what is installed,
and the two do not give identical pixels. We always use the checkpoint's processor settings through
the PIL backend, so a GPU machine (with torchvision) and a laptop (without) produce the same inputs,
and the cache records that choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PREPROCESSING = "transformers-pil"
"""Name recorded in caches for this preprocessing path."""


class ImageLoadError(Exception):
    """An image file is missing or cannot be decoded; the message names it."""


def load_image(path: str | Path):
    """Open an image fully (so a truncated file fails here, not later) and convert it to RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot decode image {path}: {exc}") from None


class ImagePreprocessor:
    """Picklable callable turning a PIL image into a (3, H, W) float32 array, for loader workers."""

    def __init__(self, processor) -> None:
        self.processor = processor

    @classmethod
    def from_pretrained(cls, source: str, **kwargs) -> "ImagePreprocessor":
        from transformers import AutoImageProcessor

        return cls(AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs))

    def __call__(self, image) -> np.ndarray:
        out = self.processor(images=image, return_tensors="np")["pixel_values"][0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def describe(self) -> dict:
        """HDF5-attribute-ready description; two caches are comparable only if these agree."""
        p = self.processor
        size = p.size if isinstance(p.size, dict) else {"height": p.size.height, "width": p.size.width}
        return {
            "preprocessing": PREPROCESSING,
            "image_processor": type(p).__name__,
            "image_size": [int(size["height"]), int(size["width"])],
            "image_mean": [float(v) for v in p.image_mean],
            "image_std": [float(v) for v in p.image_std],
            "image_resample": int(p.resample),
            "image_rescale_factor": float(p.rescale_factor),
        }
