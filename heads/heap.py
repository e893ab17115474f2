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
import os
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


def resident_bytes() -> int | None:
    """This process's resident memory in bytes (Linux's /proc/self/statm), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapGuard:
    """Trims the heap when resident memory has grown by `slack` bytes since the last trim.

    Within an epoch of minibatch training every batch frees and makes again buffers of slightly different sizes
    (its images, logits and gradients), and glibc serves each from a new stretch of heap rather than the freed
    ones: the logistic regression on VQAv2's itc grew by about 1 GB within each epoch. Trimming at every image
    block bounds that but costs pages faulted in again by the next block (it doubled an epoch on `pooled`);
    trimming when the growth passes `slack` bounds it. Each trim costs the pages the next batches fault in again,
    so the slack must exceed a batch cycle's working set: on VQAv2 (a pair of logistic regressions trained
    together, 2 cores) 256 MB trimmed 35-70 times an epoch and cost 11-20 %, 512 MB trimmed
    5-11 times and cost about 5 %; in its first epoch the itc pair peaked at 4.74 GiB with it, 4.92 without."""

    def __init__(self, slack: int = 512 << 20) -> None:
        self.slack = slack
        self.base = resident_bytes()

    def check(self) -> bool:
        """Trim if resident memory grew past the slack since the last trim; True where it trimmed."""
        if self.base is None:
            return False
        now = resident_bytes()
        if now is None or now <= self.base + self.slack:
            return False
        trim_heap(collect=False)
        self.base = resident_bytes() or now
        return True
