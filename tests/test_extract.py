"""Extraction: parity with transformers, invariances, resume, refusals, bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from featcache import open_cache
from featcache.models.backbone import load_backbone
from featcache.cache import FORMAT_VERSION
from featcache.errors import CacheFormatError, DatasetError, ExtractError, ModelLoadError
from featcache.extract import Compute, Storage, extract


def read_all(path) -> tuple[dict, dict]:
    """Every dataset and attribute of a cache, for exact comparisons."""
    data = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: data.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
    return data, attrs


def assert_same_file(a, b):
    """Every dataset and attribute equal; `created` (the run's start time) may differ between runs."""
    da, aa = read_all(a)
    db, ab = read_all(b)
    aa.pop("created"), ab.pop("created")
    assert aa == ab
    assert da.keys() == db.keys()
    for k in da:
        np.testing.assert_array_equal(da[k], db[k], err_msg=k)


def test_preprocessing_equals_checkpoint_processor(tiny_itm, small_dataset, backbone):
    from transformers import BlipImageProcessorPil

    reference = BlipImageProcessorPil.from_pretrained(tiny_itm)
    for key in small_dataset.images()[:4]:
        img = small_dataset.open_image(key)
        expected = reference(images=img, return_tensors="np")["pixel_values"][0]
        np.testing.assert_array_equal(backbone.preprocessor(img), expected)


@pytest.mark.parametrize("store_dtype,rtol,atol", [("float32", 1e-5, 1e-6), ("float16", 1e-3, 1e-4)])
def test_features_equal_direct_transformers_forward(tiny_itm, small_dataset, backbone, tmp_path,
                                                    store_dtype, rtol, atol):
    """The cache holds what Blip2ForImageTextRetrieval's ITC branch computes for the same inputs."""
    from transformers import AutoTokenizer, Blip2ForImageTextRetrieval, BlipImageProcessorPil

    out = tmp_path / "c.h5"
    extract(small_dataset, out, model=backbone, progress=False, compute=Compute(batch_size=4, workers=0),
            storage=Storage(store_dtype=store_dtype))

    model = Blip2ForImageTextRetrieval.from_pretrained(tiny_itm).eval()
    processor = BlipImageProcessorPil.from_pretrained(tiny_itm)
    tokenizer = AutoTokenizer.from_pretrained(tiny_itm)
    qs = small_dataset.questions[:12]
    pixels = processor(images=[small_dataset.open_image(q.image) for q in qs], return_tensors="pt")["pixel_values"]
    tokens = tokenizer([q.text for q in qs], padding=True, return_tensors="pt")
    captured = []
    hook = model.qformer.register_forward_hook(lambda m, i, o: captured.append(o.last_hidden_state))
    with torch.no_grad():
        ref = model(pixel_values=pixels, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    use_image_text_matching_head=False)
    hook.remove()
    ref_query, ref_text_hidden = captured

    with open_cache(out) as cache:
        rows = cache.array("questions", "image_row")[:12]
        np.testing.assert_allclose(cache.array("images", "query")[rows], ref_query.numpy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(cache.array("images", "query_proj")[rows], ref.image_embeds.numpy(),
                                   rtol=rtol, atol=atol)
        np.testing.assert_allclose(cache.array("questions", "text_proj")[:12], ref.text_embeds.numpy(),
                                   rtol=rtol, atol=atol)
        np.testing.assert_allclose(cache.array("questions", "text_cls")[:12], ref_text_hidden[:, 0].numpy(),
                                   rtol=rtol, atol=atol)
        assert list(cache.strings("questions", "text")[:12]) == [q.text for q in qs]
        assert list(cache.strings("images", "key")[rows]) == [q.image for q in qs]


def test_batch_size_invariance(small_dataset, backbone, tmp_path):
    extract(small_dataset, tmp_path / "b1.h5", model=backbone, progress=False,
            compute=Compute(batch_size=1, workers=0), storage=Storage(store_dtype="float32"))
    extract(small_dataset, tmp_path / "b7.h5", model=backbone, progress=False,
            compute=Compute(batch_size=7, workers=2), storage=Storage(store_dtype="float32"))
    a, _ = read_all(tmp_path / "b1.h5")
    b, _ = read_all(tmp_path / "b7.h5")
    for name in ("images/query", "images/query_proj", "questions/text_proj", "questions/text_cls"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_each_image_and_text_encoded_once(small_dataset, tmp_path, tiny_itm):
    bb = load_backbone(str(tiny_itm), device="cpu")
    seen_images, seen_texts = [], []
    enc_i, enc_t = bb.encode_images, bb.encode_texts
    bb.encode_images = lambda px, **kw: (seen_images.append(len(px)), enc_i(px, **kw))[1]
    bb.encode_texts = lambda texts: (seen_texts.extend(texts), enc_t(texts))[1]
    report = extract(small_dataset, tmp_path / "c.h5", model=bb, progress=False,
                     compute=Compute(batch_size=3, workers=0))
    n_images = len(small_dataset.images())
    assert len(small_dataset.questions) > 3 * n_images  # many questions per image...
    assert sum(seen_images) == n_images == report.images_computed  # ...each image encoded once
    assert sorted(seen_texts) == sorted(set(q.text for q in small_dataset.questions))
    with open_cache(tmp_path / "c.h5") as cache:
        assert cache.n_images == n_images and cache.n_questions == len(small_dataset.questions)


def saved_images(parts: Path) -> int:
    """Images in the finished shards of a parts folder: a shard is finished when its file is in place
    (each shard's checksum sidecar, written just before, counts its images)."""
    return sum(json.loads(p.read_text())["n_images"] for p in parts.glob("shard-*.json")
               if p.with_suffix(".h5").exists())


def shard_plan(ds, shard_size):
    from featcache.extract.plan import plan_shards

    keys = sorted(ds.images())
    return plan_shards(keys, {k: f"{ds.image_paths[k]}|" for k in keys}, shard_size)


KILL_SCRIPT = """
import os, signal, sys
from featcache.models.backbone import load_backbone
from featcache.datasets import Question, VQADataset
import pickle
ds = pickle.load(open(sys.argv[1], "rb"))
bb = load_backbone(sys.argv[2], device="cpu")
calls = [0]
encode = bb.encode_images
def dying(px, **kw):
    calls[0] += 1
    if calls[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)  # as abrupt as it gets: no cleanup runs
    return encode(px, **kw)
bb.encode_images = dying
from featcache.extract.run import extract_with as extract  # (the flat settings: the caller's options string)
extract(ds, sys.argv[3], model=bb, batch_size=2, shard_size=2, workers=0, progress=False)
"""


def killed_extract(tmp_path, dataset, model, out, kill_at: int = 4, options: str = "batch_size=2, shard_size=2",
                   before_kill: str = "") -> subprocess.CompletedProcess:
    """`extract` in a child process that SIGKILLs itself at its `kill_at`-th encoded batch (after running
    `before_kill`): the most abrupt interruption there is, no cleanup runs."""
    import pickle

    pickle.dump(dataset, open(tmp_path / "ds.pkl", "wb"))
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT).replace("calls[0] == 4", f"calls[0] == {kill_at}")
                      .replace("batch_size=2, shard_size=2", options)
                      .replace("        os.kill(", f"        {before_kill or 'pass'}\n        os.kill("))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "ds.pkl"), str(model), str(out)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc


