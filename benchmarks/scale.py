"""Scale-out on this machine: extraction throughput with the local engine against Ray (1 and 2 actors),
Ray's start-up and first-shard latency, and merge throughput. Tiny random BLIP-2 saved as a checkpoint
(Ray actors load the model from a path, as they would a hub id or a shared folder). The `heads` part
is benchmarks/stream_heads.py: heads streamed over a cache larger than a memory cap.

    python benchmarks/scale.py [--images 2000] [--shard-size 256] [--parts extract,heads]

On 2 cores the actors share the cores the local engine has to itself: this measures the engine's
overhead, not a speed-up. On a GPU node, run with --device cuda to compare local against an actor per
GPU (or two per GPU with --gpus-per-worker 0.5).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from featcache.datasets import load_dataset
from featcache.extract import Compute, Spread, Storage, extract, merge_parts
from featcache.models.tiny import build_tiny_blip2

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpus-per-worker", type=float, default=1.0)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--parts", default="extract,heads", help="extract (engines, merge), heads (streamed heads)")
    ap.add_argument("--heads-images", type=int, default=40000)
    ap.add_argument("--budget-gib", type=float, default=2.0)
    args = ap.parse_args()
    if "extract" in args.parts.split(","):
        extraction(args)
    if "heads" in args.parts.split(","):
        import stream_heads

        with tempfile.TemporaryDirectory() as tmp:
            result = stream_heads.run_stream_heads(args.heads_images, args.budget_gib, Path(tmp))
        result.update(benchmark="stream_heads", machine=platform.platform(), cpu_count=os.cpu_count(),
                      command="python " + " ".join(sys.argv))
        print(json.dumps(result, indent=1))
        save_result(result, args.out, "stream_heads.json")


def extraction(args) -> None:
    import ray

    ds = load_dataset("easy-vqa")
    keep = set(ds.images()[: args.images])
    ds.questions = [q for q in ds.questions if q.image in keep]
    n = len(keep)
    result = {"benchmark": "scale", "machine": platform.platform(), "cpu_count": os.cpu_count(), "images": n,
              "shard_size": args.shard_size, "device": args.device, "command": "python " + " ".join(sys.argv)}
    common = dict(compute=Compute(batch_size=32, workers=0, device=args.device), storage=Storage(shard_size=args.shard_size),
                  progress=False)
    whole = {**common, "storage": Storage(shard_size=10**6)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(build_tiny_blip2(tmp / "tiny", kind="itm", seed=0))
        extract(ds, tmp / "warm.h5", model=model, **whole)  # warm caches, imports

        t = time.perf_counter()
        extract(ds, tmp / "local.h5", model=model, **common)
        result["local_images_per_s"] = round(n / (time.perf_counter() - t), 1)

        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        result["ray_init_s"] = round(time.perf_counter() - t, 2)
        one = list(keep)[: max(1, args.shard_size // 4)]
        small = type(ds)(ds.name, ds.source, [q for q in ds.questions if q.image in set(one)], ds.image_paths)
        t = time.perf_counter()
        extract(small, tmp / "first.h5", model=model, **whole,
                spread=Spread(engine="ray", workers_per_node=1))
        result["ray_first_shard_s"] = round(time.perf_counter() - t, 2)  # actor start, model load, one shard
        for actors in (1, 2):
            t = time.perf_counter()
            extract(ds, tmp / f"ray{actors}.h5", model=model, **common,
                    spread=Spread(engine="ray", workers_per_node=actors, gpus_per_worker=args.gpus_per_worker))
            result[f"ray_{actors}_actors_images_per_s"] = round(n / (time.perf_counter() - t), 1)
        ray.shutdown()

        extract(ds, tmp / "m.h5", model=model, **common, spread=Spread(merge_output=False))
        parts = tmp / "m.h5.parts"
        size = sum(f.stat().st_size for f in parts.glob("shard-*.h5"))
        t = time.perf_counter()
        merge_parts(parts)
        merge_s = time.perf_counter() - t
        result.update(merge_s=round(merge_s, 3), merged_bytes=(tmp / "m.h5").stat().st_size,
                      merge_mb_per_s=round(size / 1e6 / merge_s, 1))
    print(json.dumps(result, indent=1))
    save_result(result, args.out, f"scale_{args.device}.json")


if __name__ == "__main__":
    main()
