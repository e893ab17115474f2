"""Where the images come from, at what cost: decode + resize throughput per core from files on disk, from
parquet (hf:, embedded bytes) and from WebDataset tars (wds:, read at member offsets), on the same images;
and the time and peak memory of planning the shards of 1M and 10M keys (simulated tar listings).

    python benchmarks/sources.py [--images 400] [--plan 1000000,10000000]

Single process, so the decode figures are per core. Targets (the data-sources issue): reading from a tar
or parquet no slower per core than from files; planning 10M keys under 2 GiB.
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
from PIL import Image

from _results import save_result  # noqa: E402  (benchmarks/, first on sys.path)


def photos(folder: Path, n: int, size=(640, 480)) -> list[Path]:
    """Photo-like JPEGs (smooth colour fields plus fine noise), quality 90, in class folders."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        arr = np.clip(np.asarray(base, dtype=np.float64) + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255)
        path = folder / "train" / f"class{i % 4}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def rate(ds, pre, seconds: float = 4.0) -> float:
    """Images per second of `dataset.open_image` + resize to the model's uint8 input, in this process."""
    keys = ds.images()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < len(keys):
        pre.resize_uint8(ds.open_image(keys[n % len(keys)], pre.draft_size))
        n += 1
    return n / (time.perf_counter() - t0)


def decode_rates(n: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    from featcache.datasets import load_dataset
    from featcache.images import ImagePreprocessor

    pre = ImagePreprocessor(BlipImageProcessorPil(size={"height": 224, "width": 224}))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("HF_DATASETS_CACHE", str(tmp / "hf-cache"))
        paths = photos(tmp / "folder", n)
        (tmp / "pq" / "data").mkdir(parents=True)
        pq.write_table(pa.table({"image": [{"bytes": p.read_bytes(), "path": p.name} for p in paths],
                                 "label": [p.parent.name for p in paths]}),
                       tmp / "pq" / "data" / "train-00000-of-00001.parquet", row_group_size=64)
        (tmp / "tars").mkdir()
        for shard in range(4):
            with wds.TarWriter(str(tmp / "tars" / f"{shard:05d}.tar")) as w:
                for p in paths[shard::4]:
                    w.write({"__key__": p.stem, "jpg": p.read_bytes(), "cls": p.parent.name[-1]})
        sources = {"files (folder:)": f"folder:{tmp / 'folder'}", "parquet (hf:)": f"hf:{tmp / 'pq'}",
                   "tars (wds:)": f"wds:{tmp / 'tars'}/{{00000..00003}}.tar"}
        out = {}
        for name, source in sources.items():
            ds = load_dataset(source)
            rate(ds, pre, 0.5)  # warm the page cache and the readers
            out[name] = round(rate(ds, pre), 1)
            print(f"{name:<18} {out[name]:8.1f} images/s per core (640x480 JPEG -> 224 px)")
        return out


def plan(n: int) -> dict:
    """Plan the shards of n simulated tar-listing keys (10,000 per tar) through the real path: the columns
    `load_webdataset` collects, its TarLocators mapping, the run's lazy image sources; seconds and peak RSS."""
    from array import array

    from featcache.datasets.base import VQADataset
    from featcache.datasets.wds import TarImages, TarLocators
    from featcache.extract.plan import plan_shards
    from featcache.extract.run import _ImageSources

    t0 = time.perf_counter()
    per_tar = 10_000
    tars = [f"/data/shards/{t:05d}.tar" for t in range((n + per_tar - 1) // per_tar)]
    keys, tar_ids, offsets, sizes, members, ends = [], array("i"), array("q"), array("q"), bytearray(), array("q")
    for i in range(n):
        t, j = divmod(i, per_tar)
        keys.append(f"{t:05d}/{j:08d}")
        tar_ids.append(t)
        offsets.append(512 * (j + 1))
        sizes.append(40_000)
        members += f"{j:08d}.jpg".encode()
        ends.append(len(members))
    dataset = VQADataset("bench", "simulated", [], TarLocators(tars, keys, tar_ids, offsets, sizes, members, ends),
                         reader=TarImages())
    del keys
    listed = time.perf_counter()
    shards = plan_shards(list(dataset.image_paths), _ImageSources(dataset), 1024)
    done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"keys": n, "shards": len(shards), "listing_s": round(listed - t0, 2), "plan_s": round(done - listed, 2),
            "peak_rss_gib": round(peak / 2**30, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--plan", default="1000000,10000000", help="Comma-separated key counts to plan.")
    parser.add_argument("--plan-one", type=int, help=argparse.SUPPRESS)  # the child process of one planning run
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if args.plan_one:
        print(json.dumps(plan(args.plan_one)))
        return
    result = {"machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "decode_images_per_s_per_core":
              decode_rates(args.images), "planning": []}
    for n in (int(x) for x in args.plan.split(",") if x):
        child = subprocess.run([sys.executable, __file__, "--plan-one", str(n)], capture_output=True, text=True,
                               check=True)
        row = json.loads(child.stdout.strip().splitlines()[-1])
        result["planning"].append(row)
        print(f"plan {n:>10,} keys: {row['shards']:,} shards, listing {row['listing_s']} s, planning {row['plan_s']} s, "
              f"peak RSS {row['peak_rss_gib']} GiB (the whole process: keys, sources, plan)")
    result["command"] = "python benchmarks/sources.py " + " ".join(sys.argv[1:])
    save_result(result, args.out, "sources.json")


if __name__ == "__main__":
    main()
