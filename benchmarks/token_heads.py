"""The five heads side by side, in one run on the same caches: accuracy, fit and predict seconds; the kNN search at
100k x 100k; the attention probe's epoch against the MLP's on `full`.

    python benchmarks/token_heads.py [--parts accuracy,knn,epoch] [--vqav2-scale 0.1] [--out benchmarks/results]

- accuracy: lr, mlp, lgbm, knn (k=20) and attnpool, each with its defaults, on two structured synthetic caches:
  Easy-VQA-shaped (featcache.cache.synthetic: 38,575 / 9,673 questions, 13 answers; plain accuracy on its test
  split) and VQAv2-shaped (benchmarks/vqav2_synthetic.py at --vqav2-scale; the VQA protocol: answers seen >= 9
  times, soft scores; held-out VQA accuracy on its image-disjoint split "val"), on the views pooled and itc
  (attnpool on itc: it needs tokens). LightGBM is left out where the sweep leaves it out (heads/sweep_fit.py).
  DAQUAR is measured only with a real BLIP-2 checkpoint (none on a machine without the hub: random-weight
  features would give numbers that mean nothing).
- knn: KNNHead.predict_proba of 100,000 queries against 100,000 training rows of 256-d clustered features, with the
  torch search and with FAISS (IndexFlatIP), against the bound 2 x 100k x 100k x 256 FLOPs at this machine's fp32
  matrix-product rate; and the agreement of the two backends. answers.
- epoch: one epoch of AttentionPoolHead() and of MLPHead() (512 hidden) on the Easy-VQA-shaped `full` view
  (32 x 768 query states + 768-d text CLS).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)
from vqav2_heads import machine  # noqa: E402

HEADS = ("lr", "mlp", "lgbm", "knn", "attnpool")


def _peak_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def accuracy_rows(cache_path: Path, name: str, vqa: bool, out: dict, save) -> None:
    from featcache import open_cache
    from heads.benchmarks import soft_targets, split_references, training_set
    from heads.grids import fits_view, make_head
    from heads.sweep_fit import skip_reason
    from heads.targets import SoftTargets

    eval_split = "val" if vqa else "test"
    for view in ("pooled", "itc"):
        with open_cache(cache_path) as cache:
            X, y = cache.view(view, "train")
            Xe, ye = cache.view(view, eval_split)
            refs, refs_eval = (split_references(cache, "train"), split_references(cache, eval_split)) if vqa else (None,
                                                                                                                 None)
        soft = None
        if vqa:
            kept = training_set(y, 9)
            X, y, soft = X[kept.rows], kept.labels, soft_targets(refs.take(kept.rows))
        for kind in HEADS:
            if not fits_view(kind, view):
                continue
            row = {"cache": name, "view": view, "head": kind, "rows": len(y)}
            skip = skip_reason(kind, [{}], X, y, len(set(y)))
            if skip:
                out["accuracy"].append({**row, "skipped": skip})
                save()
                continue
            head = make_head(kind, {"k": 20} if kind == "knn" else {})
            t = time.perf_counter()
            head.fit(X, y, soft_targets=soft) if soft is not None and kind != "lgbm" else head.fit(X, y)
            row["fit_s"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            proba = head.predict_proba(Xe)
            row["predict_s"] = round(time.perf_counter() - t, 1)
            pred = np.argmax(proba, axis=1)
            if vqa:
                targets = SoftTargets.build(soft_targets(refs_eval), np.asarray(head.classes_), np.zeros(len(Xe), int))
                row["heldout_vqa_accuracy"] = round(100 * float(targets.score_of(np.arange(len(Xe)), pred).mean()), 2)
            else:
                row["accuracy"] = round(100 * float(np.mean(np.asarray(head.classes_)[pred] == np.asarray(ye))), 2)
            if hasattr(head, "history_") and head.history_:
                row["epochs"] = len(head.history_)
            row["peak_rss_gib"] = _peak_gib()
            print(row, flush=True)
            out["accuracy"].append(row)
            save()


def knn_rows(out: dict, save, n: int = 100_000, dim: int = 256) -> None:
    from heads.knn import KNNHead

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    labels = rng.integers(0, 1000, 2 * n)
    X = centres[labels] + 2.0 * rng.normal(size=(2 * n, dim)).astype(np.float32)
    train, test = X[:n], X[n:]
    results = {}
    for backend in ("torch", "faiss"):
        head = KNNHead(backend=backend).fit(train, labels[:n])
        t = time.perf_counter()
        proba = head.predict_proba(test)
        seconds = time.perf_counter() - t
        results[backend] = np.argmax(proba, axis=1)
        row = {"backend": backend, "train_rows": n, "queries": n, "dim": dim, "k": 20, "predict_s": round(seconds, 1),
               "accuracy": round(100 * float(np.mean(head.classes_[results[backend]] == labels[n:])), 2),
               "peak_rss_gib": _peak_gib()}
        row["bound_s"] = round(2 * n * n * dim / (out["machine"]["fp32_gflops"] * 1e9), 1)
        row["x_bound"] = round(seconds / row["bound_s"], 2)
        print(row, flush=True)
        out["knn"].append(row)
        save()
    out["knn_backends_agree"] = round(float(np.mean(results["torch"] == results["faiss"])), 6)
    save()


def epoch_rows(cache_path: Path, out: dict, save) -> None:
    from featcache import open_cache
    from heads import AttentionPoolHead, MLPHead

    with open_cache(cache_path) as cache:
        X, y = cache.view("full", "train")
    for name, head in (("attnpool", AttentionPoolHead(max_epochs=1, validation_fraction=0.0)),
                       ("mlp", MLPHead(max_epochs=1, validation_fraction=0.0))):
        t = time.perf_counter()
        head.fit(X, y)
        row = {"head": name, "view": "full", "rows": len(y), "epoch_s": round(time.perf_counter() - t, 1),
               "parameters": sum(p.numel() for p in head.net_.parameters()), "peak_rss_gib": _peak_gib()}
        print(row, flush=True)
        out["epoch"].append(row)
        save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="accuracy,knn,epoch")
    ap.add_argument("--vqav2-scale", type=float, default=0.1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    parts = args.parts.split(",")
    out = {"command": "python benchmarks/token_heads.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "accuracy": [], "knn": [], "epoch": [],
           "daquar": "not measured: no BLIP-2 checkpoint on this machine (no hub); features of a tiny random model "
                     "would give accuracies that mean nothing"}
    print(out["machine"], flush=True)
    earlier = Path(args.out) / "token_heads.json"
    if earlier.exists():  # a run of some parts keeps the other parts' figures (each part names its machine)
        prior = json.loads(earlier.read_text())
        for part in ("accuracy", "knn", "epoch"):
            if part not in parts:
                out[part] = prior.get(part, [])
                out.setdefault("earlier_parts", {})[part] = {"command": prior.get("command"),
                                                             "machine": prior.get("machine")}
        if "accuracy" not in parts and "vqav2_cache" in prior:
            out["vqav2_cache"] = prior["vqav2_cache"]
    save = lambda: save_result(out, args.out, "token_heads.json")  # noqa: E731
    from featcache.cache.synthetic import write_synthetic_cache
    from vqav2_synthetic import write_cache

    with tempfile.TemporaryDirectory() as tmp:
        easy = write_synthetic_cache(Path(tmp) / "easy.h5")
        if "accuracy" in parts:
            accuracy_rows(easy, "easy-vqa-shaped", False, out, save)
            vqav2 = Path(tmp) / "vqav2.h5"
            out["vqav2_cache"] = {"scale": args.vqav2_scale, **write_cache(vqav2, args.vqav2_scale)}
            accuracy_rows(vqav2, f"vqav2-shaped x{args.vqav2_scale}", True, out, save)
        if "epoch" in parts:
            epoch_rows(easy, out, save)
    if "knn" in parts:
        knn_rows(out, save)


if __name__ == "__main__":
    main()
