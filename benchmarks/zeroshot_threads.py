"""Zero-shot rank beside a busy process: torch's own thread count (one per core, spinning against the other job)
against the idle cores the generative paths now take (heads.threads.on_idle_cores), in one run.

    python benchmarks/zeroshot_threads.py [--questions 300]

The model is the tiny random OPT BLIP-2 (its answers mean nothing: only the seconds are measured); the competitor
is a torch matmul loop, as in benchmarks/heads_threads.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)

BUSY = "import torch\nx = torch.randn(600, 600)\nwhile True: x @ x"


def seconds(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    import torch

    from featcache.datasets import load_dataset
    from featcache.extract import Compute, extract
    from featcache.generative.zeroshot import zeroshot

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "c.h5"
        extract(load_dataset("easy-vqa", limit=args.questions), cache, model="tiny-random-opt", progress=False,
                compute=Compute(device="cpu", workers=0))
        run = lambda: zeroshot(cache, "tiny-random-opt", "rank", device="cpu", progress=False)  # noqa: E731

        def every_core():  # what it did before: torch's default, one thread per core
            torch.set_num_threads(cores)
            return zeroshot.__wrapped__(cache, "tiny-random-opt", "rank", device="cpu", progress=False)

        run()  # warm: the model built and loaded once
        rows = {}
        for load in ("idle", "busy"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if load == "busy" else None
            try:
                time.sleep(1.0 if busy else 0.0)
                rows[load] = {"every core (before)": round(seconds(every_core), 2),
                              "idle cores (now)": round(seconds(run), 2)}
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            print(load, rows[load], flush=True)
    result = {"command": "python benchmarks/zeroshot_threads.py " + " ".join(sys.argv[1:]),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": cores},
              "questions": args.questions, "seconds": rows,
              "busy_slowdown_before": round(rows["busy"]["every core (before)"] / rows["idle"]["every core (before)"], 2),
              "busy_slowdown_now": round(rows["busy"]["idle cores (now)"] / rows["idle"]["idle cores (now)"], 2)}
    save_result(result, args.out, "zeroshot_threads.json")


if __name__ == "__main__":
    main()
