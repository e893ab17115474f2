"""Heads at VQAv2's size on a laptop, against this machine's own limit, measured in one run.

    python benchmarks/vqav2_heads.py [--scale 1.0] [--configs lr:pooled,lr:itc,...] [--cache PATH] [--batch-size N]

On the structured synthetic VQAv2-train cache of benchmarks/vqav2_synthetic.py (written to a temporary folder, or
reused from --cache), each configuration runs in its own process (so each peak memory is its own), with the
project's defaults and the VQA protocol (vocabulary of answers seen >= 9 times, soft-score BCE):
- lr: LogisticRegressionHead() to its stopping rule (early stopping on image-disjoint validation rows);
- mlp-compact: MLPHead.compact() to its early stop (or --max-epochs);
- mlp-paper: MLPHead.reference(), one epoch;
- ncm: the nearest-class-mean classifier (cosine to each answer's mean standardised feature), the simple baseline.
Each row gives the setup seconds (view, vocabulary, soft scores), the fit seconds, the seconds per epoch, the
held-out VQA accuracy on split "val" (images no training question uses), and the peak memory.

The bound: this machine's matrix-product rate (fp32, and bf16 where native) and memory bandwidth are measured
first; each configuration's epoch is counted in multiply-add FLOPs (forward and weight gradients; the first layer
once per image) and in bytes (the passes over the rows x answers logits of the loss and its gradient, and the
optimiser's passes over the weights per step). bound = FLOPs / rate + bytes / bandwidth, the time an epoch
cannot beat; the target is an epoch within 2x of it.
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

CONFIGS = ["lr:pooled", "lr:itc", "ncm:pooled", "ncm:itc", "mlp-paper:itc", "mlp-compact:pooled"]
LOGIT_PASSES = 8
"""Passes over the (rows x answers) float32 logits per epoch: written by the product, the gathered image part added
(read + write), the loss read, the gradient made in place (read + write), read by the image gradient's sum and by
the weight gradients' products."""


def machine() -> dict:
    """This machine's matrix-product rates and memory bandwidth, measured now."""
    import torch

    from heads.precision import native_bf16

    def rate(dtype) -> float:
        a, b = torch.randn(4096, 1024).to(dtype), torch.randn(1024, 3129).to(dtype)
        a @ b
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        return 5 * 2 * 4096 * 1024 * 3129 / (time.perf_counter() - t)

    a, b, c = (torch.randn(64 * 2**20) for _ in range(3))
    torch.add(a, b, out=c)
    t = time.perf_counter()
    for _ in range(5):
        torch.add(a, b, out=c)
    bandwidth = 5 * 3 * a.numel() * 4 / (time.perf_counter() - t)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    out = {"cpu": cpu, "cores": os.cpu_count(), "native_bf16": native_bf16(), "torch_threads": torch.get_num_threads(),
           "fp32_gflops": round(rate(torch.float32) / 1e9, 1), "bandwidth_gbs": round(bandwidth / 1e9, 1)}
    out["bf16_gflops"] = round(rate(torch.bfloat16) / 1e9, 1)
    return out


