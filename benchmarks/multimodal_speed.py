"""Question-conditioned extraction against the unimodal run, on the same images, in one run.

`featcache extract --features multimodal` runs the ViT once per image and the Q-Former once more per distinct
(image, question) pair, reading the question with its queries. This measures the whole extraction (the same
command a user runs: decode, ViT, Q-Former, text pass, shards, merge) with and without it, at real size
(random-init blip2-itm-vit-g, and InstructBLIP's ViT-g + instruction-aware Q-Former), with `--questions`
questions per image, plus the bytes stored per question. Weights are random: speed does not depend on them.
Target: multimodal <= 1.25x the unimodal run at 5.4 questions per image (VQAv2's ratio).

    python benchmarks/multimodal_speed.py --size tiny --images 64
    python benchmarks/multimodal_speed.py --size real --images 8 --questions 5          # CPU: minutes
    python benchmarks/multimodal_speed.py --size real --device cuda --images 2048 --questions 5
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import h5py
import torch

from featcache.datasets import Question, VQADataset, load_dataset
from featcache.extract import Compute, Features, extract
from featcache.models.random_init import random_backbone, random_instructblip_backbone

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)

QUESTIONS = ["what color is the shape?", "what shape is in the image?", "is there a circle in the picture?",
             "is the shape on the left or on the right?", "how many shapes are there in this image?",
             "does the image contain a red triangle?", "what is the colour of the object?"]


def dataset(images: int, per_image: int) -> VQADataset:
    """Easy-VQA images, each with `per_image` distinct questions (of realistic length: 7-10 words)."""
    ds = load_dataset("easy-vqa")
    keys = ds.images()[:images]
    questions = [Question(k, QUESTIONS[(i + j) % len(QUESTIONS)] if j < len(QUESTIONS) else f"{QUESTIONS[0]} {j}",
                          "red", "train") for i, k in enumerate(keys) for j in range(per_image)]
    return VQADataset("bench", ds.source, questions, {k: ds.image_paths[k] for k in keys})


def timed(ds, out: Path, bb, batch_size: int, workers, **options) -> tuple[float, dict]:
    if bb.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    report = extract(ds, out, model=bb, progress=False, **options,
                     compute=Compute(batch_size=batch_size, workers=workers))
    if bb.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, report.stage_seconds


def stored_bytes(path: Path, name: str) -> int:
    with h5py.File(path, "r") as f:
        return f["pairs"][name].id.get_storage_size() if "pairs" in f else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--questions", type=float, default=5, help="questions per image (whole numbers)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--families", default="blip2,instructblip")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    per_image = int(args.questions)
    ds = dataset(args.images, per_image)
    workers = args.workers if args.workers == "auto" else int(args.workers)
    rows = {}
    for family in args.families.split(","):
        make = random_backbone if family == "blip2" else random_instructblip_backbone
        bb = make(args.size, device=args.device)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            warm = VQADataset("warm", ds.source, ds.questions[:per_image * 2], ds.image_paths)
            extract(warm, tmp / "warm.h5", model=bb, progress=False, compute=Compute(workers=0),
                    features=Features(kind="multimodal"))
            uni_s, uni_stages = timed(ds, tmp / "uni.h5", bb, args.batch_size, workers)
            mm_s, mm_stages = timed(ds, tmp / "mm.h5", bb, args.batch_size, workers,
                                    features=Features(kind="multimodal"))
            pooled_s, _ = timed(ds, tmp / "pooled.h5", bb, args.batch_size, workers,
                                features=Features(kind="multimodal", mm_store="pooled"))
            n_q = len(ds.questions)
            rows[family] = {
                "unimodal_s": round(uni_s, 3), "multimodal_s": round(mm_s, 3), "multimodal_pooled_s": round(pooled_s, 3),
                "multimodal_over_unimodal": round(mm_s / uni_s, 3),
                "pooled_over_unimodal": round(pooled_s / uni_s, 3),
                "unimodal_stage_seconds": uni_stages, "multimodal_stage_seconds": mm_stages,
                "bytes_per_question_full": round(stored_bytes(tmp / "mm.h5", "mm_query") / n_q),
                "bytes_per_question_pooled": round(stored_bytes(tmp / "pooled.h5", "mm_pooled") / n_q),
                "unimodal_file_bytes": (tmp / "uni.h5").stat().st_size, "multimodal_file_bytes": (tmp / "mm.h5").stat().st_size,
            }
        del bb
    result = {"benchmark": "multimodal_speed", "size": args.size, "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
              "machine": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "images": args.images, "questions_per_image": per_image, "questions": len(ds.questions),
              "batch_size": args.batch_size, "workers": args.workers, "store_dtype": "float16", **rows,
              "target": "multimodal_over_unimodal <= 1.25 at 5.4 questions per image",
              "command": "python " + " ".join(sys.argv)}
    for k, v in result.items():
        print(f"{k}: {v}")
    save_result(result, args.out, f"multimodal_speed_{args.size}_{args.device.split(':')[0]}.json")


if __name__ == "__main__":
    main()
