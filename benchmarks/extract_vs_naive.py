"""featcache extract against what a user writes with transformers alone, on the same images, in one run.

The naive loop: open each image with PIL in the main process, run the checkpoint's image processor on a batch
of 32, the ViT and the Q-Former in fp16 (on a GPU; fp32 on CPU) under no_grad, as Blip2Model.get_qformer_features
does, copy the query states back and `numpy.save` them per batch. featcache: `extract` with its defaults (decode
workers, uint8 transfer, the text pass, shards, merge), the whole run. Weights are random (no hub here): speed
does not depend on their values.

    python benchmarks/extract_vs_naive.py --size tiny --images 256
    python benchmarks/extract_vs_naive.py --size real --images 16 --workers 0        # CPU, real size: minutes
    python benchmarks/extract_vs_naive.py --size real --device cuda --images 4096
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from featcache.datasets import load_dataset
from featcache.extract import Compute, extract
from featcache.models.random_init import random_backbone

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)


def naive(bb, paths: list[str], out: Path, batch_size: int = 32) -> float:
    """Seconds for the loop a user writes; the query states end in out/*.npy."""
    from PIL import Image

    model, processor = bb.model, bb.preprocessor.processor
    cuda = bb.device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        images = [Image.open(p).convert("RGB") for p in paths[i:i + batch_size]]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(bb.device, dtype)
        with torch.no_grad(), torch.autocast(bb.device.type, dtype=dtype, enabled=cuda):
            vision = model.vision_model(pixel_values=pixels).last_hidden_state
            query = model.query_tokens.expand(vision.shape[0], -1, -1)
            mask = torch.ones(vision.shape[:-1], dtype=torch.long, device=bb.device)
            states = model.qformer(query_embeds=query, encoder_hidden_states=vision,
                                   encoder_attention_mask=mask).last_hidden_state
        np.save(out / f"batch{i // batch_size:06d}.npy", states.float().cpu().numpy())
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    bb = random_backbone(args.size, device=args.device)
    ds = load_dataset("easy-vqa")
    keys = ds.images()[:args.images]
    keep = set(keys)
    ds.questions = [q for q in ds.questions if q.image in keep]
    paths = [ds.image_paths[k] for k in keys]
    with tempfile.TemporaryDirectory() as tmp:
        naive(bb, paths[:args.batch_size], Path(tmp))  # warm-up, both sides
        extract(ds.limit(args.batch_size), Path(tmp) / "warm.h5", model=bb, progress=False,
                compute=Compute(batch_size=args.batch_size, workers=0))
        (Path(tmp) / "naive").mkdir()
        naive_s = naive(bb, paths, Path(tmp) / "naive", args.batch_size)
        t = time.perf_counter()
        workers = args.workers if args.workers == "auto" else int(args.workers)
        report = extract(ds, Path(tmp) / "c.h5", model=bb, progress=False,
                         compute=Compute(batch_size=args.batch_size, workers=workers))
        featcache_s = time.perf_counter() - t
    n = len(keys)
    result = {"benchmark": "extract_vs_naive", "size": args.size, "device": args.device,
              "device_name": torch.cuda.get_device_name() if bb.device.type == "cuda" else platform.processor(),
              "machine": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "images": n, "questions": len(ds.questions), "batch_size": args.batch_size, "workers": args.workers,
              "naive_images_per_s": round(n / naive_s, 2), "featcache_images_per_s": round(n / featcache_s, 2),
              "featcache_over_naive": round(naive_s / featcache_s, 2),
              "featcache_also_did": "the question texts' features, failed-item checks, shards and the merged file",
              "featcache_stage_seconds": report.stage_seconds, "command": "python " + " ".join(sys.argv)}
    for k, v in result.items():
        print(f"{k}: {v}")
    save_result(result, args.out, f"extract_vs_naive_{args.size}_{args.device.split(':')[0]}.json")


if __name__ == "__main__":
    main()
