"""Data in the forms people keep it: Hugging Face parquet / save_to_disk and WebDataset tars, built here from
the same images as a folder tree, give the same image features as the files; labels, keys, questions as
expected; a resumed run over tars equals an uninterrupted one; bad input is named."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featcache
from cli import main
from featcache.datasets import load_dataset
from featcache.errors import DatasetError
from featcache.extract import Compute, Spread, Storage, extract
from tests.test_extract import assert_same_file

NAMES = ["blue", "green", "red"]
FAST = dict(compute=Compute(batch_size=4, workers=0), storage=Storage(shard_size=3), progress=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[tuple[Path, str, str]]:
    """(file, label, split): a folder tree of PNG and JPEG colour patches."""
    root = tmp_path_factory.mktemp("src") / "tree"
    rng = np.random.default_rng(1)
    out = []
    for split, n in (("train", 4), ("test", 2)):
        for label, colour in zip(NAMES, [(30, 40, 220), (30, 200, 40), (220, 30, 30)]):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                path = root / split / label / f"{i}.{'png' if i % 2 else 'jpg'}"
                arr = np.clip(np.array(colour) + rng.normal(0, 20, (30, 34, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(path)
                out.append((path, label, split))
    return out


def features(cache_path) -> dict[str, np.ndarray]:
    """image key -> query features."""
    with featcache.open_cache(cache_path) as c:
        return dict(zip(c.strings("images", "key"), c.read("images", "query")))


def by_split(images) -> dict[str, list[Path]]:
    return {s: [p for p, _, sp in images if sp == s] for s in ("train", "test")}


@pytest.fixture(scope="module")
def folder_features(images, backbone, tmp_path_factory):
    root = images[0][0].parents[2]
    out = tmp_path_factory.mktemp("c") / "folder.h5"
    extract(load_dataset(f"folder:{root}"), out, model=backbone, **FAST)
    return {str(root / k): v for k, v in features(out).items()}


def _parquet_folder(images, folder: Path, via: str) -> Path:
    """The hub's layout, data/<split>-00000-of-00001.parquet, written by datasets or by pyarrow alone."""
    (folder / "data").mkdir(parents=True)
    for split in ("train", "test"):
        rows = [(p, lab) for p, lab, s in images if s == split]
        if via == "datasets":
            import datasets

            features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
            # the images embedded, as push_to_hub writes them: a cell that only names a file outside the dataset's
            # folder is refused (featcache reads nothing outside the folders you name)
            datasets.Dataset.from_dict({"image": [{"bytes": p.read_bytes(), "path": p.name} for p, _ in rows],
                                        "label": [NAMES.index(lab) for _, lab in rows]},
                                       features=features).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({"image": [{"bytes": p.read_bytes(), "path": p.name} for p, _ in rows],
                              "label": [lab for _, lab in rows]})
            pq.write_table(table, folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


@pytest.mark.parametrize("via", ["datasets", "pyarrow", "save_to_disk"])
def test_hugging_face_sources_give_the_files_features(via, images, folder_features, backbone, tmp_path):
    folder = _parquet_folder(images, tmp_path / "pq", "pyarrow" if via == "pyarrow" else "datasets")
    if via == "save_to_disk":
        import datasets

        datasets.load_dataset(str(folder)).save_to_disk(str(tmp_path / "disk"))
        folder = tmp_path / "disk"
    ds = load_dataset(f"hf:{folder}")
    assert ds.task == "classify" and {q.split for q in ds.questions} == {"train", "test"}
    data_file = next(p for p in sorted(folder.rglob("*")) if p.suffix in (".parquet", ".arrow"))
    assert f"{data_file.relative_to(folder).as_posix()} {data_file.stat().st_size} B" in ds.source  # provenance
    assert sorted(q.answer for q in ds.questions) == sorted(lab for _, lab, _ in images)
    extract(ds, tmp_path / "hf.h5", model=backbone, **FAST)
    files = {f"{s}/{i}": str(p) for s, paths in by_split(images).items() for i, p in enumerate(paths)}
    got = features(tmp_path / "hf.h5")
    assert sorted(got) == sorted(files)
    for key, feats in got.items():
        np.testing.assert_array_equal(feats, folder_features[files[key]], err_msg=key)


def test_a_hugging_face_vqa_table_keys_images_by_their_id(images, backbone, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "vqa" / "data").mkdir(parents=True)
    rows = [(p, lab) for p, lab, s in images if s == "train"]
    table = pa.table({"image": [{"bytes": p.read_bytes(), "path": None} for p, _ in rows for _ in range(2)],
                      "image_id": [i for i in range(len(rows)) for _ in range(2)],
                      "question": [q for _ in rows for q in ("what colour is it?", "is it red?")],
                      "answers": [a for _, lab in rows for a in ([{"answer": lab}] * 3 + [{"answer": "x"}],
                                                                 [{"answer": "yes" if lab == "red" else "no"}] * 2)]})
    pq.write_table(table, tmp_path / "vqa" / "data" / "train-00000-of-00001.parquet")
    ds = load_dataset(f"hf:{tmp_path / 'vqa'}")
    assert ds.task == "vqa" and len(ds.images()) == len(rows) and len(ds.questions) == 2 * len(rows)
    assert ds.questions[0].image == ds.questions[1].image == "train/0"  # the split and the table's own image id
    assert [q.answer for q in ds.questions[:2]] == [rows[0][1], "no" if rows[0][1] != "red" else "yes"]
    assert "columns image=image, question=question, answer=answers" in ds.source
    report = extract(ds, tmp_path / "v.h5", model=backbone, **FAST)
    assert report.n_images == len(rows) and report.n_texts == 2


def _tars(images, folder: Path, writer: str) -> str:
    """Two tars per split (CLIP_benchmark's layout: .png/.jpg + .cls, classnames.txt beside the splits)."""
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        rows = [(p, lab) for p, lab, s in images if s == split]
        for shard in range(2):
            path = folder / split / f"{shard:05d}.tar"
            samples = [(f"s{i:04d}", p, lab) for i, (p, lab) in enumerate(rows) if i % 2 == shard]
            if writer == "webdataset":
                import webdataset as wds

                with wds.TarWriter(str(path)) as w:
                    for key, p, lab in samples:
                        w.write({"__key__": key, p.suffix[1:]: p.read_bytes(), "cls": str(NAMES.index(lab))})
            else:
                with tarfile.open(path, "w") as tf:
                    for key, p, lab in samples:
                        for name, data in ((f"{key}{p.suffix}", p.read_bytes()), (f"{key}.cls", str(NAMES.index(lab)).encode())):
                            info = tarfile.TarInfo(name)
                            info.size = len(data)
                            tf.addfile(info, io.BytesIO(data))
    (folder / "classnames.txt").write_text("\n".join(NAMES) + "\n")
    return f"wds:{folder}/{{train,test}}/{{00000..00001}}.tar"


def _tar_files(images) -> dict[str, str]:
    """tar sample key -> the file it was made from."""
    return {f"{s}/{i % 2:05d}/s{i:04d}": str(p) for s, paths in by_split(images).items() for i, p in enumerate(paths)}


@pytest.mark.parametrize("writer", ["webdataset", "tarfile"])
def test_webdataset_tars_give_the_files_features(writer, images, folder_features, backbone, tmp_path):
    ds = load_dataset(_tars(images, tmp_path / "tars", writer))
    assert ds.task == "classify" and len(ds.questions) == len(images)
    labels = {str(p): lab for p, lab, _ in images}
    files = _tar_files(images)
    assert {q.image: q.answer for q in ds.questions} == {k: labels[f] for k, f in files.items()}
    extract(ds, tmp_path / "w.h5", model=backbone, **FAST)
    for key, feats in features(tmp_path / "w.h5").items():
        np.testing.assert_array_equal(feats, folder_features[files[key]], err_msg=key)


def test_a_resumed_run_over_tars_equals_an_uninterrupted_one(images, backbone, tmp_path):
    ds = load_dataset(_tars(images, tmp_path / "tars", "webdataset"))
    extract(ds, tmp_path / "whole.h5", model=backbone, **FAST)
    extract(ds, tmp_path / "resumed.h5", model=backbone, **FAST, spread=Spread(shard_index=0, num_shards=2))  # stopped halfway
    report = extract(ds, tmp_path / "resumed.h5", model=backbone, **FAST)
    assert report.shards_done_before > 0
    assert_same_file(tmp_path / "resumed.h5", tmp_path / "whole.h5")


def test_webdataset_vqa_samples_from_json(images, tmp_path):
    import webdataset as wds

    (tmp_path / "q").mkdir()
    with wds.TarWriter(str(tmp_path / "q" / "shard.tar")) as w:
        for i, (p, lab, _) in enumerate(images[:3]):
            w.write({"__key__": f"k{i}", p.suffix[1:]: p.read_bytes(),
                     "json": json.dumps({"question": ["what colour?", "is it blue?"],
                                         "answer": [lab, "yes" if lab == "blue" else "no"]}).encode()})
    ds = load_dataset(f"wds:{tmp_path / 'q' / 'shard.tar'}")
    assert ds.task == "vqa" and len(ds.questions) == 6 and ds.questions[0].text == "what colour?"
    assert ds.questions[0].answer == images[0][1] and ds.questions[0].split == "all"


def test_bad_tar_members_and_tables_are_named(images, backbone, tmp_path):
    src = _tars(images, tmp_path / "tars", "tarfile")
    with tarfile.open(tmp_path / "tars" / "train" / "00000.tar", "a") as tf:  # a corrupt image
        data = b"definitely not a jpeg"
        info = tarfile.TarInfo("broken.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("broken.cls")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"0"))
    r = CliRunner().invoke(main, ["extract", "--dataset", src, "--out", str(tmp_path / "c.h5"), "--model",
                                  "tiny-random", "--workers", "0"])
    assert r.exit_code == 1 and "broken.jpg" in r.output and "Traceback" not in r.output, r.output
    ds = load_dataset(src)
    report = extract(ds, tmp_path / "c.h5", model=backbone, **{**FAST, "storage": Storage(shard_size=3, skip_bad=True)})
    assert [k for k in report.failed_images] == ["train/00000/broken"]
    with featcache.open_cache(tmp_path / "c.h5") as c:
        errors = dict(zip(c.strings("images", "key"), c.strings("images", "error")))
    assert "broken.jpg" in errors["train/00000/broken"] and "cannot decode" in errors["train/00000/broken"]

    (tmp_path / "tars" / "classnames.txt").write_bytes(b"\xff\xfeblue\n")
    with pytest.raises(DatasetError, match="cannot be read as UTF-8 text"):
        load_dataset(src)
    (tmp_path / "tars" / "classnames.txt").write_text("blue\n")
    with pytest.raises(DatasetError, match=r"class 1 is outside classnames.txt \(1 names"):
        load_dataset(src)
    with pytest.raises(DatasetError, match="matches no tar files"):
        load_dataset(f"wds:{tmp_path}/none-{{0..3}}.tar")
    with pytest.raises(DatasetError, match="only local tar files"):
        load_dataset("wds:https://example.invalid/{0..3}.tar")


def test_bad_hugging_face_tables_are_named(images, backbone, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "t" / "data").mkdir(parents=True)
    p = images[0][0]
    pq.write_table(pa.table({"image": [{"bytes": p.read_bytes(), "path": None}, None], "label": ["blue", "red"],
                             "n": [1, 2]}),
                   tmp_path / "t" / "data" / "train-00000-of-00001.parquet")
    ds = load_dataset(f"hf:{tmp_path / 't'}")
    r = CliRunner().invoke(main, ["extract", "--dataset", f"hf:{tmp_path / 't'}", "--out", str(tmp_path / "c.h5"),
                                  "--model", "tiny-random"])
    assert r.exit_code == 1 and "train/1" in r.output and "Traceback" not in r.output, r.output
    report = extract(ds, tmp_path / "c.h5", model=backbone, **{**FAST, "storage": Storage(shard_size=3, skip_bad=True)})
    assert report.failed_images == ["train/1"]
    with pytest.raises(DatasetError, match="column 'n' does not hold images"):
        load_dataset(f"hf:{tmp_path / 't'}", columns={"image": "n"})
    with pytest.raises(DatasetError, match="no column 'picture'"):
        load_dataset(f"hf:{tmp_path / 't'}", columns={"image": "picture"})
    pq.write_table(pa.table({"image": [{"bytes": p.read_bytes(), "path": None}], "colour": ["blue"]}),
                   tmp_path / "t" / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(DatasetError, match="neither a question column"):
        load_dataset(f"hf:{tmp_path / 't'}")
    with pytest.raises(DatasetError, match="not found|could not be"):
        load_dataset("hf:no-such-user/no-such-dataset")
    with pytest.raises(DatasetError, match="hf:no-such-user/no-such-dataset .*could not be|not found"):
        load_dataset("hf:no-such-user/no-such-dataset@v1.0")  # a pinned revision: the id without it is named


def test_a_hub_id_pins_its_revision():
    from featcache.datasets.hf import provenance, split_revision

    assert split_revision("lmms-lab/VQAv2@abc123") == ("lmms-lab/VQAv2", "abc123")
    assert split_revision("lmms-lab/VQAv2") == ("lmms-lab/VQAv2", None)
    assert provenance("lmms-lab/VQAv2", "abc123") == "revision abc123"
    assert provenance("lmms-lab/VQAv2", None) == "revision main"


@pytest.mark.parametrize("kind", ["wds", "hf"])
def test_a_source_changed_mid_run_recomputes_what_it_touched(kind, images, backbone, tmp_path):
    """Shards finished, the source rewritten with one image changed, then resumed: the file equals a fresh run
    on the new source (no stale shard kept)."""
    changed = [(p, lab, s) for p, lab, s in images]
    other = tmp_path / "other.png"
    Image.fromarray(np.full((30, 34, 3), 7, dtype=np.uint8)).save(other)
    changed[0] = (other, changed[0][1], changed[0][2])

    def source(rows, folder):
        if kind == "wds":
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            return _tars(rows, folder, "tarfile")
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        return f"hf:{_parquet_folder(rows, folder, 'pyarrow')}"

    extract(load_dataset(source(images, tmp_path / "src")), tmp_path / "c.h5", model=backbone, **FAST,
            spread=Spread(merge_output=False))  # every shard done, the file not yet merged
    import time

    time.sleep(0.01)  # a rewritten file gets a new modification time
    new = load_dataset(source(changed, tmp_path / "src"))
    extract(new, tmp_path / "c.h5", model=backbone, **FAST)
    extract(new, tmp_path / "fresh.h5", model=backbone, **FAST)
    assert_same_file(tmp_path / "c.h5", tmp_path / "fresh.h5")


def test_predict_over_a_tar_dataset_gives_the_caches_predictions(images, backbone, tiny_itm, tmp_path):
    import csv

    from heads.sweep import fit_head

    src = _tars(images, tmp_path / "tars", "webdataset")
    ds = load_dataset(src)
    extract(ds, tmp_path / "w.h5", model=backbone, **FAST)
    trained = fit_head(tmp_path / "w.h5", "lr", "image_proj", {"C": 1.0}, "train")
    trained.save(tmp_path / "head")
    r = CliRunner().invoke(main, ["predict", "--head", str(tmp_path / "head"), "--model", str(tiny_itm), "--dataset",
                                  src, "--split", "test", "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0 and "wrote 6 predictions" in r.output, r.output
    with open(tmp_path / "p.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with featcache.open_cache(tmp_path / "w.h5") as c:
        X, y = c.view("image_proj", split="test")
        keys = c.strings("images", "key")[c.array("questions", "image_row")[c.strings("questions", "split") == "test"]]
        expected = dict(zip(keys, trained.head.predict(X)))
    assert {row["image"]: row["answer"] for row in rows} == expected
    assert {row["image"]: row["reference"] for row in rows} == {q.image: q.answer for q in ds.questions
                                                                 if q.split == "test"}


def test_a_tar_added_later_keeps_the_finished_shards(images, tmp_path):
    import webdataset as wds

    from featcache.extract.plan import plan_shards

    def plan(ds):
        keys = sorted(ds.images())
        return {s.digest for s in plan_shards(keys, {k: ds.image_identity(k) for k in keys}, 2)}

    src = _tars(images, tmp_path / "tars", "webdataset")
    before = plan(load_dataset(src))
    with wds.TarWriter(str(tmp_path / "tars" / "train" / "00002.tar")) as w:  # a new tar, a new shard of keys
        for i, (p, lab, _) in enumerate(images[:5]):
            w.write({"__key__": f"n{i}", p.suffix[1:]: p.read_bytes(), "cls": str(NAMES.index(lab))})
    after = plan(load_dataset(src.replace("{00000..00001}", "{00000..00002}")))
    assert len(before - after) <= 2 < len(before)  # at most the shards at the seam are recut


def test_captions_of_tars_and_parquet_equal_the_files_captions(images, tmp_path):
    """`caption --dataset` reads every source: each image's caption equals the one of the same file on disk."""
    from featcache.models.tiny_generative import build_tiny_generative

    tiny_opt = build_tiny_generative(tmp_path / "model", "opt", seed=0)
    root = images[0][0].parents[2]
    sources = {"folder": f"folder:{root}", "wds": _tars(images, tmp_path / "tars", "webdataset"),
               "hf": f"hf:{_parquet_folder(images, tmp_path / 'pq', 'pyarrow')}"}
    got = {}
    for name, source in sources.items():
        out = tmp_path / f"{name}.jsonl"
        r = CliRunner().invoke(main, ["caption", "--dataset", source, "--model", str(tiny_opt), "--out", str(out),
                                      "--num-beams", "1", "--max-new-tokens", "4", "--device", "cpu"])
        assert r.exit_code == 0, r.output
        got[name] = {row["image"]: row["caption"] for row in map(json.loads, out.read_text().splitlines())}
    files = {"wds": _tar_files(images),
             "hf": {f"{s}/{i}": str(p) for s, paths in by_split(images).items() for i, p in enumerate(paths)}}
    by_file = {str(root / k): c for k, c in got["folder"].items()}
    assert len(by_file) == len(images)
    for name, keys in files.items():
        assert {k: by_file[f] for k, f in keys.items()} == got[name], name
    # (a tiny random captioner writes one caption for every image; that each source hands the model the same
    # pixels as the files is what the feature tests above pin down)
