"""Fine-tuning throughput: train steps with the live (frozen) ViT against steps from cached ViT states
(`extract --store-vision` + `finetune --from-cache`), same batches, same run: samples/s, the speed-up
and peak memory.

    python benchmarks/finetune_speed.py --size tiny --steps 20
    python benchmarks/finetune_speed.py --size real --steps 2 --batch-size 4        # CPU: minutes
    python benchmarks/finetune_speed.py --size real --steps 20 --batch-size 32 --device cuda --amp bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from heads_speed import PeakRSS  # noqa: E402

from featcache.finetune import FinetuneConfig, FinetuneNet  # noqa: E402
from featcache.models.random_init import random_backbone  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default=None)
    ap.add_argument("--profile", action="store_true", help="print where a from-cache step's time goes")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    bb = random_backbone(args.size, device=args.device)
    net = FinetuneNet(bb, FinetuneConfig(amp=args.amp), n_classes=13)
    opt = torch.optim.AdamW(list(net.trainable().values()), lr=1e-4)
    side = bb.preprocessor.describe()["image_size"][0]
    rng = np.random.default_rng(0)
    B = args.batch_size
    tokens = bb.tokenize(["what color is the shape?"] * B)
    pixels = torch.from_numpy(rng.normal(size=(B, 3, side, side)).astype(np.float32))
    with torch.no_grad():
        vision = bb.vision_states(pixels).float().cpu()  # what the cache would hold
    labels = torch.from_numpy(rng.integers(0, 13, B))
    base = {"row": torch.arange(B), "input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    cuda = bb.device.type == "cuda"
    amp = dict(device_type=bb.device.type, dtype=getattr(torch, args.amp) if args.amp else torch.float32,
               enabled=bool(args.amp) and cuda)

    def run(batch) -> tuple[float, float]:
        def step():
            with torch.autocast(**amp):
                loss = torch.nn.functional.cross_entropy(net(batch).float(), labels.to(bb.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        step()  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem:
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else mem.mib / 1024
        return args.steps * B / seconds, peak

    net.train()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        batch = {**base, "vision": vision}
        run(batch)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                with torch.autocast(**amp):
                    loss = torch.nn.functional.cross_entropy(net(batch).float(), labels.to(bb.device))
                opt.zero_grad()
                loss.backward()
                opt.step()
            if cuda:
                torch.cuda.synchronize()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=10, max_name_column_width=60))
    live_sps, live_mem = run({**base, "pixel_values": pixels})
    cache_sps, cache_mem = run({**base, "vision": vision})
    result = {"benchmark": "finetune_speed", "size": args.size, "device": str(bb.device),
              "gpu": torch.cuda.get_device_name() if cuda else None, "machine": platform.platform(),
              "cpu_count": os.cpu_count(), "batch_size": B, "steps": args.steps, "amp": args.amp,
              "live_samples_per_s": round(live_sps, 3), "from_cache_samples_per_s": round(cache_sps, 3),
              "speedup": round(cache_sps / live_sps, 2),
              ("peak_gpu_gib_live" if cuda else "peak_rss_gib_live"): round(live_mem, 3),
              ("peak_gpu_gib_from_cache" if cuda else "peak_rss_gib_from_cache"): round(cache_mem, 3),
              "trainable_params": sum(p.numel() for p in net.trainable().values()),
              "command": "python " + " ".join(sys.argv)}
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"finetune_speed_{args.size}_{bb.device.type}_b{B}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
