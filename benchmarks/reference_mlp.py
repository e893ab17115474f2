"""The paper's classifier (`MLPHead.reference()`: 8,448 -> 5,012 -> 2,056 -> 1,024 -> 512 -> 13) against the
compact preset (one hidden layer of 512) on the itc view of a synthetic cache with Easy-VQA's shapes
(38,575 / 9,673 questions, 4,000 / 1,000 images), on CPU with the factorised first layer.

Reports fit seconds per epoch, peak memory and parameter count. Epochs are capped (--epochs) since the
point is the cost of an epoch; accuracy after so few epochs at lr 1e-4 says little.

    python benchmarks/reference_mlp.py [--epochs 2]
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

import torch

from featcache import open_cache
from featcache.cache.synthetic import write_synthetic_cache
from heads import MLPHead

sys.path.insert(0, str(Path(__file__).parent))
from heads_speed import PeakRSS  # noqa: E402

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cuda: the MLP heads on the GPU (logistic regression stays on CPU)")
    ap.add_argument("--lr", action="store_true", help="Also time a logistic regression fit (100 L-BFGS iterations).")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    results = {"benchmark": "reference_mlp", "machine": platform.platform(), "cpu_count": os.cpu_count(),
               "device": args.device,
               "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
               "torch_threads": torch.get_num_threads(), "command": "python " + " ".join(sys.argv), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_cache(Path(tmp) / "syn.h5", 4000, 1000, 38575, 9673, noise=2.0)
        with open_cache(path) as cache:
            (X, y), (Xt, yt) = cache.view("itc", "train"), cache.view("itc", "test")
    for preset in ("compact", "reference"):
        head = getattr(MLPHead, preset)(max_epochs=args.epochs, patience=args.epochs, device=args.device)
        with PeakRSS() as mem:
            t = time.perf_counter()
            head.fit(X, y)
            fit_s = time.perf_counter() - t
        params = sum(p.numel() for p in head.net_.parameters())
        row = {"preset": preset, "view": "itc", "input_dims": X.shape[1],
               "hidden_sizes": list(head.hidden_sizes), "parameters": params, "epochs": head.n_epochs_,
               "fit_s": round(fit_s, 1), "s_per_epoch": round(fit_s / head.n_epochs_, 1),
               "peak_mem_mib": mem.mib, "test_accuracy_after_these_epochs": round(head.score(Xt, yt), 4)}
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
    if args.lr:
        from heads import LogisticRegressionHead

        head = LogisticRegressionHead()
        t = time.perf_counter()
        head.fit(X, y)
        row = {"head": "lr", "view": "itc", "fit_s": round(time.perf_counter() - t, 1), "iterations": head.n_iter_,
               "test_accuracy": round(head.score(Xt, yt), 4)}
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
    suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
    save_result(results, args.out, f"reference_mlp{suffix}.json")


if __name__ == "__main__":
    main()
