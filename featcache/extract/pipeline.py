"""The moving parts of extraction, arranged so the device never waits.

decode workers (PIL decode + resize to uint8) -> pinned uint8 batch -> non-blocking copy -> normalise
and forward on the device -> background thread: copy results back in the store dtype -> writer process:
fill shard buffers, write shards, append them to the final file (featcache.extract.writer).

Each stage overlaps the next batch's forward: workers prefetch, the copy to the device is a quarter
of float32's bytes, and the copy back plus disk writes happen off the main thread.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..images.decode import ImageLoadError

MAX_AUTO_BATCH = 1024


class DecodedImages(torch.utils.data.Dataset):
    """Decode + resize to uint8 in loader workers; a failure is returned as text, not raised."""

    def __init__(self, dataset, keys: list[str], preprocessor) -> None:
        self.dataset, self.keys, self.preprocessor = dataset, keys, preprocessor

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        try:
            image = self.dataset.open_image(self.keys[i], self.preprocessor.draft_size)
            return i, self.preprocessor.resize_uint8(image), ""
        except ImageLoadError as exc:
            return i, None, str(exc)
        except Exception as exc:  # a preprocessing failure on a strange file: name it, don't crash the worker
            return i, None, f"cannot preprocess image {self.dataset.image_paths[self.keys[i]]}: {exc}"


def collate(items) -> tuple[list[int], torch.Tensor | None, list[int], list[str]]:
    """(image indices, uint8 pixels of the good ones, positions of the good ones, error texts)."""
    good = [k for k, (_, _, err) in enumerate(items) if not err]
    pixels = torch.from_numpy(np.stack([items[k][1] for k in good])) if good else None
    return [i for i, _, _ in items], pixels, good, [err for _, _, err in items]


class StoredVision:
    """Batches of ViT states read from a `--store-vision` cache instead of decoded images (`extract --from-vision`):
    the same (index, states of the good images, their positions, errors) as the decoding loader gives, so the
    Q-Former part of extraction runs without the ViT. An image that failed in that cache fails here too."""

    def __init__(self, source_path: str, keys: list[str], batches: list[list[int]]) -> None:
        self.source_path, self.keys, self.batches = source_path, keys, batches

    def __iter__(self):
        from ..cache import open_cache

        with open_cache(self.source_path) as source:
            row_of = {str(k): i for i, k in enumerate(source.strings("images", "key"))}
            failed = source.strings("images", "error")
            for index in self.batches:
                rows = [row_of[self.keys[i]] for i in index]
                errors = [f"image failed in {self.source_path}: {failed[r]}" if failed[r] else "" for r in rows]
                good = [k for k, e in enumerate(errors) if not e]
                wanted = np.array([rows[k] for k in good], dtype=np.int64)
                order = np.argsort(wanted, kind="stable")  # the reader wants increasing rows
                states = None
                if len(wanted):
                    states = np.empty((len(wanted), *source.images["vision"].shape[1:]), dtype=np.float32)
                    states[order] = source.read("images", "vision", wanted[order])
                yield index, states, good, errors


def save_atomic(path: Path, **arrays) -> None:
    """An .npz written to a temporary name, synced, and renamed into place. The temporary name is this process's
    and thread's own: `--shard-index` workers started together write the same texts file at once, and one's
    rename must not take the other's half-written file (or find it gone)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def auto_workers(device: torch.device, cores: int | None = None) -> int:
    """Decode processes for `--workers auto`. On a GPU, up to 8 (one core stays with the process that feeds
    the device): measured on an H100 with 16 cores, 15 workers left the pipeline at 78% of the bare
    forward, 8 at 82% and 4 at 85% (they contend with the feeding thread), while 843 images/s of DAQUAR-size
    JPEGs need about 4 cores of decoding and large photos more (benchmarks/decode_speed.py). On a CPU the
    forward needs the cores: none on small machines (a worker costs the ViT more than it saves), a quarter
    of them on large ones."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else cores // 4


def find_largest(fits: Callable[[int], bool], start: int = 32, limit: int = MAX_AUTO_BATCH) -> int:
    """The largest power-of-two multiple or fraction of `start` (<= limit) for which fits(n) holds."""
    n = start
    if not fits(n):
        while n > 1:
            n //= 2
            if fits(n):
                return n
        raise RuntimeError("not even a batch of 1 fits")
    while n * 2 <= limit and fits(n * 2):
        n *= 2
    return n


def auto_batch_size(backbone, keep_vision: bool = False, default: int = 32) -> int:
    """`--batch-size auto`: on a GPU, the largest batch whose forward fits in memory, found by trying
    (then halved once for headroom: other processes, fragmentation); on a CPU, `default` (RAM is not
    probed: running out of it kills the process instead of raising)."""
    if backbone.device.type != "cuda":
        return default
    height, width = backbone.preprocessor.size

    def fits(n: int) -> bool:
        try:
            backbone.encode_images(torch.zeros((n, 3, height, width), dtype=torch.uint8), keep_vision, to_numpy=False)
            torch.cuda.synchronize(backbone.device)
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            torch.cuda.empty_cache()

    return max(1, find_largest(fits) // 2)
