"""Keep a training loop's large buffers in the process instead of handing them back to the kernel every step.

glibc serves every allocation over its mmap threshold (at most 32 MB) with a fresh mapping and unmaps it on free,
so a loop that allocates the same 50 MB logits and gradients every batch (VQAv2: 4,096 rows x 3,129 answers)
page-faults and zero-fills them anew each step: on 2 cores that doubled a logistic-regression step (0.57 s
against 0.29 s, benchmarks/vqav2_heads.py's shapes). Raising the threshold lets freed blocks be reused, as
jemalloc or tcmalloc (PyTorch's advice for CPU training) would. Peak memory is unchanged; memory freed after a
fit stays with the process until it exits."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
THRESHOLD = 1 << 30
"""Allocations up to 1 GiB come from the heap, where freed blocks are reused."""


@functools.lru_cache(maxsize=1)
def reuse_large_blocks() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * THRESHOLD))
