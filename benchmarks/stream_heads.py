"""Heads over a cache larger than the memory they are given: each head fitted in memory and streamed
(`cache.view(..., stream=True)`), each fit in a child process whose memory is capped (RLIMIT_DATA:
heap and anonymous mappings, so torch's and numpy's allocations count), with its time, peak resident
memory and test accuracy, and the streamed predictions compared with the in-memory ones. The cap counts
address space reserved, not only memory touched (malloc arenas, thread stacks), so children run with
MALLOC_ARENA_MAX=2; the peak resident memory is what a machine would need.

    python benchmarks/stream_heads.py [--images 40000] [--budget-gib 2.0]

The synthetic cache has Easy-VQA's feature shapes (32 x 256 query projections, 256-d text) and
4 questions per image; its `itc` view holds `images` x 32 KiB of float32 image features in memory.
Run by `benchmarks/scale.py` as its heads part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEADS = {
    "lr": ("LogisticRegressionHead", dict(max_iter=30, block_images=4096)),
    "mlp-compact": ("MLPHead.compact", dict(max_epochs=2, block_images=4096)),
    "lgbm": ("LightGBMHead", dict(n_components=32, n_estimators=30, pca_max_rows=5000)),
}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: reset by exec, unlike ru_maxrss, which a child
    inherits from the parent it was forked from)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def child(args) -> None:
    """One fit under the memory cap; prints one JSON line."""
    if args.budget_gib:
        cap = int(args.budget_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    import heads
    from featcache import open_cache

    name, params = HEADS[args.head]
    cls_name, _, preset = name.partition(".")
    cls = getattr(heads, cls_name)
    head = getattr(cls, preset)(**params) if preset else cls(**params)
    out = {"head": args.head, "mode": args.mode, "budget_gib": args.budget_gib}
    try:
        with open_cache(args.cache) as cache:
            X, y = cache.view("itc", "train", stream=args.mode == "stream")
            Xt, yt = cache.view("itc", "test", stream=args.mode == "stream")
            t = time.perf_counter()
            head.fit(X, y)
            out["fit_s"] = round(time.perf_counter() - t, 2)
            proba = head.predict_proba(Xt)
            out["test_accuracy"] = round(float((head.classes_[proba.argmax(1)] == yt).mean()), 4)
            np.save(args.proba, proba)
    except MemoryError:
        out["error"] = "MemoryError"
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out), flush=True)


def run_stream_heads(images: int, budget_gib: float, work: Path) -> dict:
    from featcache.cache.synthetic import write_synthetic_cache

    n_test = images // 10
    t = time.perf_counter()
    cache = write_synthetic_cache(work / "big.h5", n_train_images=images - n_test, n_test_images=n_test,
                                  n_train_questions=4 * (images - n_test), n_test_questions=4 * n_test, seed=1)
    result = {"images": images, "questions": 4 * images, "cache_gb_on_disk": round(cache.stat().st_size / 1e9, 2),
              "itc_image_part_in_memory_gb": round(images * 32 * 256 * 4 / 1e9, 2), "budget_gib": budget_gib,
              "write_cache_s": round(time.perf_counter() - t, 1), "fits": []}
    for head in HEADS:
        probas = {}
        for mode, budget in (("memory", 0.0), ("memory", budget_gib), ("stream", budget_gib)):
            proba = work / f"{head}-{mode}-{budget}.npy"
            cmd = [sys.executable, __file__, "--child", "--cache", str(cache), "--head", head, "--mode", mode,
                   "--budget-gib", str(budget), "--proba", str(proba)]
            line = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd(),
                                                                           "MALLOC_ARENA_MAX": "2"})
            if line.returncode != 0:
                fit = {"head": head, "mode": mode, "budget_gib": budget,
                       "error": (line.stderr.strip().splitlines() or ["exit %d" % line.returncode])[-1]}
            else:
                fit = json.loads(line.stdout.strip().splitlines()[-1])
            if proba.exists():
                probas[(mode, budget)] = np.load(proba)
            print(json.dumps(fit), flush=True)
            result["fits"].append(fit)
        ref, streamed = probas.get(("memory", 0.0)), probas.get(("stream", budget_gib))
        if ref is not None and streamed is not None:
            result["fits"][-1]["max_abs_proba_diff_vs_memory"] = float(np.abs(ref - streamed).max())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40000)
    ap.add_argument("--budget-gib", type=float, default=2.0)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--head", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--proba", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(Path(__file__).parent))
    from _results import save_result

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        result = run_stream_heads(args.images, args.budget_gib, Path(tmp))
    result.update(benchmark="stream_heads", machine=platform.platform(), cpu_count=os.cpu_count(),
                  command="python " + " ".join(sys.argv))
    print(json.dumps(result, indent=1))
    save_result(result, args.out, "stream_heads.json")


if __name__ == "__main__":
    main()
