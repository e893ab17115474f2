"""The torch heads (MLP, logistic regression) on an idle and on a busy machine: fit seconds with torch's own
thread count (every core), one thread, and the default (the cores idle at fit time, `heads.threads.free_cores`).

A `make demo` sweep beside a test suite took 38 minutes instead of 3: torch's OpenMP threads, one per core,
spin against the other process the way LightGBM's did. The competitor here: a torch matmul loop (OpenMP, like
a second fit or a test run). Data: Easy-VQA's shapes on the pooled view (38,575 x 768, 13 classes), synthetic.

    python benchmarks/heads_threads.py [--rows 38575] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from heads import LogisticRegressionHead, MLPHead
from heads.threads import free_cores

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)

COMPETITORS = {
    "idle": [],
    "torch-openmp-loop": ["import torch\nx = torch.randn(600, 600)\nwhile True: x @ x"],
}
HEADS = {
    "mlp (compact, 3 epochs)": lambda t: MLPHead(hidden_sizes=(512,), max_epochs=3, patience=100, num_threads=t),
    "lr (50 L-BFGS iterations)": lambda t: LogisticRegressionHead(max_iter=50, num_threads=t),
}


def fit_seconds(make, X, y, threads, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        make(threads).fit(X, y)
        best = min(best, time.perf_counter() - t)
    return round(best, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=38575)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, 768)).astype(np.float32)
    y = rng.integers(0, 13, args.rows)
    X[np.arange(args.rows), y] += 1.0
    y = y.astype(str)
    cores = os.cpu_count() or 1
    settings = {f"torch's own ({cores} threads)": cores, "1 thread": 1, "default (idle cores)": None}
    results = {"benchmark": "heads_threads", "machine": platform.platform(), "cpu_count": cores,
               "rows": args.rows, "command": "python " + " ".join(sys.argv), "runs": []}
    for load, programs in COMPETITORS.items():
        procs = [subprocess.Popen([sys.executable, "-c", p]) for p in programs]
        try:
            time.sleep(2.0 if procs else 0.0)
            for head, make in HEADS.items():
                row = {"load": load, "head": head, "free_cores_seen": free_cores(),
                       **{name: fit_seconds(make, X, y, t, args.repeats) for name, t in settings.items()}}
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            for p in procs:
                p.kill()
    save_result(results, args.out, "heads_threads.json")


if __name__ == "__main__":
    main()
