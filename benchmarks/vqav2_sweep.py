"""`featcache sweep` with its defaults at VQAv2's size on a laptop: the whole command, timed.

    python benchmarks/vqav2_sweep.py [--cache PATH] [--scale 1.0] [--views pooled,itc] [--grid small]

Runs `featcache sweep CACHE --views pooled,itc --eval-split val` (default heads and grid) on the structured
synthetic VQAv2-train cache of benchmarks/vqav2_synthetic.py and records the wall seconds of the whole command,
its peak memory, each row of its report (fit seconds, validation and held-out VQA accuracy, what was skipped)
and the machine. Target (issue: heads at the field's scale): <= 60 minutes on 2 cores.
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

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=None, help="Reuse (or write once to) this synthetic cache file.")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--views", default="pooled,itc")
    ap.add_argument("--grid", default="small")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    from vqav2_heads import machine
    from vqav2_synthetic import write_cache

    with tempfile.TemporaryDirectory(dir=os.environ.get("FEATCACHE_BENCH_TMP")) as tmp:
        path = Path(args.cache) if args.cache else Path(tmp) / "vqav2-synthetic.h5"
        shapes = {"reused": str(path)} if path.exists() else write_cache(path, args.scale)
        report = Path(tmp) / "report"
        cmd = [sys.executable, "-m", "cli", "sweep", str(path), "--views", args.views, "--eval-split", "val",
               "--grid", args.grid, "--out", str(report)]
        t = time.perf_counter()
        child = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t
        print(child.stdout)
        if child.returncode != 0:
            sys.exit(f"the sweep failed (exit {child.returncode})")
        results = json.loads((report / "results.json").read_text())
    rows = [{k: r.get(k) for k in ("head", "view", "params", "validation_accuracy", "fit_s", "candidates")}
            | {"heldout_vqa_accuracy": (r.get("benchmark") or {}).get("primary")} for r in results["ranking"]]
    result = {"machine": {**machine(), "platform": platform.platform()}, "cache": shapes,
              "sweep_command": "featcache sweep CACHE --views " + args.views + " --eval-split val --grid " + args.grid,
              "wall_s": round(wall, 1), "wall_min": round(wall / 60, 1),
              "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
              "rows": rows, "skipped": results.get("skipped", []),
              "command": "python benchmarks/vqav2_sweep.py " + " ".join(sys.argv[1:])}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    save_result(result, args.out, "vqav2_sweep" + ("" if args.scale == 1.0 else f"_scale{args.scale}") + ".json")


if __name__ == "__main__":
    main()
