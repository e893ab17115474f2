"""Thumbnails for report.html's gallery, read from the dataset the cache was extracted from.

The cache records its dataset (`dataset_name`, `dataset_source`); where that source can be opened again here
(the easy-vqa package, a `folder:DIR`, a manifest file, `wds:` tars, or what `--images-from` names), each shown
question's image is read and shrunk to a small JPEG inside the page. Elsewhere the gallery shows image keys, and
the page says so. Only the dataset's own files are read.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Callable

THUMBNAIL_SIDE = 128
QUALITY = 70


def _source_spec(attrs: dict) -> str | None:
    """The dataset argument that opens the cache's dataset again, or None."""
    from featcache.datasets import dataset_names

    source = str(attrs.get("dataset_source") or "")
    name = str(attrs.get("dataset_name") or "")
    spec = source.split(" (", 1)[0].split("; ", 1)[0]
    if spec.startswith(("folder:", "wds:")):
        return spec
    if spec and Path(spec).is_file():
        return spec
    if source.startswith("easy-vqa package") and name in dataset_names():
        return name
    return None


def thumbnailer(attrs: dict, images_from: str | None = None, root: str | None = None
                ) -> tuple[Callable[[list[str]], dict[str, str]] | None, str]:
    """(image keys -> data: URIs, a note for the page) for a cache with attributes `attrs`; (None, why) where the
    images cannot be opened."""
    from featcache.datasets import load_dataset
    from featcache.errors import FeatcacheError

    spec = images_from or _source_spec(attrs)
    if spec is None:
        return None, (f"The images of {attrs.get('dataset_source') or 'this dataset'} cannot be opened from the cache "
                      f"alone: the gallery shows image keys (give --images-from DATASET [--images-root DIR] for "
                      f"pictures).")
    try:
        dataset = load_dataset(spec, root=root)
    except (FeatcacheError, OSError, ValueError) as exc:
        return None, f"The images could not be opened ({str(exc)[:160]}): the gallery shows image keys."
    return thumbnails_of(dataset), ""


def thumbnails_of(dataset) -> Callable[[list[str]], dict[str, str]]:
    """Image keys -> data: URIs of small JPEGs of `dataset`'s images (keys it cannot open are left out)."""
    from featcache.errors import FeatcacheError

    def thumbnails(keys: list[str]) -> dict[str, str]:
        out = {}
        for key in keys:
            if key not in dataset.image_paths:
                continue
            try:
                image = dataset.open_image(key, draft_size=THUMBNAIL_SIDE * 2)
            except (FeatcacheError, OSError, ValueError):
                continue  # a missing or broken image: its key is shown
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=QUALITY)
            out[key] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        return out

    return thumbnails
