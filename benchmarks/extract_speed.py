"""Extraction throughput: the whole pipeline (decode, preprocess, transfer, forward, text pass, write) against
the bare forward on the same images, as a ratio measured in one run (target: pipeline >= 90% of bare), with
the time of each stage measured alone so the bottleneck shows, and the bare forward's speed and peak GPU
memory for each batch size.

    python benchmarks/extract_speed.py --size tiny --images 512
    python benchmarks/extract_speed.py --size real --images 16 --batch-sizes 4 --workers 0      # CPU: slow
    python benchmarks/extract_speed.py --size real --images 4096 --batch-sizes 32,64,128,256 --device cuda
    python benchmarks/extract_speed.py --size real --images 4096 --batch-sizes 256,512 --device cuda --cuda-graphs

Weights are random (no hub here); speed and memory do not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from featcache.cache import CacheWriter
from featcache.datasets import load_dataset
from featcache.extract import Compute, extract
from featcache.extract.pipeline import auto_workers, save_atomic
from featcache.models.random_init import random_backbone

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)

VIT_G_GFLOP_PER_IMAGE = 520.0  # forward of ViT-g/14 at 224 px, the figure the H100 bound uses
H100_BOUND_IMAGES_PER_S = 1500.0  # ~800 TFLOP/s dense fp16 / 520 GFLOP


def timed(fn, cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-sizes", default="32", help="comma-separated; the pipeline runs with the last")
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="compute dtype (default: float16 on GPU, float32 on CPU)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--cuda-graphs", action="store_true", help="the image forward replayed as a CUDA graph (bare "
                    "forward and pipeline), with its largest difference from the eager forward")
    ap.add_argument("--aliases", type=int, default=1,
                    help="the pipeline runs over this many copies of each image (under distinct keys), so its "
                         "fixed costs (worker start, text pass, merge) weigh as in a longer run")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    bb = random_backbone(args.size, device=args.device, dtype=args.dtype)
    if args.compile:
        bb.compile_vision()
    cuda = bb.device.type == "cuda"
    workers = auto_workers(bb.device) if args.workers == "auto" else int(args.workers)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    ds = load_dataset("easy-vqa")
    keys = ds.images()[: args.images]
    keep = set(keys)
    ds.questions = [q for q in ds.questions if q.image in keep]
    n = len(keys)
    pre = bb.preprocessor

    # -- stage: decode + resize to uint8, in this process (= per decode core) -------------------------
    t = time.perf_counter()
    pixels = np.stack([pre.resize_uint8(ds.open_image(k)) for k in keys])
    decode_s = time.perf_counter() - t

    # -- bare forward per batch size: uint8 already on the device, results left there ------------------
    per_batch_size = []
    graphs = {}
    for b in sizes:
        on_device = [torch.from_numpy(pixels[i:i + b]).to(bb.device) for i in range(0, n, b)]
        if args.cuda_graphs:  # captured for this batch size; compared with the eager forward on one batch
            bb.graphs = None
            eager = bb.encode_images(on_device[0], to_numpy=False)
            state = bb.use_cuda_graphs(b, False)
            replayed = bb.encode_images(on_device[0], to_numpy=False)
            graphs[b] = {"state": state, "max_abs_diff_vs_eager": {
                k: float((replayed[k] - eager[k]).abs().max()) for k in eager}}
            print(json.dumps({"cuda_graphs": {b: graphs[b]}}), flush=True)
        bb.encode_images(on_device[0], to_numpy=False)  # warm-up (kernels, allocator, compile)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        outs = []
        forward_s = timed(lambda: outs.extend(bb.encode_images(x, to_numpy=False) for x in on_device), cuda)
        per_batch_size.append({
            "batch_size": b, "bare_forward_s": round(forward_s, 3), "bare_images_per_s": round(n / forward_s, 2),
            "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None})
        print(json.dumps(per_batch_size[-1]), flush=True)
    b = sizes[-1]
    bare_s = per_batch_size[-1]["bare_forward_s"]

    # -- the forward split: ViT alone, Q-Former alone (as featcache runs it, and under fp16 autocast) -----
    split = {"qformer_matmul": bb.provenance()["qformer_matmul"]}
    with torch.inference_mode():
        embeds = [bb.vision_states(x) for x in on_device[:2]]
        split["vit_s"] = round(timed(lambda: [bb.vision_states(x) for x in on_device], cuda), 3)
        split["qformer_s"] = round(timed(lambda: [bb.queries(embeds[i % 2]) for i in range(len(on_device))], cuda), 3)
        if cuda:
            with torch.autocast("cuda", dtype=bb.compute_dtype):
                bb.queries(embeds[0])
                split["qformer_autocast_s"] = round(timed(lambda: [bb.queries(embeds[i % 2]) for i in range(len(on_device))], cuda), 3)
        embeds = None  # free the device memory
    print(json.dumps({"forward_split": split}), flush=True)

    # -- the other stages alone, at the pipeline's batch size ------------------------------------------
    host = [torch.from_numpy(pixels[i:i + b]) for i in range(0, n, b)]
    if cuda:
        host = [x.pin_memory() for x in host]
    h2d_s = timed(lambda: [x.to(bb.device, non_blocking=True) for x in host], cuda)
    d2h_s = timed(lambda: [{k: v.cpu().numpy() for k, v in o.items()} for o in outs], cuda)
    feats = {k: np.concatenate([o[k].cpu().numpy() for o in outs]).astype(np.float16) for k in outs[0]}
    with tempfile.TemporaryDirectory() as tmp:
        def write():
            save_atomic(Path(tmp) / "shard.npz", **feats)
            w = CacheWriter(Path(tmp) / "w.h5", {}, n, 0, {k: v.shape[1:] for k, v in feats.items()}, {})
            w.write("images", 0, feats)
            w.close()
        write_s = timed(write, False)

        # -- the whole pipeline ----------------------------------------------------------------------
        if args.aliases > 1:  # the same files under more keys: more images to encode, same decode cost each
            ds.image_paths.update({f"{k}~{r}": ds.image_paths[k] for k in keys for r in range(1, args.aliases)})
            ds.questions = ds.questions + [replace(q, image=f"{q.image}~{r}") for r in range(1, args.aliases)
                                           for q in ds.questions]
        t = time.perf_counter()
        report = extract(ds, Path(tmp) / "bench.h5", model=bb, progress=False,
                         compute=Compute(batch_size=b, workers=workers, cuda_graphs=args.cuda_graphs))
        if cuda:
            torch.cuda.synchronize()
        pipeline_s = time.perf_counter() - t
        n_pipe = n * args.aliases
        size = (Path(tmp) / "bench.h5").stat().st_size
    # the bare forward again, after the pipeline: a drop shows the device slowing under sustained load
    bare_after_s = timed(lambda: [bb.encode_images(x, to_numpy=False) for x in on_device], cuda)
    result = {
        "benchmark": "extract_speed", "size": args.size, "device": str(bb.device),
        "gpu": torch.cuda.get_device_name() if cuda else None, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(), "machine": platform.platform(), "compute_dtype": str(bb.compute_dtype),
        "compiled": args.compile, "attn_implementation": bb.provenance()["attn_implementation"],
        "images": n, "questions": len(ds.questions), "distinct_texts": report.n_texts, "batch_size": b,
        "workers": workers, "per_batch_size": per_batch_size,
        "stages_s": {"decode_resize_1_core": round(decode_s, 3), "h2d": round(h2d_s, 4), "forward": bare_s,
                     "d2h": round(d2h_s, 4), "write": round(write_s, 3)},
        "decode_images_per_s_per_core": round(n / decode_s, 1),
        "forward_split_s": split, "bare_images_per_s_after_pipeline": round(n / bare_after_s, 2), "pipeline_images": n_pipe, "pipeline_stage_s": report.stage_seconds,
        "pipeline_s": round(pipeline_s, 3), "bare_images_per_s": round(n / bare_s, 2),
        "pipeline_images_per_s": round(n_pipe / pipeline_s, 2),
        "pipeline_over_bare": round((n_pipe / pipeline_s) / (n / bare_s), 3),
        "images_stage_over_bare": round((n_pipe / report.stage_seconds["images"]) / (n / bare_s), 3),
        "pipeline_writer": "writer process, final file written as shards finish (featcache.extract.writer)",
        "cuda_graphs": graphs or None, "pipeline_cuda_graphs": report.cuda_graphs or None,
        "cache_bytes": size, "command": "python " + " ".join(sys.argv),
    }
    if args.size == "real":
        result["bare_over_h100_bound"] = round(n / bare_s / H100_BOUND_IMAGES_PER_S, 3)
        result["pipeline_over_h100_bound"] = round(n_pipe / pipeline_s / H100_BOUND_IMAGES_PER_S, 3)
        result["bare_vit_tflops"] = round(VIT_G_GFLOP_PER_IMAGE * n / bare_s / 1e3, 2)
    print(json.dumps(result, indent=1))
    tag = f"{args.size}_{bb.device.type}_w{workers}" + ("_compiled" if args.compile else "") \
        + ("_graphs" if args.cuda_graphs else "") \
        + (f"_x{args.aliases}" if args.aliases > 1 else "")
    save_result(result, args.out, f"extract_speed_{tag}.json")


if __name__ == "__main__":
    main()
