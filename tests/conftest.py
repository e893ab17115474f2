"""Fixtures: tiny random BLIP-2 checkpoints and tiny image datasets, built in temporary folders."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_CACHE", __import__("tempfile").mkdtemp(prefix="featcache-test-hf-datasets-"))

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from featcache.datasets import Question, VQADataset  # noqa: E402

SHARED_DAQUAR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "daquar"


@pytest.fixture(scope="session")
def tiny_itm(tmp_path_factory) -> Path:
    from featcache.models.tiny import build_tiny_blip2

    return build_tiny_blip2(tmp_path_factory.mktemp("tiny_itm"), kind="itm", seed=0)


@pytest.fixture(scope="session")
def tiny_itm_other(tmp_path_factory) -> Path:
    from featcache.models.tiny import build_tiny_blip2

    return build_tiny_blip2(tmp_path_factory.mktemp("tiny_itm_other"), kind="itm", seed=1)


@pytest.fixture(scope="session")
def tiny_opt(tmp_path_factory) -> Path:
    from featcache.models.tiny import build_tiny_blip2

    return build_tiny_blip2(tmp_path_factory.mktemp("tiny_opt"), kind="opt", seed=0)


@pytest.fixture(scope="session")
def backbone(tiny_itm):
    from featcache.models.backbone import load_backbone

    return load_backbone(str(tiny_itm), device="cpu")


def write_images(folder: Path, n: int, seed: int = 0, size=(40, 30)) -> list[Path]:
    """Random-colour PNG/JPEG images of a few sizes (so resizing is exercised)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = size[0] + 7 * (i % 3), size[1] + 5 * (i % 2)
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        p = folder / (f"img{i}.png" if i % 2 == 0 else f"img{i}.jpg")
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def small_dataset(tmp_path) -> VQADataset:
    """11 images, 3-4 questions each, a few repeated question texts, two splits."""
    paths = write_images(tmp_path / "imgs", 11)
    texts = ["what color is it?", "is there a circle?", "how many shapes are there?", "what is left of the chair?"]
    answers = ["red", "yes", "two", "table"]
    questions = []
    for i, p in enumerate(paths):
        for j in range(3 + i % 2):
            questions.append(Question(p.stem, texts[(i + j) % 4], answers[(i * j) % 4], "train" if i < 8 else "test"))
    return VQADataset("small", str(tmp_path), questions, {p.stem: str(p) for p in paths})


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance on 2 CPUs for a module of Ray tests (extraction, sweeps), shut down after it."""
    import logging

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False,
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
