"""Captions per second with beam search (5 beams, up to 30 new tokens: `featcache caption`'s defaults) from cached
query states, against the same from images (the ViT + Q-Former in front), on random-init weights (speed only).

    python benchmarks/caption_speed.py --size tiny --images 8
    python benchmarks/caption_speed.py --size real --device cuda --dtype bfloat16 --images 64 --batch-size 16

`real`: blip2-opt-2.7b's dimensions (ViT-g 1408 x 39 at 224 px, Q-Former, OPT-2.7b), or flan-t5-xl's with
--lm t5. Random weights rarely stop early, so every caption runs its 30 tokens: an upper bound on the time.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from featcache.generative.caption import CaptionSettings, caption_tokens

from _generative import peak_gpu_gib, random_lm, sync  # noqa: E402  (benchmarks/, first on sys.path)
from _results import save_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--lm", choices=["opt", "t5"], default="opt")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    lm = random_lm(args.lm, args.size, args.device, args.dtype, real_vision=True)
    settings = CaptionSettings(num_beams=5, max_new_tokens=30, min_new_tokens=1)
    side = lm.model.config.vision_config.image_size
    pixels = torch.randn(args.images, 3, side, side, generator=torch.Generator().manual_seed(0)).to(lm.device, lm.dtype)
    with torch.inference_mode():
        query = torch.cat([lm.model.get_image_features(pixel_values=pixels[s:s + args.batch_size], return_dict=True)
                           .qformer_outputs.last_hidden_state for s in range(0, args.images, args.batch_size)])
    query = query.float().cpu().numpy()  # what a cache holds

    def from_cache() -> list[str]:
        return [c for s in range(0, args.images, args.batch_size)
                for c in caption_tokens(lm, lm.project(query[s:s + args.batch_size]), settings)]

    def from_images() -> list[str]:
        out = []
        for s in range(0, args.images, args.batch_size):
            with torch.inference_mode():
                tokens = lm.model.get_image_features(pixel_values=pixels[s:s + args.batch_size]).pooler_output
            out += caption_tokens(lm, tokens, settings)
        return out

    def timed(fn):
        sync(lm.device)
        t = time.perf_counter()
        value = fn()
        sync(lm.device)
        return value, time.perf_counter() - t

    caption_tokens(lm, lm.project(query[:1]), settings)  # warm-up
    cached, cache_s = timed(from_cache)
    live, live_s = timed(from_images)
    result = {"benchmark": "caption_speed", "size": args.size, "lm": args.lm, "device": args.device,
              "dtype": args.dtype,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
              "machine": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "images": args.images, "batch_size": args.batch_size, "num_beams": 5, "max_new_tokens": 30,
              "images_per_s_from_cache": round(args.images / cache_s, 2),
              "images_per_s_from_images": round(args.images / live_s, 2),
              "from_images_over_from_cache": round(live_s / cache_s, 2),
              "same_captions": cached == live, "peak_gpu_gib": peak_gpu_gib(lm.device),
              "command": "python " + " ".join(sys.argv)}
    for k, v in result.items():
        print(f"{k}: {v}")
    tag = "" if args.lm == "opt" else "_t5"
    save_result(result, args.out, f"caption_speed_{args.size}{tag}_{args.device.split(':')[0]}.json")


if __name__ == "__main__":
    main()