def test_resume_after_kill_gives_identical_file(small_dataset, tiny_itm, tmp_path):
    out = tmp_path / "resumed.h5"
    killed_extract(tmp_path, small_dataset, tiny_itm, out)
    parts = Path(str(out) + ".parts")
    saved = saved_images(parts)
    assert saved >= 2 and not out.exists()  # finished shards were committed, then death

    bb = load_backbone(str(tiny_itm), device="cpu")
    calls = []
    encode = bb.encode_images
    bb.encode_images = lambda px, **kw: (calls.append(len(px)), encode(px, **kw))[1]
    report = extract(small_dataset, out, model=bb, progress=False, compute=Compute(batch_size=2, workers=0),
                     storage=Storage(shard_size=2))
    assert report.resumed and sum(calls) == len(small_dataset.images()) - saved  # only what was missing
    assert not parts.exists()

    extract(small_dataset, tmp_path / "straight.h5", model=bb, progress=False,
            compute=Compute(batch_size=2, workers=0), storage=Storage(shard_size=2))
    assert_same_file(out, tmp_path / "straight.h5")


def test_ctrl_c_keeps_finished_shards(small_dataset, tiny_itm, tmp_path):
    bb = load_backbone(str(tiny_itm), device="cpu")
    encode, calls = bb.encode_images, [0]

    def interrupted(px, **kw):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return encode(px, **kw)

    bb.encode_images = interrupted
    with pytest.raises(ExtractError, match="interrupted: .* run the same command"):
        extract(small_dataset, tmp_path / "c.h5", model=bb, progress=False, compute=Compute(batch_size=2, workers=0),
                storage=Storage(shard_size=2))
    saved = saved_images(tmp_path / "c.h5.parts")
    assert saved >= 2
    bb.encode_images = encode
    assert extract(small_dataset, tmp_path / "c.h5", model=bb, progress=False,
                   compute=Compute(batch_size=2, workers=0), storage=Storage(shard_size=2)).images_computed == len(small_dataset.images()) - saved


