"""The Ray engine on a local CPU cluster: equal to the local engine, and a worker that dies is replaced."""

import os
from pathlib import Path

import pytest

from featcache.datasets import VQADataset
from featcache.extract import Compute, Features, Spread, Storage, extract
from tests.test_extract import assert_same_file

ray = pytest.importorskip("ray")

FAST = dict(compute=Compute(batch_size=2, workers=0, device="cpu"), storage=Storage(shard_size=2), progress=False)


class DiesOnce(VQADataset):
    """The first worker process to open an image dies (os._exit: no exception, no cleanup)."""

    marker: str = ""

    def open_image(self, key, draft_size=None):
        if self.marker and not Path(self.marker).exists():
            Path(self.marker).touch()
            os._exit(1)
        return super().open_image(key, draft_size)


def test_ray_equals_local_and_shard_index_runs(cluster, small_dataset, tiny_itm, tmp_path):
    from click.testing import CliRunner

    from cli import main

    extract(small_dataset, tmp_path / "local.h5", model=str(tiny_itm), **FAST)
    rep = extract(small_dataset, tmp_path / "ray.h5", model=str(tiny_itm), **FAST,
                  spread=Spread(engine="ray"))
    assert rep.images_computed == len(small_dataset.images())
    assert_same_file(tmp_path / "ray.h5", tmp_path / "local.h5")
    for i in range(2):
        extract(small_dataset, tmp_path / "idx.h5", model=str(tiny_itm), **FAST,
                spread=Spread(shard_index=i, num_shards=2))
    assert CliRunner().invoke(main, ["merge", str(tmp_path / "idx.h5.parts")]).exit_code == 0
    assert_same_file(tmp_path / "idx.h5", tmp_path / "local.h5")


def test_a_worker_that_dies_has_its_shard_retried(cluster, small_dataset, tiny_itm, tmp_path):
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[DiesOnce.__module__])  # workers cannot import the tests
    ds = DiesOnce(small_dataset.name, small_dataset.source, small_dataset.questions, small_dataset.image_paths)
    ds.marker = str(tmp_path / "died")
    rep = extract(ds, tmp_path / "ray.h5", model=str(tiny_itm), **FAST,
                  spread=Spread(engine="ray"))
    assert Path(ds.marker).exists() and rep.images_computed == len(small_dataset.images())
    extract(small_dataset, tmp_path / "local.h5", model=str(tiny_itm), **FAST)
    assert_same_file(tmp_path / "ray.h5", tmp_path / "local.h5")


DRIVER_SCRIPT = """
import os, pickle, signal, sys, threading, time
from pathlib import Path

from featcache.datasets import VQADataset
from featcache.extract import Compute, Spread, Storage, extract


class Slow(VQADataset):  # defined in __main__: Ray ships it to the actors by value
    def open_image(self, key, draft_size=None):
        time.sleep(0.15)
        return super().open_image(key, draft_size)


ds = pickle.load(open(sys.argv[1], "rb"))
ds = Slow(ds.name, ds.source, ds.questions, ds.image_paths)
parts = Path(sys.argv[3] + ".parts")


def kill_after_two_shards():
    while len(list(parts.glob("shard-*.h5"))) < 2:
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGKILL)  # the driver dies: no cleanup, no merge


threading.Thread(target=kill_after_two_shards, daemon=True).start()
extract(ds, sys.argv[3], model=sys.argv[2], compute=Compute(device="cpu", batch_size=2, workers=0),
        spread=Spread(engine="ray", ray_address=sys.argv[4]), storage=Storage(shard_size=2), progress=False)
"""


def test_a_killed_driver_resumes_to_the_same_file(cluster, small_dataset, tiny_itm, tmp_path):
    import pickle
    import signal
    import subprocess
    import sys
    import textwrap

    from tests.test_extract import saved_images

    pickle.dump(small_dataset, open(tmp_path / "ds.pkl", "wb"))
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER_SCRIPT))
    out = tmp_path / "ray.h5"
    address = ray.get_runtime_context().gcs_address  # the driver joins the running cluster, as on a real one
    proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "ds.pkl"), str(tiny_itm),
                           str(out), address], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = saved_images(Path(str(out) + ".parts"))
    assert 2 <= saved < len(small_dataset.images()) and not out.exists()

    rep = extract(small_dataset, out, model=str(tiny_itm), **FAST,
                  spread=Spread(engine="ray"))
    assert rep.resumed and rep.shards_done_before >= 2 and rep.images_computed == len(small_dataset.images()) - saved
    extract(small_dataset, tmp_path / "local.h5", model=str(tiny_itm), **FAST)
    assert_same_file(out, tmp_path / "local.h5")


def test_ray_reads_tar_and_parquet_sources_as_the_local_engine(cluster, tiny_itm, tmp_path):
    import io
    import tarfile

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from featcache.datasets import load_dataset

    blobs = []
    for i in range(6):
        buf = io.BytesIO()
        Image.fromarray(np.full((20, 24, 3), 40 * i, dtype=np.uint8)).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    with tarfile.open(tmp_path / "s.tar", "w") as tf:
        for i, data in enumerate(blobs):
            for name, payload in ((f"k{i}.png", data), (f"k{i}.cls", str(i % 2).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    (tmp_path / "pq" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"image": [{"bytes": b, "path": None} for b in blobs], "label": ["a", "b"] * 3}),
                   tmp_path / "pq" / "data" / "train-00000-of-00001.parquet")
    for source in (f"wds:{tmp_path / 's.tar'}", f"hf:{tmp_path / 'pq'}"):
        ds = load_dataset(source)
        name = source[:3]
        extract(ds, tmp_path / f"{name}-local.h5", model=str(tiny_itm), **FAST)
        extract(ds, tmp_path / f"{name}-ray.h5", model=str(tiny_itm), **FAST,
                spread=Spread(engine="ray"))
        assert_same_file(tmp_path / f"{name}-ray.h5", tmp_path / f"{name}-local.h5")


def test_ray_and_shard_index_runs_compute_question_conditioned_features_as_the_local_engine(cluster, small_dataset,
                                                                                            tiny_itm, tmp_path):
    mm = dict(FAST, features=Features(kind="multimodal"), model=str(tiny_itm))
    extract(small_dataset, tmp_path / "local.h5", **mm)
    extract(small_dataset, tmp_path / "ray.h5", **mm, spread=Spread(engine="ray"))
    assert_same_file(tmp_path / "ray.h5", tmp_path / "local.h5")
    for i in range(2):
        extract(small_dataset, tmp_path / "idx.h5", **mm, spread=Spread(shard_index=i, num_shards=2))
    from featcache.extract import merge_parts

    merge_parts(str(tmp_path / "idx.h5.parts"))
    assert_same_file(tmp_path / "idx.h5", tmp_path / "local.h5")
