"""Which precision a head's matrix products run in: bf16 where the CPU multiplies bf16 natively, else fp32.

bf16 products (fp32 accumulation, fp32 master weights and optimiser state, fp32 losses) run 2.5-3x faster than
fp32 on CPUs with AVX512-BF16 or AMX (benchmarks/vqav2_heads.py measures both on the machine it runs on), and
gain nothing where bf16 is emulated: there the fp32 path is used. The same heads reach the same answers either
way on structured data (tests/test_minibatch.py)."""

from __future__ import annotations

import functools
from pathlib import Path

PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> str | None:
    """The CPU's native bf16 instructions ("amx_bf16" or "avx512_bf16"), or None."""
    flags = cpu_flags()
    for flag in ("amx_bf16", "avx512_bf16"):
        if flag in flags:
            return flag
    return None


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """"fp32" or "bf16" for `precision` ("auto": bf16 on a CUDA device with bf16, or a CPU with native bf16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if native_bf16() else "fp32"
