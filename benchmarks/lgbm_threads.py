"""LightGBM on a busy machine: fit seconds with all cores, one thread, and the default (the cores idle at
fit time, `heads.threads.free_cores`), on an idle machine and beside competing processes.

OpenMP threads spin while they wait for each other, so a fit that asks for every core while another
process uses them slows down several-fold. The competitors: a torch matmul loop (OpenMP, like a second
fit or a test run) and plain Python busy loops, one per core.

    python benchmarks/lgbm_threads.py
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

from heads import LightGBMHead

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)

COMPETITORS = {
    "idle": [],
    "torch-openmp-loop": ["import torch\nx = torch.randn(600, 600)\nwhile True: x @ x"],
    "python-busy-loops": ["while True: pass"] * (os.cpu_count() or 1),
}


def fit_seconds(X, y, threads, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        LightGBMHead(num_threads=threads, n_estimators=50, early_stopping_rounds=1000).fit(X, y)
        best = min(best, time.perf_counter() - t)
    return round(best, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,30000", help="rows of the fits (64 features, 13 classes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    settings = {"all cores (0)": 0, "1 thread": 1, "default (idle cores)": None}
    results = {"benchmark": "lgbm_threads", "machine": platform.platform(), "cpu_count": os.cpu_count(),
               "command": "python " + " ".join(sys.argv), "runs": []}
    for n in (int(s) for s in args.sizes.split(",")):
        X = rng.normal(size=(n, 64)).astype(np.float32)
        y = rng.integers(0, 13, n)
        X[np.arange(n), y] += 2.0
        y = y.astype(str)
        fit_seconds(X, y, 0, 1)  # warm-up
        for load, programs in COMPETITORS.items():
            procs = [subprocess.Popen([sys.executable, "-c", p]) for p in programs]
            try:
                time.sleep(1.0 if procs else 0.0)
                row = {"rows": n, "load": load, **{name: fit_seconds(X, y, t, args.repeats) for name, t in settings.items()}}
            finally:
                for p in procs:
                    p.kill()
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
    save_result(results, args.out, "lgbm_threads.json")


if __name__ == "__main__":
    main()
