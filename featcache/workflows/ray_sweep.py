"""`featcache sweep --engine ray`: a sweep's (view, head) groups run as Ray tasks across a cluster.

Each task opens the cache from its path (storage every node mounts, as `extract --engine ray` needs for its parts
folder), reads only its own view, fits and chooses its candidates on the validation rows, evaluates the chosen
head once, and returns its row and head to the driver, which writes the one report as a local sweep does
(heads/sweep.py: the same rows, the same choices, on validation only). A rerun of an interrupted sweep skips the
groups that finished.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..errors import FeatcacheError

RAY_HINT = "--engine ray needs Ray: pip install 'featcache[ray]'"


def ray_runner(address: str | None = None, cpus_per_group: int = 1):
    """A runner for `heads.sweep.run_sweep`: yields (job, outcome) as the cluster finishes each group. Every
    group's fits take `cpus_per_group` threads (one by default: as many groups at once as the cluster has CPUs)."""
    try:
        import ray
    except ImportError:
        raise FeatcacheError(RAY_HINT) from None
    from heads.sweep_fit import run_group_job

    def run(jobs):
        if not jobs:
            return
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        try:
            task = ray.remote(num_cpus=cpus_per_group, max_retries=1)(run_group_job)
            pending = {task.remote(replace(job, threads=cpus_per_group)): job for job in jobs}
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, FeatcacheError):  # the data's or the grid's error, said as locally
                        raise cause from None
                    last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                    raise FeatcacheError(f"{job.kind} on {job.view} failed on a Ray worker: {last}") from None
                yield job, outcome
        finally:
            if started_here:
                ray.shutdown()

    return run
