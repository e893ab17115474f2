"""What `finetune --generative` gains by training from cached query states: seconds per LoRA step on
the language model from the cache, against the same step with the ViT + Q-Former forward in front of
it (what training from images costs; the report measured ~3x from caching the vision features).

    python benchmarks/generative_finetune_speed.py --size tiny --steps 5
    python benchmarks/generative_finetune_speed.py --size real --steps 2   # blip2-opt-2.7b dims, ~17 GB RAM
    python benchmarks/generative_finetune_speed.py --size real --device cuda --amp bfloat16 --steps 10 \
        [--recipe paper-baseline] [--lm t5] [--batch-size 16]

`real` is a random-init Blip2ForConditionalGeneration with blip2-opt-2.7b's dimensions: ViT-g
(1408 x 39, 224 px), Q-Former 768 x 12, OPT-2.7b (2560 x 32, 50,272 tokens); LoRA as the report's
recipe (rank 16 on q/k/v/out, fc1, fc2 of the language model). Timings on random weights measure
speed only.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from featcache.generative.finetune import RECIPES, _batch_loss, inject_lora
from featcache.generative.rank import answer_tokens

from _generative import peak_gpu_gib, random_lm, sync  # noqa: E402  (benchmarks/, first on sys.path)
from _results import save_result  # noqa: E402

QUESTIONS = ["what color is the shape?", "is there a red shape in the image?", "what shape is in the image?",
             "does the image contain a circle?"]
ANSWERS = ["red", "no", "circle", "yes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4, help="The report's batch size.")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lm", choices=["opt", "t5"], default="opt")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="lora-vqa-report")
    ap.add_argument("--amp", choices=["bfloat16", "float16"], help="Autocast (on a GPU, as the recipes run).")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    t = time.perf_counter()
    lm = random_lm(args.lm, args.size, args.device, real_vision=True)
    build_s = time.perf_counter() - t
    config = replace(RECIPES[args.recipe], lora_dropout=0.0)
    amp = dict(device_type=lm.device.type, dtype=getattr(torch, args.amp or "bfloat16"), enabled=bool(args.amp))
    inject_lora(lm, config)
    lm.model.train()
    params = [p for p in lm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr)
    b = args.batch_size
    side = lm.model.config.vision_config.image_size
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(b, 3, side, side, generator=gen).to(lm.device)
    prompts = [config.prompt.format(QUESTIONS[i % 4]) for i in range(b)]
    answers = answer_tokens(lm, [ANSWERS[i % 4] for i in range(b)])
    with torch.no_grad():  # what the cache holds: the Q-Former's query states
        query = lm.model.get_image_features(pixel_values=pixels, return_dict=True).qformer_outputs.last_hidden_state

    def step(live: bool) -> float:
        sync(lm.device)
        start = time.perf_counter()
        with torch.autocast(**amp):
            with torch.no_grad():
                q = (lm.model.get_image_features(pixel_values=pixels, return_dict=True).qformer_outputs.last_hidden_state
                     if live else query)
                tokens = lm.model.language_projection(q)
            loss = _batch_loss(lm, tokens, prompts, answers)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync(lm.device)
        return time.perf_counter() - start

    step(False)  # warm-up
    cached = [step(False) for _ in range(args.steps)]
    live = [step(True) for _ in range(args.steps)]
    with torch.no_grad(), torch.autocast(**amp):
        sync(lm.device)
        t = time.perf_counter()
        lm.model.get_image_features(pixel_values=pixels)
        sync(lm.device)
        vision_s = time.perf_counter() - t
    result = {
        "benchmark": "generative_finetune_speed", "size": args.size, "device": args.device, "lm": args.lm,
        "recipe": args.recipe, "amp": args.amp, "peak_gpu_gib": peak_gpu_gib(lm.device),
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        "machine": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "batch_size": b, "steps": args.steps, "lora_rank": config.lora_rank,
        "lm_parameters_m": round(sum(p.numel() for p in lm.lm.parameters()) / 1e6, 1),
        "vision_qformer_parameters_m": round(sum(p.numel() for n, p in lm.model.named_parameters()
                                                 if not n.startswith("language_model.")) / 1e6, 1),
        "build_s": round(build_s, 1),
        "cached_s_per_step": round(float(np.median(cached)), 3), "live_s_per_step": round(float(np.median(live)), 3),
        "vision_forward_s_per_batch": round(vision_s, 3),
        "live_over_cached": round(float(np.median(live) / np.median(cached)), 2),
        "samples_per_s_cached": round(b / float(np.median(cached)), 2),
        "samples_per_s_live": round(b / float(np.median(live)), 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2),
        "command": "python " + " ".join(sys.argv),
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    tag = ("" if args.lm == "opt" else "_t5") + ("" if args.recipe == "lora-vqa-report" else "_baseline")
    save_result(result, args.out, f"generative_finetune_speed_{args.size}{tag}_{args.device.split(':')[0]}.json")


if __name__ == "__main__":
    main()
