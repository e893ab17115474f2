"""The second attack pass: work is not lost at the last step, nothing hangs on a FIFO, one bad row loses no other
answer. Each case ends in one message naming the item and the fix."""

import csv
import errno
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from featcache.errors import FeatcacheError
from featcache.outputs import check_output_file, write_or_rescue
from tests.conftest import write_images


@pytest.fixture(autouse=True)
def no_hang():
    """A case that blocks (a FIFO opened for reading) fails after 60 s instead of hanging the suite."""
    def fail(*_):
        raise TimeoutError("hung")
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_itm):
    from featcache.datasets import Question, VQADataset
    from featcache.extract import Compute, extract
    from heads.sweep import fit_head

    root = tmp_path_factory.mktemp("hard")
    paths = write_images(root / "imgs", 6)
    qs = [Question(p.stem, "what color?", ["red", "blue"][i % 2], "train" if i < 4 else "test")
          for i, p in enumerate(paths)]
    extract(VQADataset("h", str(root), qs, {p.stem: str(p) for p in paths}), root / "c.h5", model=str(tiny_itm),
            progress=False, compute=Compute(device="cpu", workers=0))
    fit_head(root / "c.h5", "lr", "pooled").save(root / "head")
    os.mkfifo(root / "fifo.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "a_folder.png").mkdir()
    return root, paths


def test_one_bad_row_of_pairs_loses_no_other_answer(world, tiny_itm):
    root, paths = world
    bad = [root / "missing.png", root / "a_folder.png", root / "fifo.png", root / "corrupt.png"]
    rows = [paths[0], bad[0], paths[1], bad[1], bad[2], paths[2], bad[3]]
    with (root / "pairs.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "question"])
        w.writerows([str(p), "what color?"] for p in rows)
    runner = CliRunner()
    base = ["predict", "--head", str(root / "head"), "--pairs", str(root / "pairs.csv"), "--model", str(tiny_itm),
            "--device", "cpu"]
    r = runner.invoke(main, base)
    assert r.exit_code == 1 and "--skip-bad" in r.output and "Traceback" not in r.output, r.output
    assert "3 of the images cannot be read" in r.output  # found before the model loads; corrupt is found decoding
    r = runner.invoke(main, base + ["--skip-bad", "--out", str(root / "pred.csv")])
    assert r.exit_code == 0 and "4 of 7 rows not answered" in r.output, r.output
    got = list(csv.DictReader((root / "pred.csv").open()))
    assert [Path(g["image"]).name for g in got] == [p.name for p in rows]
    assert all(g["answer"] and not g["error"] for g in got if Path(g["image"]) in paths)
    errors = {Path(g["image"]).name: g["error"] for g in got if g["error"]}
    assert set(errors) == {p.name for p in bad}
    assert "not found" in errors["missing.png"] and "not a regular file" in errors["fifo.png"]
    assert "damaged or not an image" in errors["corrupt.png"]
    alone = runner.invoke(main, ["predict", "--head", str(root / "head"), "--image", str(paths[1]), "--question",
                                 "what color?", "--model", str(tiny_itm), "--device", "cpu"])
    answered = next(g for g in got if Path(g["image"]) == paths[1])
    assert f"-> {answered['answer']} ({float(answered['probability']):.2f})" in alone.output


def test_a_fifo_given_as_an_image_is_refused_not_waited_on(world, tiny_itm):
    root, _ = world
    r = CliRunner().invoke(main, ["predict", "--head", str(root / "head"), "--image", str(root / "fifo.png"),
                                  "--question", "what color?", "--model", str(tiny_itm), "--device", "cpu"])
    assert r.exit_code == 1 and "not a regular file" in r.output and "Traceback" not in r.output, r.output


def test_caption_checks_its_output_and_references_before_computing(world, tiny_opt, tmp_path):
    root, _ = world
    (tmp_path / "a_file").write_text("x")
    r = CliRunner().invoke(main, ["caption", str(root / "c.h5"), "--model", str(tiny_opt), "--device", "cpu",
                                  "--out", str(tmp_path / "a_file" / "caps.csv")])
    assert r.exit_code == 1 and "nothing was computed" in r.output and "Traceback" not in r.output, r.output
    (tmp_path / "refs.csv").write_bytes("image,caption\nx,ein schönes Bild\n".encode("latin-1"))
    r = CliRunner().invoke(main, ["caption", str(root / "c.h5"), "--model", str(tiny_opt), "--device", "cpu",
                                  "--out", str(tmp_path / "caps.csv"), "--references", str(tmp_path / "refs.csv")])
    assert r.exit_code == 1 and "refs.csv" in r.output and not (tmp_path / "caps.csv").exists(), r.output


def test_a_final_write_that_fails_keeps_the_work_elsewhere(tmp_path):
    calls = []

    def write(target: Path) -> None:
        calls.append(target)
        if len(calls) == 1:
            target.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
        target.write_text("every caption")

    with pytest.raises(FeatcacheError, match="No space left on device.*saved to .* instead") as info:
        write_or_rescue(tmp_path / "caps.csv", write, "12 captions")
    rescued = Path(str(info.value).split("saved to ")[1].split(" instead")[0])
    assert rescued.read_text() == "every caption" and not list(tmp_path.iterdir())  # no .partial left behind
    rescued.unlink()
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(FeatcacheError, match="is a folder"):
        check_output_file(tmp_path / "dir.csv")
    assert check_output_file(tmp_path / "new" / "out.csv") == tmp_path / "new" / "out.csv"


def test_decompression_bombs_are_named(tmp_path):
    from featcache.images import ImageLoadError, load_image

    big = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(big)  # 400 Mpx, a few KB on disk: more than twice PIL's limit
    with pytest.raises(ImageLoadError, match="too large to decode safely"):
        load_image(big)


def test_a_reference_caption_with_an_unquoted_comma_is_named_not_cut(tmp_path):
    from featcache.generative.caption import read_captions

    (tmp_path / "refs.csv").write_text("image,caption\na,a cat, asleep on a mat\n")
    with pytest.raises(FeatcacheError, match=r"refs.csv:2: more fields than the header"):
        read_captions(tmp_path / "refs.csv")
    (tmp_path / "ok.csv").write_text('image,caption\na,"a cat, asleep on a mat"\n')
    assert read_captions(tmp_path / "ok.csv") == {"a": ["a cat, asleep on a mat"]}


def test_values_a_user_can_type_are_checked_by_click(world, tiny_itm):
    root, paths = world
    c, head = str(root / "c.h5"), str(root / "head")
    cases = [
        ["zeroshot", c, "--model", "tiny-random-opt", "--num-beams", "0", "--out", str(root / "z")],
        ["zeroshot", c, "--model", "tiny-random-opt", "--max-new-tokens", "-1", "--out", str(root / "z")],
        ["zeroshot", c, "--model", "tiny-random-opt", "--limit", "0", "--out", str(root / "z")],
        ["caption", c, "--model", "tiny-random-opt", "--temperature", "0", "--out", str(root / "c.csv")],
        ["caption", c, "--model", "tiny-random-opt", "--top-p", "5", "--out", str(root / "c.csv")],
        ["caption", c, "--model", "tiny-random-opt", "--batch-size", "0", "--out", str(root / "c.csv")],
        ["finetune", "--from-cache", c, "--model", str(tiny_itm), "--out", str(root / "f"), "--epochs", "0"],
        ["finetune", "--from-cache", c, "--model", str(tiny_itm), "--out", str(root / "f"), "--patience", "0"],
        ["finetune", "--from-cache", c, "--model", str(tiny_itm), "--out", str(root / "f"), "--lora-rank", "0"],
        ["finetune", "--from-cache", c, "--model", str(tiny_itm), "--out", str(root / "f"), "--lr", "-1"],
        ["sweep", c, "--jobs", "0", "--out", str(root / "s")],
        ["sweep", c, "--validation-fraction", "1.5", "--out", str(root / "s")],
        ["predict", "--head", head, "--image", str(paths[0]), "--question", "q", "--top-k", "0"],
        ["extract", "--dataset", "easy-vqa", "--out", str(root / "x.h5"), "--batch-size", "0"],
    ]
    for args in cases:
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "Invalid value" in r.output and "Traceback" not in r.output, (args, r.output)


@pytest.mark.parametrize("prompt", ["{} {x}", "{} {", "{} {}", "no slot"])
def test_prompts_with_other_slots_are_refused(prompt):
    from featcache.errors import ZeroShotError
    from featcache.generative.rank import check_prompt

    with pytest.raises(ZeroShotError, match="exactly one"):
        check_prompt(prompt)
    assert check_prompt("Question: {} Answer {{in braces}}:") == "Question: {} Answer {{in braces}}:"


def test_a_question_longer_than_the_language_model_is_refused_before_compute(tmp_path):
    from featcache.datasets import Question, VQADataset
    from featcache.extract import Compute, extract
    from featcache.generative.zeroshot import zeroshot

    paths = write_images(tmp_path / "imgs", 2)
    long = "what " * 2100 + "is it?"
    qs = [Question(p.stem, q, "red", "test") for p in paths for q in ("what color?", long)]
    extract(VQADataset("long", str(tmp_path), qs, {p.stem: str(p) for p in paths}), tmp_path / "g.h5",
            model="tiny-random-opt", progress=False, compute=Compute(device="cpu", workers=0, max_text_length=4096))
    for method in ("rank", "generate"):
        with pytest.raises(FeatcacheError, match=r"1 distinct question is too long for .* 2048 positions"):
            zeroshot(tmp_path / "g.h5", "tiny-random-opt", method=method, device="cpu")


def test_a_save_cut_between_its_two_renames_is_found_again(tmp_path):
    from featcache.safe_folder import load_folder, recover_folder, save_folder

    save_folder(tmp_path / "last", {"format": "x", "epoch": 1}, {})
    save_folder(tmp_path / "new", {"format": "x", "epoch": 2}, {})
    os.replace(tmp_path / "last", tmp_path / ".last.old-1")  # the kill: old moved aside, new not yet in place
    os.replace(tmp_path / "new", tmp_path / ".last.tmp-1")
    assert recover_folder(tmp_path / "last") == tmp_path / "last"
    assert load_folder(tmp_path / "last", ("x",), "state")[0]["epoch"] == 2


def test_nan_features_are_refused_not_scored(world):
    import h5py
    import numpy as np

    from featcache.errors import NonFiniteError
    from heads.trained import load_head

    root, _ = world
    bad = root / "nan.h5"
    import shutil

    shutil.copy(root / "c.h5", bad)
    with h5py.File(bad, "r+") as f:
        query = f["images"]["query"]
        block = query[0:1]
        block[...] = np.nan
        query[0:1] = block
        if "query_pooled" in f["images"]:  # (what the writer would have stored beside it)
            from featcache.cache.pooling import pool_tokens

            f["images"]["query_pooled"][0:1] = pool_tokens(block)
    head = load_head(root / "head")
    from featcache import open_cache

    with open_cache(bad) as cache:
        X, _ = cache.view(head.view, "train")
        with pytest.raises(NonFiniteError, match="NaN or inf"):
            head.head.predict_proba(X)
    r = CliRunner().invoke(main, ["evaluate", str(root / "head"), str(bad), "--split", "train"])
    assert r.exit_code == 1 and "NaN or inf" in r.output and "Traceback" not in r.output, r.output


def test_one_picture_named_three_ways_is_one_image(tmp_path):
    from featcache.datasets import load_dataset

    write_images(tmp_path / "img", 1)
    name = next((tmp_path / "img").iterdir()).name
    (tmp_path / "m.csv").write_text(f"image,question,answer,split\nimg/{name},q,a,train\n./img/{name},q,b,train\n"
                                    f"img//{name},q,c,test\n")
    ds = load_dataset(str(tmp_path / "m.csv"))
    assert len(ds.images()) == 1 and any("more than one split" in w for w in ds.warnings)


def test_an_empty_answer_never_matches_empty_output():
    from featcache.generative.answers import match_answers

    found, matched = match_answers(["", "...", "Red."], ["", "red", "blue"])
    assert found == [None, None, "red"] and matched.tolist() == [False, False, True]


def test_a_full_disk_during_merge_is_one_line_and_keeps_the_parts(tmp_path, tiny_itm):
    """A real full disk (a 4 MB tmpfs, where the test may mount one): before the merge, and in the middle of it."""
    import shutil
    import subprocess

    from featcache.datasets import Question, VQADataset
    from featcache.extract import Compute, Spread, Storage, extract

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        paths = write_images(tmp_path / "imgs", 200, size=(32, 32))
        qs = [Question(p.stem, "what?", "ab"[i % 2], "train") for i, p in enumerate(paths)]
        extract(VQADataset("fd", str(tmp_path), qs, {p.stem: str(p) for p in paths}), tmp_path / "c.h5",
                model=str(tiny_itm), progress=False, compute=Compute(device="cpu", workers=0),
                storage=Storage(store_dtype="float32"), spread=Spread(merge_output=False))
        parts = tmp_path / "c.h5.parts"
        backup = tmp_path / "backup"
        shutil.copytree(parts, backup)
        for fill_kb in (3500, 0):  # refused before writing, then written
            (small / "fill").write_bytes(b"\0" * fill_kb * 1024)
            r = CliRunner().invoke(main, ["merge", str(parts), "--out", str(small / "out.h5")])
            (small / "fill").unlink()
            if fill_kb == 0:
                assert r.exit_code == 0 and (small / "out.h5").is_file(), r.output
                break
            assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
            assert ("no space left" in r.output or "failed" in r.output) and "0.00 GB" not in r.output, r.output
            assert not (small / "out.h5.tmp").exists() and sorted(os.listdir(parts)) == sorted(os.listdir(backup))
    finally:
        subprocess.run(["umount", str(small)])


def test_a_merge_that_crashes_mid_write_is_one_line_and_keeps_the_parts(monkeypatch, tmp_path):
    """HDF5 meeting a full disk mid-write can kill the interpreter: the merge runs in a child, so a crash there is
    reported, and the parts folder stays whole."""
    import signal as sig

    from featcache.cache import merged as parts_module
    from featcache.errors import ExtractError

    src = tmp_path / "p"
    from featcache.extract import Compute, Spread, extract
    from featcache.datasets import Question, VQADataset

    paths = write_images(tmp_path / "imgs", 4)
    src.mkdir()
    extract(VQADataset("m", str(tmp_path), [Question(p.stem, "q?", "a", "train") for p in paths],
                       {p.stem: str(p) for p in paths}),
            src / "c.h5", model="tiny-random", progress=False, compute=Compute(device="cpu", workers=0),
            spread=Spread(merge_output=False))
    before = sorted(os.listdir(src / "c.h5.parts"))
    monkeypatch.setattr(parts_module, "write_merged", lambda *a: os.kill(os.getpid(), sig.SIGKILL))
    with pytest.raises(ExtractError, match=r"status -9.*The parts folder is intact"):
        parts_module.merge(src / "c.h5.parts", tmp_path / "out.h5")
    def refuse(*a):
        raise ExtractError("a reason")
    monkeypatch.setattr(parts_module, "write_merged", refuse)
    with pytest.raises(ExtractError, match="a reason"):
        parts_module.merge(src / "c.h5.parts", tmp_path / "out.h5")
    assert sorted(os.listdir(src / "c.h5.parts")) == before and not (tmp_path / "out.h5").exists()
