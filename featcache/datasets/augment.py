"""Training-side image augmentation for DAQUAR, as in the BLIP-2 Classifier paper: small rotation,
resized crop (0.9-1.0 of the area), colour jitter 0.1 and a light blur. PIL only (no torchvision on
CPU machines), and seeded per augmented key so an augmented image is the same on every read and
can be cached like any other image."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

MAX_ROTATION_DEG = 10.0
CROP_AREA = (0.9, 1.0)
JITTER = 0.1
MAX_BLUR_RADIUS = 1.0


def augment(image: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = image.size
    image = image.rotate(float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)), resample=Image.BILINEAR)
    scale = float(np.sqrt(rng.uniform(*CROP_AREA)))
    cw, ch = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BICUBIC)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(1 - JITTER, 1 + JITTER)))
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, MAX_BLUR_RADIUS))))
