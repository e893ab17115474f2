"""Dataset protocols: counts, leak-freedom, determinism, DAQUAR reduction, augmentation, bad input."""

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DAQUAR, write_images

from featcache import open_cache
from featcache.datasets import fold_rare, load_dataset, normalize_answers
from featcache.datasets.daquar import load_daquar, load_daquar_18, reduce_to_frequent
from featcache.errors import DatasetError
from featcache.extract import Compute, extract


def splits_of(ds):
    return Counter(q.split for q in ds.questions)


def shared_images(ds) -> set:
    train = {q.image.split("#")[0] for q in ds.questions if q.split == "train"}
    return train & {q.image.split("#")[0] for q in ds.questions if q.split == "test"}


def test_easy_vqa_protocol_counts():
    official = load_dataset("easy-vqa")
    assert splits_of(official) == {"train": 38575, "test": 9673}
    assert len(official.images()) == 5000 and not shared_images(official)
    balanced = load_dataset("easy-vqa-balanced")
    assert len(balanced.questions) == 16905 and splits_of(balanced) == {"train": 13568, "test": 3337}
    counts = balanced.counts()
    assert counts["train"]["yes"] == counts["train"]["no"] == 1700
    assert counts["test"]["yes"] == counts["test"]["no"] == 400
    assert not shared_images(balanced)
    with pytest.warns(UserWarning, match="leak-free|optimistic"):
        paper = load_dataset("easy-vqa-paper")
    assert len(paper.questions) == 16905 and abs(splits_of(paper)["test"] - 3381) < 50
    assert len(shared_images(paper)) > 1000  # the leak this protocol reproduces


def test_protocols_are_seeded():
    a, b = load_dataset("easy-vqa-balanced", seed=3), load_dataset("easy-vqa-balanced", seed=3)
    assert a.questions == b.questions and a.digest() == b.digest()
    assert load_dataset("easy-vqa-balanced", seed=4).digest() != a.digest()


