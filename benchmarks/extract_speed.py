"""Extraction throughput: the whole pipeline (decode, preprocess, forward, write) against the bare
forward on the same batches, as a ratio measured in one run. Target: pipeline >= 90% of bare.

    python benchmarks/extract_speed.py --size tiny --images 512
    python benchmarks/extract_speed.py --size real --images 16 --batch-size 4         # CPU: slow
    python benchmarks/extract_speed.py --size real --images 4096 --batch-size 128 --device cuda

Weights are random (no hub here); speed and memory do not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from featcache.datasets import load_dataset
from featcache.extract import extract
from featcache.tiny import random_backbone

VIT_G_GFLOP_PER_IMAGE = 520.0  # forward of ViT-g/14 at 224 px, the figure the H100 bound uses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    bb = random_backbone(args.size, device=args.device)
    ds = load_dataset("easy-vqa")
    keys = ds.images()[: args.images]
    keep = set(keys)
    ds.questions = [q for q in ds.questions if q.image in keep]
    n = len(keys)
    cuda = bb.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # warm-up (kernels, allocator), excluded from both timings
    px = np.stack([bb.preprocessor(ds.open_image(k)) for k in keys[: args.batch_size]])
    bb.encode_images(px)
    sync()

    # bare forward on the same batches, inputs already decoded and preprocessed
    batches = [np.stack([bb.preprocessor(ds.open_image(k)) for k in keys[i:i + args.batch_size]])
               for i in range(0, n, args.batch_size)]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t = time.perf_counter()
    for b in batches:
        bb.encode_images(b)
    sync()
    bare = time.perf_counter() - t
    del batches

    with tempfile.TemporaryDirectory() as tmp:
        sync()
        t = time.perf_counter()
        report = extract(ds, Path(tmp) / "bench.h5", model=bb, batch_size=args.batch_size, workers=args.workers,
                         progress=False)
        sync()
        pipeline = time.perf_counter() - t
        size = (Path(tmp) / "bench.h5").stat().st_size
    result = {
        "benchmark": "extract_speed", "size": args.size, "device": str(bb.device),
        "gpu": torch.cuda.get_device_name() if cuda else None, "cpu_count": os.cpu_count(),
        "machine": platform.platform(), "compute_dtype": str(bb.compute_dtype), "images": n,
        "questions": len(ds.questions), "distinct_texts": report.n_texts, "batch_size": args.batch_size,
        "workers": args.workers, "bare_forward_s": round(bare, 3), "pipeline_s": round(pipeline, 3),
        "bare_images_per_s": round(n / bare, 2), "pipeline_images_per_s": round(n / pipeline, 2),
        "pipeline_over_bare": round(bare / pipeline, 3), "cache_bytes": size,
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "command": "python " + " ".join(sys.argv),
    }
    if args.size == "real":
        result["achieved_tflops"] = round(VIT_G_GFLOP_PER_IMAGE * n / pipeline / 1e3, 2)
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"extract_speed_{args.size}_{bb.device.type}_w{args.workers}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
