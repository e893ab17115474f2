"""Image classification: a folder per class or an image,label manifest -> the same cache as the files give
a VQA extraction, image-only views, sweep reports with top-1 / top-5 / mean per-class recall, zero-shot
over class names with template ensembles, predict without a question, and bad input named."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featcache
from cli import main
from featcache.datasets import Question, VQADataset, load_dataset
from featcache.errors import DatasetError
from featcache.extract import Compute, extract

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "gray": (128, 128, 128)}
FAST = dict(compute=Compute(batch_size=8, workers=0), progress=False)


@pytest.fixture(scope="module")
def flowers(tmp_path_factory) -> Path:
    """train/ and test/ folders, a folder per class, noisy colour patches, and a stray non-image file."""
    root = tmp_path_factory.mktemp("data") / "flowers"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(colour) + rng.normal(0, 20, (36, 44, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "train" / "red" / "README.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def flower_cache(flowers, backbone, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("caches") / "flowers.h5"
    extract(load_dataset(f"folder:{flowers}"), out, model=backbone, **FAST)
    return out


def test_a_folder_per_class_is_an_image_classification_dataset(flowers):
    ds = load_dataset(f"folder:{flowers}")
    assert ds.task == "classify" and len(ds.questions) == len(ds.images()) == 4 * 9
    assert {q.split for q in ds.questions} == {"train", "test"} and all(q.text == "" for q in ds.questions)
    q = next(q for q in ds.questions if q.image == "train/blue/0.jpg")
    assert (q.answer, q.split) == ("blue", "train") and ds.image_paths[q.image] == str(flowers / "train/blue/0.jpg")
    assert any("not images" in w for w in ds.warnings)


def test_metadata_csv_overrides_the_folders(flowers, tmp_path):
    import shutil

    root = tmp_path / "f"
    shutil.copytree(flowers / "train", root)
    (root / "metadata.csv").write_text("file_name,label,split\nred/0.jpg,crimson,test\n")
    ds = load_dataset(f"folder:{root}")
    q = next(q for q in ds.questions if q.image == "red/0.jpg")
    assert (q.answer, q.split) == ("crimson", "test")
    assert {q.split for q in ds.questions} == {"all", "test"}
    (root / "metadata.csv").write_text("file_name,label\n/etc/passwd,x\n")
    with pytest.raises(DatasetError, match="must be a path inside"):
        load_dataset(f"folder:{root}")


def test_a_label_manifest_equals_the_folder_and_the_vqa_path(flowers, flower_cache, backbone, tmp_path):
    ds = load_dataset(f"folder:{flowers}")
    manifest = tmp_path / "labels.csv"
    manifest.write_text("image,label,split\n" + "".join(f"{q.image},{q.answer},{q.split}\n" for q in ds.questions))
    by_manifest = load_dataset(str(manifest), images=str(flowers))
    assert by_manifest.task == "classify"
    assert [(q.image, q.answer, q.split) for q in by_manifest.questions] == \
           [(q.image, q.answer, q.split) for q in ds.questions]
    extract(by_manifest, tmp_path / "m.h5", model=backbone, **FAST)
    vqa = VQADataset("same images", "test", [Question(q.image, "what colour is it?", q.answer, q.split)
                                             for q in ds.questions], ds.image_paths)
    extract(vqa, tmp_path / "v.h5", model=backbone, **FAST)
    with featcache.open_cache(flower_cache) as a, featcache.open_cache(tmp_path / "m.h5") as b, \
            featcache.open_cache(tmp_path / "v.h5") as c:
        assert a.attrs["task"] == b.attrs["task"] == "classify" and c.attrs["task"] == "vqa"
        assert "text_proj" not in a.questions and a.attrs["n_texts"] == 0
        for name in ("key", "query", "query_proj"):
            np.testing.assert_array_equal(a.read("images", name), b.read("images", name))
            np.testing.assert_array_equal(a.read("images", name), c.read("images", name))
        np.testing.assert_array_equal(a.strings("questions", "answer"), b.strings("questions", "answer"))
        X, y = a.view("image_proj", split="train")
        assert np.asarray(X).shape == (24, 32 * backbone.dims["proj"]) and sorted(set(y)) == sorted(COLOURS)
        assert a.views()["itc"] and not a.views()["image"]  # itc needs questions; image views are there


def test_sweep_reports_top1_top5_and_mean_per_class_recall(flowers, flower_cache, tmp_path):
    r = CliRunner().invoke(main, ["sweep", str(flower_cache), "--heads", "lr", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert {row["view"] for row in results["ranking"]} == {"image", "image_proj"}  # auto: the image-only views
    ev = results["evaluation"]
    assert ev["n"] == 12 and ev["top5_accuracy"] == 1.0  # 4 classes: the label is always in the top 5
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "top-1 accuracy" in report and "mean per-class recall" in report
    image = str(flowers / "test" / "red" / "1.png")
    r = CliRunner().invoke(main, ["predict", "--head", str(tmp_path / "rep" / "best"), "--image", image])
    assert r.exit_code == 0 and f"{image} |  -> " in r.output, r.output


def test_top_k_accuracy_counts_the_label_among_the_k_best():
    from heads.evaluate import top_k_accuracy

    scores = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    classes = np.array(["a", "b", "c"], dtype=object)
    assert top_k_accuracy(["b", "c", "a"], scores, classes, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(["b", "c", "a"], scores, classes, 2) == pytest.approx(1 / 3)
    assert top_k_accuracy(["b", "c", "unknown"], scores, classes, 3) == pytest.approx(2 / 3)


def test_zero_shot_over_class_names_with_a_template_ensemble(flower_cache, tiny_itm, backbone, tmp_path):
    from featcache.generative.zeroshot import ENSEMBLE, zeroshot

    result = zeroshot(flower_cache, str(tiny_itm), "itc", split="test", template="ensemble", device="cpu")
    vocab = sorted(COLOURS)
    emb = np.stack([backbone.encode_texts([t.format(answer=c) for c in vocab])["text_proj"] for t in ENSEMBLE])
    mean = emb.astype(np.float64).mean(0)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    with featcache.open_cache(flower_cache) as c:
        test = np.flatnonzero(c.strings("questions", "split") == "test")
        image = c.read("images", "query_proj").astype(np.float32)[c.array("questions", "image_row")[test]]
    expected = [vocab[i] for i in np.einsum("btd,kd->btk", image, mean).max(1).argmax(1)]
    assert list(result.pred) == expected and result.settings["template"] == list(ENSEMBLE)

    photo = zeroshot(flower_cache, str(tiny_itm), "itc", split="test", device="cpu")  # default on such a cache
    assert photo.settings["template"] == "a photo of a {answer}."
    templates = tmp_path / "t.txt"
    templates.write_text("# one per line\na photo of a {}.\n")
    r = CliRunner().invoke(main, ["zeroshot", str(flower_cache), "--model", str(tiny_itm), "--method", "itc",
                                  "--templates", str(templates), "--out", str(tmp_path / "zs")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "zs" / "results.json").read_text())["ranking"][0]["accuracy"] == \
           pytest.approx(float(np.mean(photo.pred == photo.y)))
    templates.write_text("a photo without a slot\n")
    r = CliRunner().invoke(main, ["zeroshot", str(flower_cache), "--model", str(tiny_itm), "--method", "itc",
                                  "--templates", str(templates), "--out", str(tmp_path / "zs2")])
    assert r.exit_code == 1 and "needs {}" in r.output and "Traceback" not in r.output, r.output
    templates.write_text("a {adj} photo of a {}.\n")
    r = CliRunner().invoke(main, ["zeroshot", str(flower_cache), "--model", str(tiny_itm), "--method", "itc",
                                  "--templates", str(templates), "--out", str(tmp_path / "zs3")])
    assert r.exit_code == 1 and "a slot other than {}" in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("layout, message", [
    ("missing", "no such folder"),
    ("empty", "holds no images in class folders"),
    ("manifest", "neither a question column"),
])
def test_bad_classification_input_is_named(layout, message, tmp_path):
    target = f"folder:{tmp_path / 'nope'}"
    if layout == "empty":
        (tmp_path / "empty" / "cat").mkdir(parents=True)
        target = f"folder:{tmp_path / 'empty'}"
    elif layout == "manifest":
        (tmp_path / "m.csv").write_text("image,colour\na.png,red\n")
        target = str(tmp_path / "m.csv")
    with pytest.raises(DatasetError, match=message):
        load_dataset(target)
    r = CliRunner().invoke(main, ["extract", "--dataset", target, "--out", str(tmp_path / "c.h5"),
                                  "--model", "tiny-random"])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output


def test_easy_vqa_shapes_and_colors_label_real_images_by_their_own_questions():
    base = load_dataset("easy-vqa")
    for name, classes in (("easy-vqa-shapes", 3), ("easy-vqa-colors", 8)):
        ds = load_dataset(name)
        assert ds.task == "classify" and len({q.answer for q in ds.questions}) == classes
        assert len(ds.questions) == len(ds.images()) > 3000 and {q.split for q in ds.questions} == {"train", "test"}
        label = {q.image: q.answer for q in ds.questions}
        named = [(q.image, q.answer) for q in base.questions if q.image in label and q.answer in ds.answers]
        assert named and all(label[k] == a for k, a in named)  # no image's questions name another class


def test_zeroshot_dataset_extracts_a_class_folder_first(flowers, flower_cache, tiny_itm, tmp_path):
    from featcache.generative.zeroshot import zeroshot

    r = CliRunner().invoke(main, ["zeroshot", "--dataset", f"folder:{flowers}", "--model", str(tiny_itm), "--method",
                                  "itc", "--out", str(tmp_path / "zs")])
    assert r.exit_code == 0 and "12 images" in r.output, r.output
    direct = zeroshot(flower_cache, str(tiny_itm), "itc", split="test", device="cpu")
    ranking = json.loads((tmp_path / "zs" / "results.json").read_text())["ranking"]
    assert ranking[0]["accuracy"] == pytest.approx(float(np.mean(direct.pred == direct.y)))
