"""Heads at VQAv2's size on a laptop: a synthetic cache with VQAv2 train's shapes (443,757 questions, 82,783 images,
3,129 answers, 10 human answers per question), written in the real format (references included), then the
seconds of one epoch and the peak memory of the soft-score (BCE) heads the VQA protocol trains, on `itc` and
`pooled`, each in its own process (so each peak is its own):

    python benchmarks/vqav2_heads.py [--scale 1.0] [--paper-fraction 0.1] [--threads 2]

- mlp-compact: MLPHead.compact(loss="bce"), one full epoch;
- mlp-paper: MLPHead.reference(loss="bce") (the paper's 5012-2056-1024-512), one epoch over `--paper-fraction` of
  the images' questions, and that time divided by the fraction (stated as an extrapolation);
- lr: LogisticRegressionHead(loss="bce"), one L-BFGS iteration (full batch: every iteration reads all rows).
Setup (reading the view, the vocabulary, the soft scores) is timed apart. Targets (the VQA benchmarks issue): a
compact-MLP epoch on itc in <= 3 minutes and peak memory <= 6 GiB on 2 cores.
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

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)

SHAPES = {"questions": 443_757, "images": 82_783, "answers": 3_129}
CONFIGS = [("mlp-compact", "itc"), ("mlp-compact", "pooled"), ("lr", "itc"), ("lr", "pooled"),
           ("mlp-paper", "itc"), ("mlp-paper", "pooled")]


def write_cache(path: Path, scale: float, seed: int = 0) -> dict:
    """The synthetic VQAv2-train cache (features random, answers Zipf-distributed with VQA-like agreement)."""
    from featcache.cache.file import CacheWriter

    rng = np.random.default_rng(seed)
    n_q, n_img = int(SHAPES["questions"] * scale), int(SHAPES["images"] * scale)
    vocab = np.array([f"answer{i}" for i in range(SHAPES["answers"])], dtype=object)
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    main = rng.choice(len(vocab), size=n_q, p=zipf / zipf.sum())
    other = rng.choice(len(vocab), size=(n_q, 2), p=zipf / zipf.sum())
    refs = []
    for m, (o1, o2), k in zip(main, other, rng.integers(5, 11, n_q)):  # k of 10 agree with the main answer
        answers = [vocab[m]] * k + [vocab[o1]] * ((10 - k) // 2) + [vocab[o2]] * (10 - k - (10 - k) // 2)
        refs.append(json.dumps(answers))
    attrs = {"model_id": "synthetic", "model_class": "synthetic", "model_fingerprint": f"synthetic-vqav2-{seed}",
             "compute_dtype": "float16", "has_text": True, "preprocessing": "synthetic", "created": "",
             "dataset_name": "synthetic-vqav2-train", "dataset_source": "benchmarks/vqav2_heads.py"}
    strings = ("question_id", "references", "answer_type", "question_type")
    writer = CacheWriter(path, attrs, n_img, n_q, {"query": (32, 768), "query_proj": (32, 256)},
                         {"text_proj": (256,), "text_cls": (768,)}, "float16", question_strings=strings)
    slab = 2048
    for start in range(0, n_img, slab):
        n = min(slab, n_img - start)
        proj = rng.standard_normal((n, 32, 256), dtype=np.float32)
        writer.write("images", start, {"key": [f"img{start + i}" for i in range(n)], "error": [""] * n,
                                       "query": rng.standard_normal((n, 32, 768), dtype=np.float32).astype(np.float16),
                                       "query_proj": (proj / np.linalg.norm(proj, axis=-1, keepdims=True)).astype(np.float16)})
    for start in range(0, n_q, 65536):
        n = min(65536, n_q - start)
        tp = rng.standard_normal((n, 256), dtype=np.float32)
        writer.write("questions", start, {
            "text": [f"question {i % 20000}?" for i in range(start, start + n)], "answer": list(vocab[main[start:start + n]]),
            "split": ["train"] * n, "error": [""] * n, "image_row": rng.integers(0, n_img, n), "truncated": np.zeros(n, np.uint8),
            "text_proj": (tp / np.linalg.norm(tp, axis=1, keepdims=True)).astype(np.float16),
            "text_cls": rng.standard_normal((n, 768), dtype=np.float32).astype(np.float16),
            "question_id": [str(i) for i in range(start, start + n)], "references": refs[start:start + n],
            "answer_type": ["other"] * n, "question_type": ["what is"] * n})
    writer.close()
    return {"questions": n_q, "images": n_img, "answers_in_vocabulary": SHAPES["answers"],
            "file_gib": round(path.stat().st_size / 2**30, 2)}


def one(cache_path: str, config: str, view: str, paper_fraction: float, threads: int) -> dict:
    """One head on one view in this process: setup seconds, fit seconds, peak RSS."""
    import torch

    from featcache import open_cache
    from heads.linear import LogisticRegressionHead
    from heads.mlp import MLPHead
    from heads.benchmarks import soft_targets, split_references, training_set

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with open_cache(cache_path) as cache:
        X, y = cache.view(view, "train")
        refs = split_references(cache, "train")
    kept = training_set(y, 9)
    X, y, soft = X[kept.rows], kept.labels, soft_targets(refs.take(kept.rows))
    fraction = 1.0
    if config == "mlp-paper" and paper_fraction < 1:
        images = np.unique(X.image_row)
        chosen = np.isin(X.image_row, images[: max(1, int(len(images) * paper_fraction))])
        fraction = float(chosen.mean())
        X, y, soft = X[np.flatnonzero(chosen)], y[chosen], soft[chosen]
    setup = time.perf_counter() - t0
    device = os.environ.get("FEATCACHE_BENCH_DEVICE", "cpu")  # --device, passed to the child
    head = {"mlp-compact": lambda: MLPHead.compact(loss="bce", max_epochs=1, validation_fraction=0.0, device=device),
            "mlp-paper": lambda: MLPHead.reference(loss="bce", max_epochs=1, validation_fraction=0.0, device=device),
            "lr": lambda: LogisticRegressionHead(loss="bce", max_iter=1)}[config]()
    t1 = time.perf_counter()
    head.fit(X, y, soft_targets=soft)
    fit = time.perf_counter() - t1
    row = {"head": config, "view": view, "rows": len(y), "classes": len(head.classes_), "setup_s": round(setup, 1),
           "fit_s": round(fit, 1), "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if config == "mlp-paper":
        row.update(epoch_fraction=round(fraction, 4), epoch_s_extrapolated=round(fit / fraction, 1))
    elif config == "lr":
        row.update(unit="one L-BFGS iteration (full batch)")
    else:
        row.update(unit="one epoch")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="Fraction of VQAv2 train's sizes (1.0: the real ones).")
    ap.add_argument("--paper-fraction", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cuda: the MLPs on the GPU (logistic regression stays on CPU)")
    ap.add_argument("--configs", default=",".join(f"{h}:{v}" for h, v in CONFIGS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # child: CACHE CONFIG VIEW
    args = ap.parse_args()
    os.environ["FEATCACHE_BENCH_DEVICE"] = args.device
    if args.one:
        print(json.dumps(one(*args.one, args.paper_fraction, args.threads)))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("FEATCACHE_BENCH_TMP")) as tmp:
        path = Path(tmp) / "vqav2-synthetic.h5"
        t = time.perf_counter()
        shapes = write_cache(path, args.scale)
        print(f"synthetic VQAv2-train cache: {shapes} in {time.perf_counter() - t:.0f} s")
        rows = []
        for spec in args.configs.split(","):
            config, view = spec.split(":")
            child = subprocess.run([sys.executable, __file__, "--one", str(path), config, view, "--paper-fraction",
                                    str(args.paper_fraction), "--threads", str(args.threads)],
                                   capture_output=True, text=True)
            if child.returncode != 0:
                rows.append({"head": config, "view": view, "error": child.stderr.strip().splitlines()[-1:]})
                print(f"{config} {view}: FAILED {rows[-1]['error']}")
                continue
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]))
    result = {"machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "threads": args.threads, "cache": shapes,
              "rows": rows, "command": "python benchmarks/vqav2_heads.py " + " ".join(sys.argv[1:])}
    name = "vqav2_heads" + ("" if args.scale == 1.0 else f"_scale{args.scale}") + \
        ("" if args.device == "cpu" else f"_{args.device.split(':')[0]}")
    result["device"] = args.device
    save_result(result, args.out, f"{name}.json")


if __name__ == "__main__":
    main()