def epoch_cost(config: str, n_images: int, n_rows: int, widths: tuple[int, int], classes: int, batch: int) -> dict:
    """FLOPs and bytes of one training epoch (see the module docstring)."""
    d_img, d_q = widths
    if config == "lr":
        hidden, first = [], classes
    else:
        from heads.mlp import PAPER_HIDDEN_SIZES

        hidden = list(PAPER_HIDDEN_SIZES) if config == "mlp-paper" else [512]
        first = hidden[0]
    flops = 2 * 2 * (n_images * d_img + n_rows * d_q) * first  # forward + weight gradient, image part per image
    sizes = hidden + [classes]
    flops += sum(2 * 3 * n_rows * a * b for a, b in zip(sizes[:-1], sizes[1:]))  # forward + input and weight grads
    params = (d_img + d_q) * first + sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    steps = -(-n_rows // batch)
    bytes_ = LOGIT_PASSES * n_rows * classes * 4 + steps * params * 4 * 7  # AdamW: 4 reads + 3 writes a weight
    return {"flops": flops, "bytes": bytes_, "steps": steps}


def one(cache_path: str, config: str, view: str, max_epochs: int | None,
        batch_size: int | None = None) -> dict:
    """One configuration in this process."""
    from featcache import open_cache
    from heads.benchmarks import read_splits, soft_targets, training_set
    from heads.linear import LogisticRegressionHead
    from heads.mlp import MLPHead
    from heads.precision import resolve_precision
    from heads.targets import SoftTargets

    t0 = time.perf_counter()
    with open_cache(cache_path) as cache:  # (as `featcache train` reads it: heads.sweep.fit_head)
        data = read_splits(cache, view, ["train", "val"])
    ((X, y), (Xv, _)), (_, refs_val) = data.views, data.references
    kept = training_set(y, 9)
    X, y, soft = X[kept.rows], kept.labels, data.soft[kept.rows]
    setup = time.perf_counter() - t0
    extra = {} if max_epochs is None else {"max_epochs": max_epochs}
    if batch_size is not None:
        extra["batch_size"] = batch_size
    device = os.environ.get("FEATCACHE_BENCH_DEVICE", "cpu")  # --device, passed to the child
    if device != "cpu":
        extra["device"] = device
    if config == "ncm":
        head = NearestClassMean()
    else:
        head = {"lr": lambda: LogisticRegressionHead(**extra),
                "mlp-compact": lambda: MLPHead.compact(verbose=True, **extra),
                "mlp-paper": lambda: MLPHead.reference(max_epochs=1, validation_fraction=0.0, **{
                    k: v for k, v in extra.items() if k in ("device", "batch_size")})}[config]()
    t1 = time.perf_counter()
    head.fit(X, y, soft_targets=soft)
    fit = time.perf_counter() - t1
    classes = np.asarray(head.classes_)
    val_soft = SoftTargets.build(soft_targets(refs_val), classes, np.zeros(len(Xv), dtype=np.int64))
    predicted = np.argmax(head.predict_proba(Xv), axis=1)
    heldout = float(val_soft.score_of(np.arange(len(Xv)), predicted).mean())
    # (a held-out question whose answers are all outside the vocabulary scores 0, as the VQA evaluator scores it)
    row = {"head": config, "view": view, "rows": len(y), "classes": len(classes), "setup_s": round(setup, 1),
           "fit_s": round(fit, 1), "heldout_vqa_accuracy": round(100 * heldout, 2),
           "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if config != "ncm" and getattr(head, "solver_", "minibatch") == "minibatch":
        epochs = len(head.history_) or 1
        row.update(epochs=epochs, epoch_s=round(fit / epochs, 1), solver="minibatch",
                   precision=resolve_precision(head.precision, head.device),
                   best_validation=head.best_validation_score_,
                   validation_history=[None if h["val_accuracy"] is None else round(h["val_accuracy"], 4)
                                       for h in head.history_],
                   cost=epoch_cost(config, len(np.unique(X.image_row)), len(y),
                                   (X.image_part.shape[1], X.shape[1] - X.image_part.shape[1]), len(classes),
                                   head.batch_size))
    return row


class NearestClassMean:
    """Cosine similarity to each class's mean standardised feature: no hyperparameter, one pass."""

    def fit(self, X, y, soft_targets=None):
        import torch

        from heads.factorized import PREDICT_BLOCK_IMAGES, Parts, Standardizer, image_blocks

        self.classes_, y_idx = np.unique(np.asarray(y, dtype=object), return_inverse=True)
        parts = Parts.from_input(X, X.image_part.shape[1], X.image_tokens)
        self.scaler_ = Standardizer().fit(parts)
        parts = self.scaler_.transform(parts)
        sums = torch.zeros(len(self.classes_), X.shape[1], dtype=torch.float64)
        for idx, block in image_blocks(parts, PREDICT_BLOCK_IMAGES):  # (4,096 images: 22k rows x 8,448 float64)
            rows = torch.cat([block.image[block.row], block.question], 1).double()
            sums.index_add_(0, torch.from_numpy(y_idx[idx]), rows)
        self.means_ = torch.nn.functional.normalize(sums.float(), dim=1)
        self.history_, self.best_validation_score_, self.precision, self.device = [], None, "fp32", "cpu"
        return self

    def predict_proba(self, X):
        import torch

        from heads.factorized import PREDICT_BLOCK_IMAGES, Parts, image_blocks

        parts = self.scaler_.transform(Parts.from_input(X, X.image_part.shape[1], X.image_tokens))
        out = np.zeros((len(X), len(self.classes_)), dtype=np.float32)
        for idx, block in image_blocks(parts, PREDICT_BLOCK_IMAGES):
            rows = torch.nn.functional.normalize(torch.cat([block.image[block.row], block.question], 1), dim=1)
            out[idx] = (rows @ self.means_.T).numpy()
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="Fraction of VQAv2 train's sizes (1.0: the real ones).")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--max-epochs", type=int, default=None, help="Cap every head's epochs (default: its own).")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="Rows per step of every torch head (default: its own; the bound counts the steps).")
    ap.add_argument("--cache", default=None, help="Reuse (or write once to) this synthetic cache file.")
    ap.add_argument("--device", default="cpu", help="cuda: the heads train on the GPU (the bound stays the CPU's)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # child: CACHE CONFIG VIEW
    args = ap.parse_args()
    os.environ["FEATCACHE_BENCH_DEVICE"] = args.device
    if args.one:
        print(json.dumps(one(*args.one, args.max_epochs, args.batch_size)))
        return
    bound_machine = machine()
    print(f"machine: {bound_machine}")
    with tempfile.TemporaryDirectory(dir=os.environ.get("FEATCACHE_BENCH_TMP")) as tmp:
        from vqav2_synthetic import write_cache

        path = Path(args.cache) if args.cache else Path(tmp) / "vqav2-synthetic.h5"
        t = time.perf_counter()
        shapes = {"reused": str(path)} if path.exists() else write_cache(path, args.scale)
        print(f"synthetic VQAv2-train cache: {shapes} in {time.perf_counter() - t:.0f} s")
        rows = []
        for spec in args.configs.split(","):
            config, view = spec.split(":")
            cmd = [sys.executable, __file__, "--one", str(path), config, view]
            if args.max_epochs:
                cmd += ["--max-epochs", str(args.max_epochs)]
            if args.batch_size:
                cmd += ["--batch-size", str(args.batch_size)]
            child = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if child.returncode != 0:
                rows.append({"head": config, "view": view, "error": f"exit {child.returncode}"})
                print(f"{config} {view}: FAILED")
                continue
            row = json.loads(child.stdout.strip().splitlines()[-1])
            if "cost" in row:
                rate = bound_machine["bf16_gflops" if row["precision"] == "bf16" else "fp32_gflops"] * 1e9
                bound = row["cost"]["flops"] / rate + row["cost"]["bytes"] / (bound_machine["bandwidth_gbs"] * 1e9)
                row.update(epoch_bound_s=round(bound, 1), epoch_over_bound=round(row["epoch_s"] / bound, 2))
            rows.append(row)
            print(json.dumps(row))
            result = {"machine": {**bound_machine, "platform": platform.platform()}, "cache": shapes, "rows": rows,
                      "command": "python benchmarks/vqav2_heads.py " + " ".join(sys.argv[1:])}
            # saved after every configuration: a run cut short keeps what finished
            save_result(result, args.out, "vqav2_heads" + ("" if args.scale == 1.0 else f"_scale{args.scale}")
                + ("" if args.device == "cpu" else f"_{args.device.split(':')[0]}") + ".json")


if __name__ == "__main__":
    main()
