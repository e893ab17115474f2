"""Image decoding and preprocessing, in one deliberate path.

transformers 5 picks torchvision or PIL for BLIP's image processor depending on what is installed,
and the two do not give identical pixels. We always use the checkpoint's processor settings through
the PIL backend, so a GPU machine (with torchvision) and a laptop (without) produce the same inputs,
and the cache records that choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DatasetError

PREPROCESSING = "transformers-pil"
"""Name recorded in caches for this preprocessing path."""


class ImageLoadError(DatasetError):
    """An image file is missing or cannot be decoded; the message names it."""


DECODING = "exif-orientation;16bit-scaled-to-8bit;alpha-over-white;palette-cmyk-gray-to-rgb"
"""Name recorded in caches for the decoding rules of `to_rgb`."""

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(image):
    """The picture as a person sees it, as 8-bit RGB.

    - EXIF orientation applied (phone photos are stored sideways), as transformers' `load_image` does;
    - 16-bit (and 32-bit integer) images scaled to 8 bits, not clipped to white;
    - float images in [0, 1] scaled to 8 bits;
    - transparency composited over white (what transformers' `convert_to_rgb` does), palette images
      with a transparent colour included;
    - palette, CMYK, grayscale and bilevel images converted to RGB.
    """
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() if arr.size else 0.0
        scale = (255.0 if top <= 1.0 else 1.0) if image.mode == "F" else (1.0 if top <= 255 else 255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def load_image(path: str | Path):
    """Open an image fully (so a truncated file fails here, not later) and decode it by `to_rgb`'s rules."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path} (check the path)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot decode image {path}: it is damaged or not an image ({exc}); re-save it "
                             f"as PNG or JPEG, or remove it") from None


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
            "image_decoding": DECODING,
            "image_processor": type(p).__name__,
            "image_size": [int(size["height"]), int(size["width"])],
            "image_mean": [float(v) for v in p.image_mean],
            "image_std": [float(v) for v in p.image_std],
            "image_resample": int(p.resample),
            "image_rescale_factor": float(p.rescale_factor),
        }
