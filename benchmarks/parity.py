"""Feature parity across devices and precisions: the same random-init model (same seed, same weights)
extracts the same Easy-VQA images (float32 store) in float32 on the CPU and in --dtype on --device;
prints and saves the max / mean absolute difference and the worst cosine similarity per dataset.

    python benchmarks/parity.py --size tiny --device cpu --dtype bfloat16
    python benchmarks/parity.py --size real --device cpu --dtype bfloat16 --images 8
    python benchmarks/parity.py --size real --device cuda --dtype float16 --images 256     # on a GPU

Both models come from the same seed, so they hold the same weights (rounded to --dtype). Weights are
random (no hub here): the differences show the arithmetic's rounding, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from featcache import open_cache
from featcache.datasets import load_dataset
from featcache.extract import Compute, Storage, extract
from featcache.models.random_init import random_backbone

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"max_abs_diff": float(np.abs(a - b).max()), "mean_abs_diff": float(np.abs(a - b).mean()),
            "max_abs_value": float(np.abs(a).max()), "min_cosine": float(cos.min())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    ds = load_dataset("easy-vqa")
    keep = set(ds.images()[: args.images])
    ds.questions = [q for q in ds.questions if q.image in keep]
    caches = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, device, dtype in (("reference", "cpu", "float32"), ("candidate", args.device, args.dtype)):
            bb = random_backbone(args.size, device=device, dtype=dtype, seed=0)
            caches[name] = Path(tmp) / f"{name}.h5"
            extract(ds, caches[name], model=bb, progress=False, compute=Compute(batch_size=args.batch_size, workers=0),
                    storage=Storage(store_dtype="float32"))
            del bb
        with open_cache(caches["reference"]) as ref, open_cache(caches["candidate"]) as cand:
            fingerprints = [ref.attrs["model_fingerprint"], cand.attrs["model_fingerprint"]]  # bf16 rounds past fp16
            diffs = {f"{g}/{n}": compare(ref.array(g, n), cand.array(g, n))
                     for g, names in (("images", ("query", "query_proj")), ("questions", ("text_cls", "text_proj")))
                     for n in names}
    result = {"benchmark": "parity", "size": args.size, "reference": "cpu float32",
              "candidate": f"{args.device} {args.dtype}", "images": len(keep), "questions": len(ds.questions),
              "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
              "torch": torch.__version__, "cuda": torch.version.cuda, "machine": platform.platform(),
              "command": "python " + " ".join(sys.argv), "fingerprints": fingerprints, "datasets": diffs}
    print(json.dumps(result, indent=1))
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    save_result(result, args.out, f"parity_{args.size}_{dev}_{args.dtype}.json")


if __name__ == "__main__":
    main()
