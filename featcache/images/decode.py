"""Image decoding: a file becomes the 8-bit RGB picture a person sees (EXIF orientation, 16-bit,
transparency, palettes), with errors that name the file. PIL only; the rules are recorded in caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError

class ImageLoadError(DatasetError):
    """An image file is missing or cannot be decoded; the message names it."""


DECODING = "exif-orientation;16bit-scaled-to-8bit;alpha-over-white;palette-cmyk-gray-to-rgb"
"""Name recorded in caches for the decoding rules of `to_rgb`."""

JPEG_DRAFT = ";jpeg-draft-2x"
"""Suffix of `image_decoding` when large JPEGs are decoded at reduced scale (`extract --jpeg-draft`)."""

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
        arr = np.asarray(image)  # its own dtype, scaled a block of rows at a time: float64 copies of a 156-MP
        top = float(arr.max()) if arr.size else 0.0  # 16-bit PNG took 4.8 GB per decode worker
        scale = (255.0 if top <= 1.0 else 1.0) if image.mode == "F" else (1.0 if top <= 255 else 255.0 / 65535.0)
        out = np.empty(arr.shape, dtype=np.uint8)
        for start in range(0, len(arr), 1024):
            block = arr[start:start + 1024].astype(np.float32) * np.float32(scale)
            out[start:start + 1024] = np.clip(np.rint(block), 0, 255)
        image = Image.fromarray(out, "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def load_image(path: str | Path, draft_size: int | None = None):
    """Open an image fully (so a truncated file fails here, not later) and decode it by `to_rgb`'s rules.

    With `draft_size`, a JPEG is decoded at the smallest of 1/2, 1/4, 1/8 scale that keeps both sides at
    least `draft_size` (libjpeg's DCT scaling): several times faster on large photos."""
    return _decode(path, path, draft_size)


def decode_image(data: bytes, name: str, draft_size: int | None = None):
    """An image held in memory (a parquet cell, a tar member) decoded as `load_image` decodes a file; `name`
    says where it came from in errors. Nothing is written out."""
    import io

    if not data:
        raise ImageLoadError(f"image {name} is empty (no bytes); fix or drop that item")
    return _decode(io.BytesIO(data), name, draft_size)


def check_image_file(path: str | Path) -> None:
    """Only regular files are opened as images: a FIFO or device would block, or never end."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path} (check the path)") from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read image {path} ({exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise ImageLoadError(f"image {path} is {kind}, not a regular file; give the path of a picture")


def _decode(source, name, draft_size: int | None):
    from PIL import Image, UnidentifiedImageError

    path = name
    if isinstance(source, (str, Path)):
        check_image_file(source)
    try:
        with Image.open(source) as img:
            if draft_size and img.format == "JPEG":
                img.draft(img.mode, (draft_size, draft_size))
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path} (check the path)") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image {path} is too large to decode safely ({exc}); resize it, or remove it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot decode image {path}: it is damaged or not an image ({exc}); re-save it "
                             f"as PNG or JPEG, or remove it") from None