def test_other_model_refused(small_dataset, tiny_itm, tiny_itm_other, tmp_path):
    out = tmp_path / "c.h5"
    extract(small_dataset, out, model=str(tiny_itm), progress=False, compute=Compute(workers=0))
    other = load_backbone(str(tiny_itm_other), device="cpu")
    assert other.fingerprint != load_backbone(str(tiny_itm)).fingerprint
    with pytest.raises(ExtractError, match="(?s)model_fingerprint.*--overwrite"):
        extract(small_dataset, out, model=other, progress=False, compute=Compute(workers=0))
    with pytest.raises(CacheFormatError, match="different model"):
        open_cache(out, expect=other.provenance())
    again = extract(small_dataset, out, model=str(tiny_itm), progress=False, compute=Compute(workers=0))
    assert again.already_complete
    extract(small_dataset, out, model=other, progress=False, compute=Compute(workers=0),
            storage=Storage(overwrite=True))
    with open_cache(out, expect=other.provenance()) as cache:
        assert cache.attrs["model_fingerprint"] == other.fingerprint


def test_unfinished_run_with_other_model_refused(small_dataset, tiny_itm, tiny_itm_other, tmp_path):
    bb = load_backbone(str(tiny_itm), device="cpu")
    encode = bb.encode_images
    calls = []
    bb.encode_images = lambda px, **kw: (calls.append(1), (_ for _ in ()).throw(KeyboardInterrupt) if len(calls) == 3
                                         else encode(px, **kw))[1]
    with pytest.raises(ExtractError, match="interrupted"):
        extract(small_dataset, tmp_path / "c.h5", model=bb, progress=False, compute=Compute(batch_size=2, workers=0),
                storage=Storage(shard_size=2))
    with pytest.raises(ExtractError, match="(?s)unfinished run .* another model"):
        extract(small_dataset, tmp_path / "c.h5", model=str(tiny_itm_other), progress=False,
                compute=Compute(workers=0))


def test_reader_refuses_unknown_format_and_non_cache(small_dataset, backbone, tmp_path):
    out = tmp_path / "c.h5"
    extract(small_dataset, out, model=backbone, progress=False, compute=Compute(workers=0))
    with h5py.File(out, "a") as f:
        f.attrs["featcache_format"] = FORMAT_VERSION + 1
    with pytest.raises(CacheFormatError, match=f"format {FORMAT_VERSION + 1}.*reads format {FORMAT_VERSION}"):
        open_cache(out)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CacheFormatError, match="not an HDF5 file"):
        open_cache(tmp_path / "junk.h5")
    with pytest.raises(CacheFormatError, match="does not exist"):
        open_cache(tmp_path / "nope.h5")


