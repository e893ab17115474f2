"""Hand freed heap memory back to the operating system between the large steps of a sweep.

glibc keeps the memory of freed blocks below its mmap threshold, which it raises up to 32 MB as large arrays are
freed, so after a fit on VQAv2-size features the process still holds gigabytes it no longer uses, and each
following group of the sweep stacks its own peak on top of them. On a 1/5-size synthetic VQAv2 sweep the resident
memory after the itc logistic regression group was 3.13 GiB with 1.48 GiB in use (benchmarks/vqav2_sweep.py).
`malloc_trim(0)` returns those pages: after each group of a sweep and after each epoch of a minibatch fit (whose
batch buffers are freed and made again each step), a few tens of milliseconds each. The call exists only in
glibc, so elsewhere this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # (musl and other C libraries have no malloc_trim)
        return None


def trim_heap(collect: bool = True) -> bool:
    """Collect cycles (unless `collect` is False: a collection walks every Python object, a second where a VQAv2
    protocol holds millions) and return freed heap pages to the OS; True where the C library could."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
