"""Decode + resize throughput per CPU core (what a decode worker does for the GPU), by image kind, with the
full decode and with `--jpeg-draft` (libjpeg's reduced-scale decode, keeping >= 2x the model's size),
and how many cores the H100's ~1,500 images/s would need. Also the effect of the draft decode on the
model's input (uint8 pixels after resizing to 224) and on the Q-Former features of a random-init model
with blip2-itm-vit-g's dimensions (--feature-images of the largest photos; CPU, ~3 s an image).

    python benchmarks/decode_speed.py [--daquar ../shared/datasets/daquar] [--feature-images 4]

Single process, so the figures are per core.
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
from PIL import Image
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from featcache.datasets import load_dataset
from featcache.images import ImagePreprocessor, load_image

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)

H100_IMAGES_PER_S = 1500


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like picture: smooth colour fields plus fine noise (JPEG sizes of real photos)."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    noise = rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def rate(paths: list[Path], pre: ImagePreprocessor, draft: bool, seconds: float = 4.0) -> float:
    """Images per second of decode + resize to uint8 in this process."""
    draft_size = 2 * max(pre.size) if draft else None
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < len(paths):
        pre.resize_uint8(load_image(paths[n % len(paths)], draft_size))
        n += 1
    return n / (time.perf_counter() - t0)


def feature_effect(paths: list[Path]) -> dict:
    """Query states of full vs draft decodes through a random-init ViT-g + Q-Former (float32, CPU)."""
    from featcache.models.random_init import random_backbone

    bb = random_backbone("real", device="cpu")
    pre = bb.preprocessor
    full = bb.encode_images(np.stack([pre.resize_uint8(load_image(p)) for p in paths]))["query"]
    draft = bb.encode_images(np.stack([pre.resize_uint8(load_image(p, 2 * max(pre.size))) for p in paths]))["query"]
    a, b = full.reshape(len(paths), -1), draft.reshape(len(paths), -1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"images": [p.name for p in paths], "query_max_abs_diff": float(np.abs(a - b).max()),
            "query_max_abs_value": float(np.abs(a).max()), "query_min_cosine": float(cos.min()),
            "note": "random-init weights with blip2-itm-vit-g dimensions"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daquar", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "daquar"))
    ap.add_argument("--feature-images", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="", help="suffix of the result file (e.g. the machine)")
    args = ap.parse_args()
    pre = ImagePreprocessor(BlipImageProcessorPil(size={"height": 224, "width": 224}))
    results = {"benchmark": "decode_speed", "machine": platform.platform(), "cpu_count": os.cpu_count(),
               "command": "python " + " ".join(sys.argv), "model_input": "224x224", "kinds": []}
    with tempfile.TemporaryDirectory() as tmp:
        kinds: dict[str, list[Path]] = {}
        ds = load_dataset("easy-vqa", limit=300)
        kinds["Easy-VQA PNG 64x64"] = [Path(ds.image_paths[k]) for k in ds.images()[:40]]
        daquar = sorted((Path(args.daquar) / "images").glob("*.jpg"))[:40] if Path(args.daquar).exists() else []
        if daquar:
            kinds[f"DAQUAR JPEG {Image.open(daquar[0]).size[0]}x{Image.open(daquar[0]).size[1]}"] = daquar
        for w, h in ((2048, 1536), (4032, 3024)):
            paths = []
            for i in range(6):
                paths.append(Path(tmp) / f"photo{w}_{i}.jpg")
                photo(w, h, i).save(paths[-1], quality=90)
            kinds[f"photo JPEG {w}x{h}"] = paths
        for kind, paths in kinds.items():
            full, draft = rate(paths, pre, False), rate(paths, pre, True)
            diffs = [np.abs(pre.resize_uint8(load_image(p)).astype(int)
                            - pre.resize_uint8(load_image(p, 2 * max(pre.size))).astype(int)) for p in paths[:6]]
            row = {"kind": kind, "full_decode_img_per_s_per_core": round(full, 1),
                   "draft_decode_img_per_s_per_core": round(draft, 1),
                   "cores_for_1500_img_per_s_full": int(np.ceil(H100_IMAGES_PER_S / full)),
                   "cores_for_1500_img_per_s_draft": int(np.ceil(H100_IMAGES_PER_S / draft)),
                   "draft_pixel_mean_abs_diff": round(float(np.mean([d.mean() for d in diffs])), 3),
                   "draft_pixel_max_abs_diff": int(max(d.max() for d in diffs))}
            results["kinds"].append(row)
            print(json.dumps(row), flush=True)
        if args.feature_images:
            results["draft_feature_effect"] = feature_effect(kinds[list(kinds)[-1]][: args.feature_images])
            print(json.dumps(results["draft_feature_effect"]), flush=True)
    save_result(results, args.out, f"decode_speed{'_' + args.tag if args.tag else ''}.json")


if __name__ == "__main__":
    main()