@pytest.fixture
def daquar_root(tmp_path) -> Path:
    """A tiny DAQUAR in the processed layout: 24 images, 8 answers of different frequencies."""
    root = tmp_path / "daquar"
    (root / "images").mkdir(parents=True)
    for i, p in enumerate(write_images(root / "imgs_src", 24, size=(28, 21))):
        p.rename(root / "images" / f"image{i + 1}{p.suffix}")
    rng = np.random.default_rng(0)
    answers = ["chair"] * 60 + ["table"] * 40 + ["2"] * 30 + ["lamp"] * 14 + ["sofa"] * 9 + ["cup"] * 3 + \
              ["chair,lamp"] * 12 + ["table,cup"] * 6
    rows = [(f"what is in position {i}", a, f"image{rng.integers(1, 25)}") for i, a in enumerate(answers)]
    rows.append(rows[0])  # a duplicate
    header = "question,answer,image_id\n"
    body = [f'{q},"{a}",{img}\n' for q, a, img in rows]
    (root / "data_train.csv").write_text(header + "".join(body[: len(body) * 4 // 5]))
    (root / "data_eval.csv").write_text(header + "".join(body[len(body) * 4 // 5:]))
    (root / "answer_space.txt").write_text("\n".join(["chair", "table", "2", "lamp", "sofa", "cup"]) + "\n")
    (root / "train_images_list.txt").write_text("\n".join(f"image{i}" for i in range(1, 19)) + "\n")
    (root / "test_images_list.txt").write_text("\n".join(f"image{i}" for i in range(19, 25)) + "\n")
    return root


def test_daquar_reads_processed_layout_and_splits_by_image(daquar_root):
    ds = load_daquar(daquar_root)
    assert len(ds.questions) == 175 and not ds.missing_images()
    assert not shared_images(ds)
    assert any("not in answer_space" in w for w in ds.warnings)  # "chair,lamp" and co.
    assert any("1 duplicate" in w for w in ds.warnings)


def test_daquar_reads_original_raw_format(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    (root / "qa.894.raw.train.txt").write_text("what is on the table in the image12 ?\ncup\nhow many chairs in the image3 ?\n2\n")
    (root / "qa.894.raw.test.txt").write_text("what is left of the bed in the image7 ?\nlamp\n")
    ds = load_daquar(root)
    assert [(q.image, q.text, q.answer, q.split) for q in ds.questions] == [
        ("image12", "what is on the table", "cup", "train"), ("image3", "how many chairs", "2", "train"),
        ("image7", "what is left of the bed", "lamp", "test")]
    assert len(ds.missing_images()) == 3  # no images folder: reported, not hidden


def test_paper_reduction_rules(daquar_root):
    ds = reduce_to_frequent(load_daquar(daquar_root), min_count=10, max_per_label=50)
    counts = Counter(q.answer for q in ds.questions)
    # valid answers: chair 72, table 46, 2 30, lamp 26 (cup 9 and sofa 9 are below 10)
    # "chair,lamp" goes to lamp (its least frequent valid answer), "table,cup" to table
    assert counts == {"chair": 50, "table": 46, "2": 30, "lamp": 26}
    assert ds.answers == sorted(counts)


def test_daquar_18_is_image_disjoint_and_augments_train_only(daquar_root):
    ds = load_daquar_18(daquar_root, min_count=10, max_per_label=50)
    assert not shared_images(ds)
    aug = [q for q in ds.questions if "#aug" in q.image]
    assert aug and all(q.split == "train" for q in aug)
    assert set(ds.augmented) == {q.image for q in aug}
    key = aug[0].image
    a, b = np.asarray(ds.open_image(key)), np.asarray(ds.open_image(key))
    source = np.asarray(ds.open_image(ds.augmented[key][0]))
    assert np.array_equal(a, b) and a.shape == source.shape and not np.array_equal(a, source)
    again = load_daquar_18(daquar_root, min_count=10, max_per_label=50)
    assert again.digest() == ds.digest()


def test_augmented_images_get_their_own_cache_rows(daquar_root, backbone, tmp_path):
    ds = load_daquar_18(daquar_root, min_count=10, max_per_label=50)
    extract(ds, tmp_path / "d.h5", model=backbone, progress=False, compute=Compute(workers=0))
    with open_cache(tmp_path / "d.h5") as cache:
        keys = list(cache.strings("images", "key"))
        assert len(keys) == len(set(keys)) == len(ds.images())
        query = cache.array("images", "query")
        aug = next(k for k in keys if "#aug" in k)
        src = ds.augmented[aug][0]
        assert not np.allclose(query[keys.index(aug)], query[keys.index(src)])


@pytest.mark.skipif(not SHARED_DAQUAR.exists(), reason="the shared DAQUAR copy is not present")
def test_real_daquar_reduces_to_18_classes():
    full = load_daquar(SHARED_DAQUAR)
    assert len(full.questions) == 12468 and not full.missing_images()
    assert not shared_images(full)
    ds = load_daquar_18(SHARED_DAQUAR)
    assert len(ds.answers) == 18
    originals = [q for q in ds.questions if "#aug" not in q.image]
    assert len(originals) == 5359 and max(Counter(q.answer for q in originals).values()) <= 750
    assert not shared_images(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paper = load_dataset("daquar-paper", root=str(SHARED_DAQUAR))
    assert len({q.answer for q in paper.questions}) == 18 and shared_images(paper)


def test_daquar_needs_root():
    with pytest.raises(DatasetError, match="--root DIR"):
        load_dataset("daquar")


def test_manifest_answer_cleanup(tmp_path):
    write_images(tmp_path, 2)
    rows = ["image,question,answer", "img0.png,how many?,Two", "img0.png,how many?,2", "img1.jpg,what?,Cat!",
            "img1.jpg,what?,cat", "img1.jpg,which?,rare"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    ds = normalize_answers(load_dataset(str(tmp_path / "m.csv")))
    assert [q.answer for q in ds.questions] == ["2", "2", "cat", "cat", "rare"]
    folded = fold_rare(ds, 2, "other")
    assert [q.answer for q in folded.questions][-1] == "other" and "folded 1 answers" in folded.warnings[-1]
    dropped = fold_rare(ds, 2, "drop")
    assert len(dropped.questions) == 4 and "dropped 1 questions" in dropped.warnings[-1]


def test_stats_command_writes_plots(daquar_root, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from cli import main

    result = CliRunner().invoke(main, ["stats", "daquar", "--root", str(daquar_root), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "more than one split: 0" in result.output
    pngs = sorted((tmp_path / "s").glob("*.png"))
    assert len(pngs) == 2
    for p in pngs:
        with Image.open(p) as im:
            assert im.size[0] > 200 and im.size[1] > 200
