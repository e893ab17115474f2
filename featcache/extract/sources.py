"""`extract --from-vision`: a cache's stored ViT states as the input of a new extraction, checked before use.

Question-conditioned features need the ViT states of each image. A cache extracted with --store-vision holds
them, so adding multimodal features (or another Q-Former pass) to it never reruns the ViT (~97% of the compute).
"""

from __future__ import annotations

from pathlib import Path

from ..cache import MATCH_KEYS, open_cache
from ..errors import CacheFormatError, ExtractError


def check_vision_source(path: str | Path, backbone, dataset) -> str:
    """The path of a --store-vision cache made by `backbone`'s checkpoint that holds every image of `dataset`."""
    try:
        source = open_cache(path)
    except CacheFormatError as exc:
        raise ExtractError(f"--from-vision {path}: {exc}") from None
    with source:
        if "vision" not in source.images:
            raise ExtractError(f"--from-vision {path} holds no ViT states: it was extracted without --store-vision. "
                               f"Extract it again with --store-vision, or drop --from-vision to run the ViT")
        if source.attrs.get("model_fingerprint") != backbone.fingerprint:
            raise ExtractError(f"--from-vision {path} was extracted with {source.attrs.get('model_id')!r}, whose "
                               f"weights are not {backbone.model_id!r}'s: its ViT states would not be this model's. "
                               f"Use --model {source.attrs.get('model_id')}, or a cache of this model")
        mine = backbone.provenance()
        diffs = [f"{k}: {source.attrs.get(k)!r} vs {mine[k]!r}" for k in MATCH_KEYS
                 if k != "max_text_length" and k in mine and k in source.attrs and source.attrs[k] != mine[k]]
        if diffs:
            raise ExtractError(f"--from-vision {path} preprocessed its images differently:\n  " + "\n  ".join(diffs)
                               + "\nExtract with the same --jpeg-draft setting and checkpoint")
        keys = source.strings("images", "key").tolist()
        if any(a >= b for a, b in zip(keys, keys[1:])):  # featcache writes rows in sorted key order
            raise ExtractError(f"--from-vision {path}: its image keys are not in the order featcache writes them "
                               f"(sorted, unique): the file was edited, and each image could get another's ViT "
                               f"states. Extract it again with --store-vision")
        expected = backbone.image_feature_shapes(keep_vision=True)["vision"]
        found = tuple(source.images["vision"].shape[1:])
        if found != tuple(expected):
            raise ExtractError(f"--from-vision {path}: its ViT states are {found} per image, but {backbone.model_id} "
                               f"makes {tuple(expected)}: the file was edited or made otherwise. Extract it again "
                               f"with --store-vision")
        have = set(keys)
        missing = [k for k in dataset.images() if k not in have]
        if missing:
            raise ExtractError(f"--from-vision {path} lacks {len(missing)} of this dataset's images (e.g. "
                               f"{missing[0]!r}); give the --store-vision cache of these images, or drop --from-vision")
    return str(path)
