"""Crafted files: a parts folder must prove each shard is the one its manifest names, and nothing it names may
lead outside the folder; every refusal names the file and the fix, on every read path (open, verify, merge)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from featcache import open_cache
from featcache.cache.access import verify
from featcache.errors import FeatcacheError
from featcache.extract import Compute, Spread, Storage, extract, merge_parts
from tests.conftest import write_images


def _dataset(root: Path):
    from featcache.datasets import Question, VQADataset

    paths = write_images(root / "imgs", 12)
    qs = [Question(p.stem, "what color?", ["red", "blue"][i % 2], "train" if i < 9 else "test")
          for i, p in enumerate(paths)]
    return VQADataset("crafted", str(root), qs, {p.stem: str(p) for p in paths})


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_itm, tiny_itm_other):
    """The same images as parts folders of two models (several shards each)."""
    root = tmp_path_factory.mktemp("crafted")
    ds = _dataset(root)
    for name, model in (("a", tiny_itm), ("b", tiny_itm_other)):
        extract(ds, root / f"{name}.h5", model=str(model), progress=False, compute=Compute(device="cpu", workers=0),
                storage=Storage(shard_size=3), spread=Spread(merge_output=False))
    return root


@pytest.fixture
def parts(made, tmp_path):
    copy = tmp_path / "a.h5.parts"
    shutil.copytree(made / "a.h5.parts", copy)
    return copy


def _manifest(parts: Path) -> dict:
    return json.loads((parts / "manifest.json").read_text())


def _write(parts: Path, manifest: dict) -> None:
    (parts / "manifest.json").write_text(json.dumps(manifest))


def _refused(parts: Path, match: str) -> None:
    """Opening, verifying and merging all refuse, naming the problem."""
    with pytest.raises(FeatcacheError, match=match):
        with open_cache(parts) as cache:
            cache.read("images", "query", np.arange(cache.n_images))
    with pytest.raises(FeatcacheError, match=match):
        problems = verify(parts)
        if problems:
            raise FeatcacheError("; ".join(problems))
    with pytest.raises(FeatcacheError, match=match):
        merge_parts(parts, parts.with_name("merged.h5"))
    assert not parts.with_name("merged.h5").exists()


def test_the_untouched_folder_reads(parts):
    assert len(_manifest(parts)["shards"]) >= 2
    assert verify(parts) == []
    with open_cache(parts) as cache:
        assert cache.n_images == 12


def test_a_shard_of_another_model_under_the_same_name(parts, made):
    shard = _manifest(parts)["shards"][0]["file"]
    for name in (shard, shard.replace(".h5", ".json")):
        shutil.copy(made / "b.h5.parts" / name, parts / name)  # same keys, same digest, other model
    _refused(parts, "made by another model")


def test_shards_swapped_together_with_their_sidecars(parts):
    a, b = (s["file"] for s in _manifest(parts)["shards"][:2])
    for suffix in (".h5", ".json"):
        x, y = parts / a.replace(".h5", suffix), parts / b.replace(".h5", suffix)
        os.replace(x, parts / "tmp")
        os.replace(y, x)
        os.replace(parts / "tmp", y)
    _refused(parts, "swapped or renamed")


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["shards"].append(dict(m["shards"][0])), "listed twice"),
    (lambda m: m["shards"][1].update(start=m["shards"][1]["start"] + 1), "must tile the rows"),
    (lambda m: m["shards"][0].update(n_images=m["shards"][0]["n_images"] + 1), "must tile the rows|holds"),
    (lambda m: m["shards"][0].update(file="../../outside/evil.h5"), "not shard-<its digest>.h5"),
    (lambda m: m.update(texts_file="/etc/passwd"), "texts_file"),
    (lambda m: m.update(shards=[]), "lists no shards"),
    (lambda m: m.update(n_images="12"), "'n_images' is missing or not of type int"),
])
def test_an_edited_manifest_is_refused(parts, edit, match):
    manifest = _manifest(parts)
    edit(manifest)
    _write(parts, manifest)
    _refused(parts, match)


def test_a_manifest_that_is_not_an_object_or_not_json(parts):
    (parts / "manifest.json").write_text("[1, 2]")
    _refused(parts, "not an object")
    (parts / "manifest.json").write_text("[" * 100000)
    _refused(parts, "not valid JSON")


def test_links_out_of_the_folder_and_non_regular_files_are_not_followed(parts, tmp_path):
    shard = _manifest(parts)["shards"][0]["file"]
    (parts / shard).unlink()
    os.symlink("/dev/zero", parts / shard)  # would hang a reader
    _refused(parts, "links outside|not a regular file")
    (parts / shard).unlink()
    outside = tmp_path / "outside.h5"
    outside.write_bytes(b"x")
    os.symlink(outside, parts / shard)
    _refused(parts, "links outside")


def test_a_question_table_with_object_arrays_is_not_unpickled(parts):
    np.savez(parts / "questions.npz", text=np.array([{"evil": 1}], dtype=object))
    _refused(parts, "cannot be read safely")


@pytest.fixture
def cache(parts):
    out = parts.with_name("c.h5")
    merge_parts(parts, out)
    return out


def _edit(path: Path, change) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        change(f)


def _huge_keys(f) -> None:
    import h5py

    del f["images"]["key"]
    f["images"].create_dataset("key", shape=(100_000_000,), dtype=h5py.string_dtype(), chunks=(1024,))


@pytest.mark.parametrize("change, match", [
    (lambda f: f["questions"].create_dataset("notes", shape=(8,), dtype="S8", external=[("/etc/passwd", 0, 64)]),
     "reads external storage"),
    (lambda f: f["questions"].__setitem__("more", __import__("h5py").ExternalLink("/tmp/other.h5", "/x")),
     "external link"),
    (lambda f: f["images"].__setitem__("loop", __import__("h5py").SoftLink("/images/loop")), "soft link"),
    (lambda f: f["images"].create_virtual_dataset("v", __import__("h5py").VirtualLayout(shape=(12,), dtype="f4")),
     "virtual dataset"),
    (_huge_keys, "declares 100,000,000 rows but stores only 0"),
    (lambda f: f["questions"].create_dataset("extra", data=np.zeros(3)), "has 3 rows where"),
])
def test_a_crafted_cache_file_is_refused_before_it_is_read(cache, change, match):
    from click.testing import CliRunner

    from cli import main

    _edit(cache, change)
    with pytest.raises(FeatcacheError, match=match):
        open_cache(cache)
    for command in (["info", str(cache)], ["verify", str(cache)]):
        r = CliRunner().invoke(main, command)
        assert r.exit_code == 1 and "refused" in r.output and "Traceback" not in r.output, r.output


@pytest.fixture(scope="module")
def saved(made, tiny_itm, tmp_path_factory):
    """A head (MLP) and a fine-tune checkpoint saved by featcache, to be tampered with in copies."""
    from featcache.finetune import FinetuneConfig, LiveSource, finetune
    from featcache.models.backbone import load_backbone
    from heads.sweep import fit_head

    root = tmp_path_factory.mktemp("saved")
    shutil.copytree(made / "a.h5.parts", root / "c.h5.parts")
    merge_parts(root / "c.h5.parts", root / "c.h5")
    fit_head(root / "c.h5", "mlp", "pooled", {"hidden_sizes": (8,), "max_epochs": 2}).save(root / "head")
    backbone = load_backbone(str(tiny_itm), device="cpu")
    finetune(LiveSource(_dataset(root / "ds"), backbone.preprocessor), root / "ft", backbone,
             FinetuneConfig(epochs=1, hidden_sizes=(8,), batch_size=8, validation_fraction=0.3), workers=0,
             progress=False)
    return root


def _tampered(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "featcache.json").read_text())
    edit(meta)
    (dst / "featcache.json").write_text(json.dumps(meta))
    return dst


def test_sizes_in_a_heads_json_are_believed_only_with_matching_tensors(saved, tmp_path):
    import resource

    from heads.trained import load_head

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    head = _tampered(saved / "head", tmp_path / "h", lambda m: m["fitted"].update(n_features_in=200_000_000))
    with pytest.raises(FeatcacheError, match="do not match its settings"):
        load_head(head)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: nothing was allocated
    assert load_head(saved / "head").head.classes_.tolist() == ["blue", "red"]


def test_a_lora_rank_in_a_fine_tune_folder_is_believed_only_with_matching_adapters(saved, tmp_path):
    from featcache.finetune import load_finetuned

    best = _tampered(saved / "ft" / "best", tmp_path / "best", lambda m: m["config"].update(lora_rank=1_000_000))
    with pytest.raises(FeatcacheError, match="lora_rank 1000000 does not match its adapters"):
        load_finetuned(best, device="cpu")


def test_a_heads_files_may_not_link_out_or_be_fifos(saved, tmp_path, tiny_itm):
    from click.testing import CliRunner

    from cli import main
    from heads.trained import load_head

    linked = tmp_path / "linked"
    shutil.copytree(saved / "head", linked)
    outside = tmp_path / "outside.json"
    os.replace(linked / "featcache.json", outside)
    os.symlink(outside, linked / "featcache.json")
    with pytest.raises(FeatcacheError, match="links outside"):
        load_head(linked)
    fifo = tmp_path / "fifo"
    shutil.copytree(saved / "head", fifo)
    (fifo / "featcache.json").unlink()
    os.mkfifo(fifo / "featcache.json")
    image = next((saved / "ds" / "imgs").iterdir())
    r = CliRunner().invoke(main, ["predict", "--head", str(fifo), "--image", str(image), "--question", "what color?",
                                  "--model", str(tiny_itm), "--device", "cpu"])
    assert r.exit_code == 1 and "not a regular file" in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("edit", [lambda m: m.pop("view"), lambda m: m.update(provenance=[1]),
                                  lambda m: m["fitted"].pop("classes")])
def test_missing_keys_and_wrong_types_in_a_heads_json_are_named(saved, tmp_path, edit):
    from heads.trained import load_head

    with pytest.raises(FeatcacheError, match="damaged or from an incompatible featcache"):
        load_head(_tampered(saved / "head", tmp_path / "h", edit))


@pytest.mark.parametrize("edit", [lambda m: m.pop("labels"), lambda m: m.update(config="x"),
                                  lambda m: m["provenance"].pop("model_fingerprint")])
def test_missing_keys_and_wrong_types_in_a_fine_tunes_json_are_named(saved, tmp_path, edit):
    from featcache.finetune import load_finetuned

    with pytest.raises(FeatcacheError, match="featcache.json"):
        load_finetuned(_tampered(saved / "ft" / "best", tmp_path / "b", edit), device="cpu")


def test_json_nesting_bombs_are_named(saved, tmp_path):
    from featcache.datasets import load_dataset
    from heads.sweep import load_grid
    from heads.trained import load_head

    bomb = "[" * 200_000 + "]" * 200_000
    (tmp_path / "grid.json").write_text(bomb)
    with pytest.raises(FeatcacheError, match="not valid JSON"):
        load_grid(str(tmp_path / "grid.json"))
    (tmp_path / "m.jsonl").write_text(bomb + "\n")
    with pytest.raises(FeatcacheError, match="not valid JSON"):
        load_dataset(str(tmp_path / "m.jsonl"))
    head = tmp_path / "h"
    shutil.copytree(saved / "head", head)
    (head / "featcache.json").write_text(bomb)
    with pytest.raises(FeatcacheError, match="not valid JSON"):
        load_head(head)
