"""What a parts folder must prove before any of it is read: a manifest of the right shape whose shards tile the
rows exactly once, file names that stay inside the folder, and shards that are the ones it names.

A parts folder may come from someone else (copied, unpacked, edited). Without these checks a shard of another
model under the right name, two shards swapped with their sidecars, a duplicated entry, an edited `start`, or a
name like `../../outside/evil.h5` would be read as if it belonged here."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import ExtractError

SHARD_NAME = re.compile(r"shard-[0-9a-f]{1,64}\.h5")
TEXTS_NAME = re.compile(r"texts-[0-9a-f]{1,64}\.npz")
MANIFEST_MAX_BYTES = 1 << 30
"""A manifest lists a few hundred bytes per shard: 1 GiB is ~3M shards (3G images at the default size)."""


def _bad(parts: Path, why: str) -> ExtractError:
    return ExtractError(f"{parts}/manifest.json is not a featcache manifest: {why}. Re-run the extract that made "
                        f"the folder (it resumes), or remove the folder")


def member(parts: Path, name: str, what: str) -> Path:
    """parts/name, refusing a name that leaves the folder, a link out of it, and anything but a regular file
    (a FIFO or device would block the reader)."""
    path = parts / name
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ExtractError(f"{parts}: the manifest names {what} {name!r}, which is not a file of this folder; "
                           f"refusing to read outside it")
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ExtractError(f"{path} ({what}) does not exist or is a link loop; re-run the extract that made "
                           f"{parts}") from None
    if real.parent != parts.resolve():
        raise ExtractError(f"{path} ({what}) links outside {parts} (to {real}); refusing to read it")
    if not stat.S_ISREG(os.stat(real).st_mode):
        raise ExtractError(f"{path} ({what}) is not a regular file; refusing to read it")
    return path


def check_manifest(parts: Path, manifest) -> dict:
    """The manifest itself: fields and types, shard entries that tile rows 0..n_images-1 once, names that match
    what extraction writes. Returns it."""
    if not isinstance(manifest, dict):
        raise _bad(parts, f"a JSON {type(manifest).__name__}, not an object")
    need = {"attrs": dict, "store_dtype": str, "n_images": int, "n_questions": int, "texts_file": str, "shards": list}
    for key, kind in need.items():
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise _bad(parts, f"{key!r} is missing or not of type {kind.__name__}")
    if manifest["texts_file"] and not TEXTS_NAME.fullmatch(manifest["texts_file"]):
        raise _bad(parts, f"texts_file {manifest['texts_file']!r} is not a texts-<digest>.npz of this folder")
    if not manifest["shards"]:
        raise _bad(parts, "it lists no shards")
    row, seen = 0, set()
    for i, s in enumerate(manifest["shards"]):
        if not isinstance(s, dict):
            raise _bad(parts, f"shard entry {i} is not an object")
        for key, kind in (("file", str), ("digest", str), ("start", int), ("stop", int), ("n_images", int),
                          ("first_key", str), ("last_key", str)):
            if not isinstance(s.get(key), kind) or isinstance(s.get(key), bool):
                raise _bad(parts, f"shard entry {i}: {key!r} is missing or not of type {kind.__name__}")
        if not SHARD_NAME.fullmatch(s["file"]) or s["file"] != f"shard-{s['digest']}.h5":
            raise _bad(parts, f"shard entry {i} names {s['file']!r}, not shard-<its digest>.h5")
        if s["digest"] in seen:
            raise _bad(parts, f"shard {s['file']} is listed twice")
        seen.add(s["digest"])
        if s["start"] != row or s["n_images"] < 1 or s["stop"] != s["start"] + s["n_images"]:
            raise _bad(parts, f"shard entry {i} ({s['file']}) covers rows {s['start']}..{s['stop']} with "
                              f"{s['n_images']} images; the shards must tile the rows in order from {row}")
        row = s["stop"]
    if row != manifest["n_images"]:
        raise _bad(parts, f"its shards hold {row} images, it says n_images {manifest['n_images']}")
    if "n_pairs" in manifest:  # question-conditioned features: each shard's block of pairs, tiling them in order
        pair = 0
        for i, s in enumerate(manifest["shards"]):
            for key in ("pair_start", "n_pairs"):
                if not isinstance(s.get(key), int) or isinstance(s.get(key), bool):
                    raise _bad(parts, f"shard entry {i}: {key!r} is missing or not an integer")
            if s["pair_start"] != pair or s["n_pairs"] < 0:
                raise _bad(parts, f"shard entry {i} ({s['file']}) holds pairs {s['pair_start']}.."
                                  f"{s['pair_start'] + s['n_pairs']}; the shards must tile the pairs in order from {pair}")
            pair += s["n_pairs"]
        if pair != manifest["n_pairs"] or isinstance(manifest["n_pairs"], bool):
            raise _bad(parts, f"its shards hold {pair} pairs, it says n_pairs {manifest['n_pairs']}")
    return manifest


def check_shard(parts: Path, entry: dict, manifest: dict, handle) -> None:
    """An open shard is the one `entry` names: its own digest, the run's model, the entry's count and key range."""
    attrs, where = handle.attrs, parts / entry["file"]
    digest, fingerprint = attrs.get("shard_digest"), attrs.get("model_fingerprint")
    fingerprint = fingerprint.decode() if isinstance(fingerprint, bytes) else fingerprint
    problems = []
    if (digest.decode() if isinstance(digest, bytes) else digest) != entry["digest"]:
        problems.append(f"it is shard {digest!r}, not {entry['digest']!r} (files swapped or renamed)")
    if fingerprint != manifest.get("model_fingerprint", manifest["attrs"].get("model_fingerprint")):
        problems.append("it was made by another model than the run's")
    keys = handle["images"]["key"] if "images" in handle and "key" in handle["images"] else None
    if keys is None or keys.shape[0] != entry["n_images"]:
        problems.append(f"it holds {None if keys is None else keys.shape[0]} images, the manifest says "
                        f"{entry['n_images']}")
    else:
        first, last = (k.decode() if isinstance(k, bytes) else str(k) for k in (keys[0], keys[-1]))
        if (first, last) != (entry["first_key"], entry["last_key"]):
            problems.append(f"its keys run {first!r}..{last!r}, the manifest says {entry['first_key']!r}.."
                            f"{entry['last_key']!r}")
    if "n_pairs" in entry:
        pairs = handle["pairs"]["image_row"] if "pairs" in handle and "image_row" in handle["pairs"] else None
        if pairs is None or pairs.shape[0] != entry["n_pairs"]:
            problems.append(f"it holds {None if pairs is None else pairs.shape[0]} question-conditioned pairs, the "
                            f"manifest says {entry['n_pairs']}")
    if problems:
        raise ExtractError(f"{where} does not belong to {parts}: {'; '.join(problems)}. Delete it and its .json; "
                           f"the extract command recomputes that shard")


def load_npz(parts: Path, name: str, what: str) -> dict:
    """The arrays of parts/name (questions.npz, the text features): never unpickled; a damaged or crafted
    file (object arrays, not a zip) is named."""
    import zipfile

    import numpy as np

    path = member(parts, name, what)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ExtractError(f"{path} ({what}) cannot be read safely ({str(exc).splitlines()[0][:120]}); re-run the "
                           f"extract that made {parts}") from None