def test_missing_image_named_then_skip_bad_records_it(small_dataset, backbone, tmp_path):
    gone = small_dataset.images()[2]
    os.remove(small_dataset.image_paths[gone])
    with pytest.raises(ExtractError, match=f"1 image file.*not found.*{gone}.*--skip-bad"):
        extract(small_dataset, tmp_path / "c.h5", model=backbone, progress=False, compute=Compute(workers=0))
    report = extract(small_dataset, tmp_path / "c.h5", model=backbone, progress=False, compute=Compute(workers=0),
                     storage=Storage(skip_bad=True))
    assert report.failed_images == [gone]
    with open_cache(tmp_path / "c.h5") as cache:
        errors = cache.strings("images", "error")
        assert "not found" in errors[sorted(small_dataset.images()).index(gone)]  # images in key order
        q_errors = cache.strings("questions", "error")
        bad_q = [i for i, q in enumerate(small_dataset.questions) if q.image == gone]
        assert all(q_errors[i].startswith("image failed") for i in bad_q)
        assert sum(e != "" for e in q_errors) == len(bad_q)


def test_corrupt_image_keeps_finished_work(small_dataset, backbone, tmp_path):
    keys = small_dataset.images()
    bad = keys[7]
    Path(small_dataset.image_paths[bad]).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "c.h5"
    with pytest.raises(ExtractError, match=f"cannot decode image .*{Path(small_dataset.image_paths[bad]).name}"):
        extract(small_dataset, out, model=backbone, progress=False, compute=Compute(batch_size=2, workers=1),
                storage=Storage(shard_size=2))
    saved = saved_images(Path(str(out) + ".parts"))
    assert saved >= 2  # the shards finished before the bad image are kept
    report = extract(small_dataset, out, model=backbone, progress=False, compute=Compute(batch_size=2, workers=1),
                     storage=Storage(shard_size=2, skip_bad=True))
    assert report.resumed and report.failed_images == [bad] and report.images_computed == len(keys) - saved - 1


def test_empty_question_and_bad_paths(small_dataset, backbone, tmp_path):
    qs = list(small_dataset.questions)
    qs[5] = replace(qs[5], text="  ")
    ds = replace(small_dataset, questions=qs)
    with pytest.raises(ExtractError, match="question row 5 .* empty"):
        extract(ds, tmp_path / "c.h5", model=backbone, progress=False, compute=Compute(workers=0))
    report = extract(ds, tmp_path / "c.h5", model=backbone, progress=False, compute=Compute(workers=0),
                     storage=Storage(skip_bad=True))
    assert report.failed_questions == [5]
    # --out's folders are made, as `--out runs/quick/c.h5` expects; a parent that is a file is refused
    extract(small_dataset, tmp_path / "new" / "dir" / "c.h5", model=backbone, progress=False,
            compute=Compute(workers=0))
    assert (tmp_path / "new" / "dir" / "c.h5").is_file()
    (tmp_path / "afile").write_text("")
    with pytest.raises(ExtractError, match="is not a folder"):
        extract(small_dataset, tmp_path / "afile" / "c.h5", model=backbone, progress=False)
    with pytest.raises(ExtractError, match="is a folder"):
        extract(small_dataset, tmp_path, model=backbone, progress=False)


def test_unknown_dataset_and_bad_manifest(tmp_path):
    from featcache.datasets import load_dataset

    with pytest.raises(DatasetError, match="unknown dataset 'nope'.*easy-vqa"):
        load_dataset("nope")
    (tmp_path / "m.csv").write_text("img,question\na.png,what?\n")
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['answer', 'image'\]"):
        load_dataset(str(tmp_path / "m.csv"))


def test_manifest_csv_and_jsonl(tmp_path, backbone):
    from conftest import write_images

    from featcache.datasets import load_dataset

    write_images(tmp_path / "pics", 3)
    (tmp_path / "abo.csv").write_text("image_name,question,answer\nimg0.png,what is it?,cat\n"
                                      "img1.jpg,what is it?,dog\nimg0.png,is it red?,no\n")
    ds = load_dataset(str(tmp_path / "abo.csv"), images=str(tmp_path / "pics"))
    assert ds.images() == ["img0.png", "img1.jpg"] and ds.missing_images() == []
    assert {q.split for q in ds.questions} == {"all"}
    (tmp_path / "m.jsonl").write_text('{"image": "pics/img2", "question": "q?", "answer": "a", "split": "test"}\n')
    ds2 = load_dataset(str(tmp_path / "m.jsonl"))
    assert ds2.image_paths["pics/img2"].endswith("img2.png")
    extract(ds, tmp_path / "c.h5", model=backbone, progress=False, compute=Compute(workers=0))


