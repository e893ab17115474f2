"""Images: decoding a file as a person sees it (decode.py) and preprocessing it to the model's input
exactly as the checkpoint's processor does (preprocess.py)."""

from .decode import DECODING, JPEG_DRAFT, ImageLoadError, decode_image, load_image, to_rgb
from .preprocess import PREPROCESSING, ImagePreprocessor, normalize_uint8

__all__ = ["DECODING", "JPEG_DRAFT", "PREPROCESSING", "ImageLoadError", "ImagePreprocessor", "decode_image", "load_image",
           "normalize_uint8", "to_rgb"]
