"""Peak memory of `featcache zeroshot --method rank` (the whole command, report included) against the number of
candidate answers: a cache of 10 random images whose questions have N distinct answers (DAQUAR-like phrases),
made with tiny-random-opt (RANDOM weights: only memory and time count here), 3 questions ranked over all N;
each run in a fresh process, its peak RSS read from the kernel.

    python benchmarks/rank_memory.py --answers 13,100,500,1000,3129

Target: memory flat in the number of answers (DAQUAR has 1,443, VQAv2's vocabulary 3,129). Before this
benchmark, 500 answers took the command past 23 GB (killed): the report's confusion plot grew with the square
of the classes. The candidates themselves are scored in chunks of at most CHUNK_BYTES per large tensor
(featcache.generative.rank), so the language model's side is bounded too.
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

WORDS = "red blue green chair table lamp window door floor wall bed sofa picture book shelf".split()


def dataset(folder: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"i{i}.png")
    rows = ["image,question,answer,split"]
    for j in range(max(n, 10)):
        answer = " ".join(WORDS[(j // len(WORDS) ** k) % len(WORDS)] for k in range(3)) + f" {j % n}"
        rows.append(f"{folder / f'i{j % 10}.png'},what is on the table?,{answer},{'test' if j % 5 == 0 else 'train'}")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder / "m.csv"


def peak_of(cmd: list[str]) -> tuple[int, float, int]:
    """(exit status, seconds, peak RSS in bytes) of a child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t, usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answers", default="13,100,500,1000,3129")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    from featcache.generative.rank import CHUNK_BYTES

    featcache = str(Path(sys.executable).with_name("featcache"))
    rows = []
    for n in (int(x) for x in args.answers.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = dataset(Path(tmp), n)
            code, _, _ = peak_of([featcache, "extract", "--dataset", str(manifest), "--model", "tiny-random-opt",
                                  "--out", f"{tmp}/c.h5", "--device", "cpu", "--workers", "0"])
            code, seconds, peak = peak_of([featcache, "zeroshot", f"{tmp}/c.h5", "--model", "tiny-random-opt",
                                           "--method", "rank", "--limit", "3", "--device", "cpu", "--out", f"{tmp}/r"])
        row = {"answers": n, "exit_status": code, "seconds": round(seconds, 1), "peak_rss_gib": round(peak / 2**30, 3)}
        rows.append(row)
        print(row, flush=True)
    save_result({"benchmark": "rank_memory", "model": "tiny-random-opt (RANDOM weights)", "machine": platform.platform(),
                 "cpu_count": os.cpu_count(), "chunk_bytes": CHUNK_BYTES, "questions": 3, "rows": rows,
                 "command": "python " + " ".join(sys.argv)}, args.out, "rank_memory_cpu.json")


if __name__ == "__main__":
    main()