def test_generative_checkpoint_writes_query_features_without_language_model(tiny_opt, small_dataset, tmp_path):
    bb = load_backbone(str(tiny_opt), device="cpu")
    assert not bb.has_text
    names = {type(m).__name__ for m in bb.model.modules()}
    assert not any("OPT" in n or "T5" in n for n in names)  # the language model was never built
    n_params = sum(p.numel() for p in bb.model.parameters())
    core = sum(p.numel() for part in (bb.model.vision_model, bb.model.qformer) for p in part.parameters())
    assert n_params == core + bb.model.query_tokens.numel()
    extract(small_dataset, tmp_path / "g.h5", model=bb, progress=False, compute=Compute(workers=0))
    with open_cache(tmp_path / "g.h5") as cache:
        assert cache.attrs["model_class"] == "Blip2ForConditionalGeneration"
        assert "query" in cache.images and "query_proj" not in cache.images
        assert not cache.has_text and cache.attrs["has_text"] is False or cache.attrs["has_text"] == 0
        assert cache.images["query"].shape == (len(small_dataset.images()), 32, 32)


def test_hub_unreachable_message():
    with pytest.raises(ModelLoadError, match=r"(?s)'Salesforce/blip2-nonexistent'.*--model /path/to/folder.*tiny-random"):
        load_backbone("Salesforce/blip2-nonexistent", device="cpu")


def test_cli_end_to_end_on_easy_vqa(tiny_itm, tmp_path):
    from click.testing import CliRunner

    from cli import main

    out = tmp_path / "x.h5"
    runner = CliRunner()
    result = runner.invoke(main, ["extract", "--dataset", "easy-vqa", "--model", str(tiny_itm), "--limit", "60",
                                  "--out", str(out), "--batch-size", "4", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "questions" in result.output
    result = runner.invoke(main, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "easy-vqa" in result.output and "/images/query " in result.output and "questions: 60" in result.output
    again = runner.invoke(main, ["extract", "--dataset", "easy-vqa", "--model", str(tiny_itm), "--limit", "60",
                                 "--out", str(out)])
    assert again.exit_code == 0 and "already complete" in again.output
    bad = runner.invoke(main, ["extract", "--dataset", "nope", "--model", str(tiny_itm), "--out", str(out)])
    assert bad.exit_code != 0 and "unknown dataset" in bad.output and "Traceback" not in bad.output


def test_shard_whose_images_all_fail_is_recorded(small_dataset, backbone, tmp_path):
    keys = sorted(small_dataset.images())
    shard = next(s for s in shard_plan(small_dataset, 2) if len(s.keys) >= 2)
    for k in shard.keys:  # a whole shard
        os.remove(small_dataset.image_paths[k])
    report = extract(small_dataset, tmp_path / "c.h5", model=backbone, progress=False,
                     compute=Compute(batch_size=2, workers=0),
                     storage=Storage(shard_size=2, skip_bad=True, store_vision=True))
    assert report.failed_images == list(shard.keys)
    other = 0 if shard.start else shard.stop
    with open_cache(tmp_path / "c.h5") as cache:
        for name in ("query", "query_proj", "vision"):
            rows = cache.array("images", name)
            assert rows.shape[0] == len(keys) and not rows[shard.start:shard.stop].any() and rows[other].any(), name


def test_the_flat_keywords_are_refused_with_the_group_each_moved_to(small_dataset, tmp_path):
    from featcache.extract import Compute

    with pytest.raises(ExtractError, match=r"workers= -> compute=Compute\(workers=...\).*"):
        extract(small_dataset, tmp_path / "c.h5", model="tiny-random", workers=0)
    with pytest.raises(ExtractError, match=r"features='multimodal' -> features=Features\(kind='multimodal'\)"):
        extract(small_dataset, tmp_path / "c.h5", model="tiny-random", features="multimodal")
    with pytest.raises(ExtractError, match="storage= must be a featcache.extract.Storage"):
        extract(small_dataset, tmp_path / "c.h5", model="tiny-random", storage=Compute())
