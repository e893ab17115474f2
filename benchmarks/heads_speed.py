"""Heads on a synthetic cache with Easy-VQA's shapes (38,575 / 9,673 questions, 4,000 / 1,000 images,
13 classes), written in the real cache format. Reports fit/predict seconds, peak memory and test
accuracy for each head x view, as ratios against plain scikit-learn LogisticRegression(max_iter=200)
on the pooled view measured in the same run; and the factorised vs materialised speed of the linear
heads on the wide views at equal work (fixed iterations / epochs).

    python benchmarks/heads_speed.py                      # all (about 10 minutes on 2 cores)
    python benchmarks/heads_speed.py --quick              # smaller cache, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from featcache import open_cache
from featcache.cache.synthetic import write_synthetic_cache
from heads import LightGBMHead, LogisticRegressionHead, MLPHead


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 20 ms (covers torch and LightGBM)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return round((self.peak - self.base) / 2**20, 1)


def timed_fit(make, X, y, Xt, yt) -> dict:
    head = make()
    with PeakRSS() as mem:
        t = time.perf_counter()
        head.fit(X, y)
        fit_s = time.perf_counter() - t
    t = time.perf_counter()
    acc = head.score(Xt, yt)
    return {"fit_s": round(fit_s, 2), "predict_s": round(time.perf_counter() - t, 2), "accuracy": round(acc, 4),
            "peak_mem_mib": mem.mib}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1/10 of the questions and images")
    ap.add_argument("--views", default="pooled,sim,itc,full")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    results: dict = {"benchmark": "heads_speed", "machine": platform.platform(), "cpu_count": os.cpu_count(),
                     "command": "python " + " ".join(sys.argv), "runs": [], "factorised": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_cache(Path(tmp) / "syn.h5", 4000 // scale, 1000 // scale, 38575 // scale,
                                     9673 // scale, noise=2.0)
        cache = open_cache(path)
        data = {v: (cache.view(v, "train"), cache.view(v, "test")) for v in args.views.split(",")}

    from sklearn.linear_model import LogisticRegression

    (X, y), (Xt, yt) = data["pooled"]
    Xd, Xtd = np.asarray(X), np.asarray(Xt)
    base = timed_fit(lambda: LogisticRegression(max_iter=200), Xd, y, Xtd, yt)
    results["baseline"] = {"head": "sklearn LogisticRegression(max_iter=200)", "view": "pooled", **base}
    print(f"baseline sklearn LR on pooled: {base}", flush=True)

    heads = {"lr": LogisticRegressionHead, "mlp": MLPHead, "lgbm": LightGBMHead}
    for view, ((X, y), (Xt, yt)) in data.items():
        for name, cls in heads.items():
            if name == "lgbm" and view in ("itc", "full"):
                continue  # trees on 8k-25k dense dims: see the note in the README
            r = timed_fit(cls, X, y, Xt, yt)
            r.update(head=name, view=view, fit_over_baseline=round(r["fit_s"] / base["fit_s"], 2),
                     accuracy_minus_baseline=round(r["accuracy"] - base["accuracy"], 4))
            results["runs"].append(r)
            print(json.dumps(r), flush=True)

    # factorised vs materialised at equal work: fixed L-BFGS iterations / MLP epochs
    equal_work = {"lr": lambda: LogisticRegressionHead(max_iter=30, tol=0.0),
                  "mlp": lambda: MLPHead(max_epochs=1, validation_fraction=0.0)}
    for view in ("itc", "full"):
        if view not in data:
            continue
        (X, y), _ = data[view]
        for name, make in equal_work.items():
            t = time.perf_counter()
            make().fit(X, y)
            fact = time.perf_counter() - t
            with PeakRSS() as mem:
                t = time.perf_counter()
                make().fit(np.asarray(X), y)  # materialising is part of that path's cost
                mat = time.perf_counter() - t
            r = {"head": name, "view": view, "factorised_s": round(fact, 2), "materialised_s": round(mat, 2),
                 "speedup": round(mat / fact, 2), "materialised_peak_mem_mib": mem.mib}
            results["factorised"].append(r)
            print(json.dumps(r), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "heads_speed_quick.json" if args.quick else "heads_speed.json"
    (out / name).write_text(json.dumps(results, indent=1) + "\n")
    print(f"saved {out / name}")


if __name__ == "__main__":
    main()
