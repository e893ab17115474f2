"""The Ray engine: shards spread over Ray actors, one per GPU (or per CPU slot on CPU-only clusters).

Each actor loads the backbone once and runs whole shards through the local engine's pipeline,
writing them into the parts folder itself: features never travel through Ray's object store, so
every node must see the folder (a shared filesystem). An actor returns only a count. A shard whose
actor dies or fails is retried on a fresh actor, up to `max_retries` times; a bad image is the data's
error and stops the run as locally. The driver holds no results: killed, it is resumed by the same
command, which skips the finished shards.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import replace

from tqdm.auto import tqdm

from ...errors import ExtractError, FeatcacheError
from ..plan import PARTS_KEYS
from .local import ShardJob, run_shards

RAY_HINT = "--engine ray needs Ray: pip install 'featcache[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise ExtractError(RAY_HINT) from None
    return ray


class ShardWorker:
    """One per actor: the backbone, loaded once, and the job; `run` computes one shard."""

    def __init__(self, model, load: dict, job: ShardJob, threads: int | None) -> None:
        import torch

        from ...models.backbone import Backbone, load_backbone

        if threads:
            torch.set_num_threads(threads)
        self.backbone = model if isinstance(model, Backbone) else load_backbone(model, device="auto", **load)
        self.job = job

    def provenance(self) -> dict:
        return self.backbone.provenance()

    def run(self, spec) -> int:
        return run_shards(self.job, [spec], self.backbone, writer_process=False)  # an actor writes in a thread


def _plan_actors(ray, gpus_per_worker: float, workers_per_node: int | None, n_shards: int) -> tuple[int, dict, int]:
    """(how many actors, their resource request, torch threads each) for the cluster Ray sees."""
    res = ray.cluster_resources()
    gpus, cpus = res.get("GPU", 0.0), res.get("CPU", 1.0)
    if gpus and gpus_per_worker > 0:
        n = int(gpus // gpus_per_worker)
        opts = {"num_gpus": gpus_per_worker, "num_cpus": max(1, int(cpus // max(n, 1)))}
    else:
        n = int(workers_per_node or cpus)
        opts = {"num_cpus": max(1, int(cpus // max(n, 1)))}
    return max(1, min(n, n_shards)), opts, opts["num_cpus"]


def run_ray(job: ShardJob, todo: list, model, backbone, address: str | None = None, gpus_per_worker: float = 1.0,
            workers_per_node: int | None = None, progress: bool = False, done: int = 0, total: int | None = None,
            max_retries: int = 2) -> int:
    """Compute the shards of `todo` on Ray actors; returns the number of images encoded."""
    ray = _ray()
    if not todo:
        return 0
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        return _schedule(ray, job, todo, model, backbone, gpus_per_worker, workers_per_node, progress, done,
                         total, max_retries)
    finally:
        if started_here:
            ray.shutdown()


def _schedule(ray, job, todo, model, backbone, gpus_per_worker, workers_per_node, progress, done, total,
              max_retries) -> int:
    n_actors, opts, threads = _plan_actors(ray, gpus_per_worker, workers_per_node, len(todo))
    # decode workers per actor: the CPUs Ray gives it, less the one that feeds the model
    job = replace(job, workers=max(0, threads - 1) if "num_gpus" in opts else 0)
    load = {"dtype": str(backbone.compute_dtype).removeprefix("torch."), "max_text_length": backbone.max_text_length,
            "jpeg_draft": backbone.preprocessor.jpeg_draft}
    model_arg = model if isinstance(model, str) else ray.put(backbone)
    job_ref = ray.put(job)
    worker_cls = ray.remote(**opts)(ShardWorker)

    def new_actor():
        return worker_cls.remote(model_arg, load, job_ref, threads)

    actors = [new_actor() for _ in range(n_actors)]
    mine = {k: backbone.provenance().get(k) for k in PARTS_KEYS}
    try:
        theirs = {k: v for k, v in ray.get(actors[0].provenance.remote()).items() if k in PARTS_KEYS}
    except ray.exceptions.RayError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ExtractError(f"the Ray workers could not start: {last}") from None
    theirs = {k: theirs.get(k) for k in PARTS_KEYS}
    if theirs != mine:
        diff = [f"{k}: driver {mine[k]!r}, workers {theirs[k]!r}" for k in PARTS_KEYS if mine[k] != theirs[k]]
        raise ExtractError("the Ray workers compute other features than the driver's model:\n  " + "\n  ".join(diff)
                           + "\nOn GPU workers pass --dtype float16 (or the dtype they use) so both agree.")
    queue, attempts, inflight = deque(todo), Counter(), {}
    for actor in actors:
        if queue:
            spec = queue.popleft()
            inflight[actor.run.remote(spec)] = (actor, spec)
    computed = 0
    bar = tqdm(total=total, initial=done, unit="img", desc="images (ray)", disable=not progress, dynamic_ncols=True)
    try:
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            actor, spec = inflight.pop(ref)
            try:
                computed += ray.get(ref)
                bar.update(len(spec.keys))
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, FeatcacheError):
                    raise exc.cause from None  # the data's error (a bad image): not retried
                _retry(spec, attempts, queue, max_retries, exc)
            except ray.exceptions.RayActorError as exc:  # the actor's process died: a fresh one takes over
                actor = new_actor()
                actors.append(actor)
                _retry(spec, attempts, queue, max_retries, exc)
            if queue:
                spec = queue.popleft()
                inflight[actor.run.remote(spec)] = (actor, spec)
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)
    return computed


def _retry(spec, attempts: Counter, queue: deque, max_retries: int, exc: Exception) -> None:
    attempts[spec.digest] += 1
    if attempts[spec.digest] > max_retries:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ExtractError(f"shard {spec.digest} ({len(spec.keys)} images from {spec.keys[0]!r}) failed "
                           f"{attempts[spec.digest]} times on Ray workers; last error: {first_line}. Finished "
                           f"shards are kept; the same command resumes.")
    queue.appendleft(spec)
