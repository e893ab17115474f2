"""What a cache file must prove when it is opened: it holds its own data and no more rows than it stores.

featcache writes plain datasets that hold every row they declare. HDF5 can also point elsewhere: external
storage (`create_dataset(..., external=[("/etc/passwd", ...)])` reads another file as the data), external links
and virtual datasets (other files' datasets, zeros where they are missing), soft links (which may loop); and a
chunked dataset may be resized to 1e8 rows it never stored, so a 200 KB file asks for gigabytes. A cache from
someone else is refused for any of these, with the object named, before any of it is read."""

from __future__ import annotations

import math
from pathlib import Path

import h5py

from ..errors import CacheFormatError


def _refuse(path: Path, name: str, why: str) -> CacheFormatError:
    return CacheFormatError(f"{path}: /{name} {why}; featcache never writes such a cache, so it is refused (a "
                            f"crafted or foreign file). Re-create it with `featcache extract`")


ALWAYS_WRITTEN = ("images/key", "images/error", "questions/text", "questions/answer", "questions/split",
                  "questions/error", "questions/image_row", "pairs/image_row")
"""Datasets featcache writes row by row in full: their stored chunks prove the row counts. Others (flags left
at their fill value) need not be allocated, but must have the rows of their group."""


def _check_dataset(path: Path, name: str, ds: h5py.Dataset) -> None:
    if ds.is_virtual:
        raise _refuse(path, name, "is a virtual dataset (its data lives in other files)")
    if ds.external:
        raise _refuse(path, name, f"reads external storage ({ds.external[0][0]!r}, ...) instead of this file")
    if not ds.shape or ds.size == 0 or name not in ALWAYS_WRITTEN:
        return
    if ds.chunks is not None:
        needed = math.prod(math.ceil(n / c) for n, c in zip(ds.shape, ds.chunks))
        stored = ds.id.get_num_chunks()
        if stored < needed:
            raise _refuse(path, name, f"declares {ds.shape[0]:,} rows but stores only {stored:,} of its {needed:,} "
                                      f"chunks (resized after it was written)")
    elif ds.id.get_storage_size() == 0 or (h5py.check_vlen_dtype(ds.dtype) is None and h5py.check_string_dtype(
            ds.dtype) is None and ds.id.get_storage_size() < ds.size * ds.dtype.itemsize):
        raise _refuse(path, name, f"declares {ds.shape[0]:,} rows but this file does not store them")


def check_file(path: Path, root: h5py.File) -> None:
    """Walk every link without following one: hard links to groups and datasets only, stored in this file; the
    row counts proved by the datasets always written in full, and every dataset of /images and /questions of
    its group's row count."""
    stack = [("", root)]
    rows: dict[str, list] = {}
    while stack:
        prefix, group = stack.pop()
        for key in group.keys():
            name = f"{prefix}{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise _refuse(path, name, f"is an external link to {link.filename}:{link.path}")
            if isinstance(link, h5py.SoftLink):
                raise _refuse(path, name, f"is a soft link to {link.path}")
            obj = group[key]
            if isinstance(obj, h5py.Group):
                stack.append((f"{name}/", obj))
            elif isinstance(obj, h5py.Dataset):
                _check_dataset(path, name, obj)
                group_name = name.partition("/")[0] if "/" in name else ""
                if group_name in ("images", "questions", "pairs") and obj.shape:
                    rows.setdefault(group_name, []).append((name, obj.shape[0]))
    for group_name, sizes in rows.items():
        proof = next((n for n, _ in sizes if n in ALWAYS_WRITTEN), None)
        expected = dict(sizes).get(proof)
        odd = [(n, r) for n, r in sizes if expected is not None and r != expected]
        if odd:
            raise _refuse(path, odd[0][0], f"has {odd[0][1]:,} rows where /{proof} has {expected:,}")
