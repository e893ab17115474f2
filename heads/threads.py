"""How many CPU threads a fit takes: the cores other processes leave idle.

OpenMP threads (LightGBM's, torch's) spin while they wait for each other, so asking for every core while
another process uses them slows a fit several times (benchmarks/lgbm_threads.py, benchmarks/heads_threads.py);
as many threads as there are idle cores degrades gracefully instead, and on an idle machine it is every core."""

from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) seconds of all CPUs from /proc/stat (Linux), or None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            fields = [float(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (fields[3] + (fields[4] if len(fields) > 4 else 0.0)) / hz, sum(fields[:8]) / hz


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_LAST: dict = {}
REUSE_S = 2.0
"""A sample is reused for this long: a sweep's many small fits (or check_estimator's) pay for one."""


def free_cores(sample_s: float = 0.05) -> int:
    """Cores that OTHER processes leave idle right now (at least 1), from a short /proc/stat sample. This
    process's own use during the sample (its other threads) is not counted as busy: it would otherwise
    halve the threads on an idle 2-core machine."""
    now = time.monotonic()
    if _LAST and now - _LAST["at"] < REUSE_S:
        return _LAST["cores"]
    _LAST.update(at=now, cores=_sample(sample_s))
    return _LAST["cores"]


def _sample(sample_s: float) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    first, own = _cpu_times(), _own_cpu()
    if first is None:
        return cores
    time.sleep(sample_s)
    second, own = _cpu_times(), _own_cpu() - own
    total = max(second[1] - first[1], 1e-9)
    busy_other = max(0.0, (total - (second[0] - first[0]) - own) / total)
    machine = os.cpu_count() or cores
    return max(1, min(cores, round(machine * (1.0 - busy_other))))


@contextmanager
def torch_threads(num_threads: int | None):
    """torch's intra-op threads for a fit: `num_threads`, or the idle cores when None; restored after. More
    threads than cores are never faster, and torch crashes on absurd counts (100,000 ended the process), so a
    count is capped at the cores this process may use."""
    import torch

    if num_threads is not None and not (isinstance(num_threads, int) and not isinstance(num_threads, bool)
                                        and num_threads >= 1):
        raise ValueError(f"num_threads must be None or a whole number >= 1, got {num_threads!r}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    before = torch.get_num_threads()
    torch.set_num_threads(min(num_threads, cores) if num_threads else free_cores())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def on_idle_cores(fn):
    """Run `fn` with torch's threads set to the idle cores (then restored): the generative paths (zero-shot,
    captions) beside another CPU job slowed 14x with a thread per core spinning against it."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch_threads(None):
            return fn(*args, **kwargs)

    return run
