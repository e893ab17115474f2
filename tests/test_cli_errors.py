"""Every command, given bad input, ends with a message that names the item and the fix: never a traceback."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from tests.conftest import write_images


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_itm):
    """A small cache from the tiny model, a head fitted on it, and assorted bad files."""
    from featcache.datasets import Question, VQADataset
    from featcache.extract import Compute, extract
    from heads.sweep import fit_head

    root = tmp_path_factory.mktemp("world")
    paths = write_images(root / "imgs", 8)
    qs = [Question(p.stem, t, a, "train" if i < 6 else "test") for i, p in enumerate(paths)
          for t, a in (("what color?", ["red", "blue"][i % 2]), ("is it round?", ["yes", "no"][i % 2]))]
    extract(VQADataset("w", str(root), qs, {p.stem: str(p) for p in paths}), root / "c.h5", model=str(tiny_itm),
            progress=False, compute=Compute(device="cpu", workers=0))
    fit_head(root / "c.h5", "lr", "pooled").save(root / "head")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "short.csv").write_text(f"image,question\n{paths[0]},what?\n{paths[1]}\n")
    (root / "nocol.csv").write_text(f"picture,question\n{paths[0]},what?\n")
    (root / "bad.json").write_text("{not json")
    (root / "unknown_param.json").write_text(json.dumps({"lr": [{"Cee": 1}]}))
    (root / "unknown_head.json").write_text(json.dumps({"svm": [{}]}))
    (root / "latin1.csv").write_bytes("image,question,answer\nx.png,was für?,rot\n".encode("latin-1"))
    (root / "notcache.h5").write_text("plain text")
    (root / "empty").mkdir()
    Image.new("RGB", (8, 8)).save(root / "ok.png")
    return root


def cases(w, tiny, other):
    c, head, ok = w / "c.h5", w / "head", w / "ok.png"
    return {
        "predict bad image": ["predict", "--head", head, "--image", w / "corrupt.png", "--question", "what?",
                              "--model", tiny, "--device", "cpu"],
        "predict empty question": ["predict", "--head", head, "--image", ok, "--question", " ", "--model", tiny,
                                   "--device", "cpu"],
        "predict short pairs row": ["predict", "--head", head, "--pairs", w / "short.csv", "--model", tiny],
        "predict pairs without column": ["predict", "--head", head, "--pairs", w / "nocol.csv", "--model", tiny],
        "predict head is a cache": ["predict", "--head", c, "--image", ok, "--question", "what?"],
        "predict head is an empty folder": ["predict", "--head", w / "empty", "--image", ok, "--question", "what?"],
        "predict other model": ["predict", "--head", head, "--image", ok, "--question", "q", "--model", other],
        "sweep grid bad json": ["sweep", c, "--grid", w / "bad.json", "--out", w / "r1"],
        "sweep grid unknown param": ["sweep", c, "--grid", w / "unknown_param.json", "--out", w / "r2"],
        "sweep grid unknown head": ["sweep", c, "--grid", w / "unknown_head.json", "--out", w / "r3"],
        "sweep unknown head": ["sweep", c, "--heads", "svm", "--out", w / "r4"],
        "sweep unknown view": ["sweep", c, "--views", "wide", "--out", w / "r5"],
        "sweep unknown split": ["sweep", c, "--eval-split", "nope", "--out", w / "r6"],
        "fit unknown param": ["fit", c, "--head", "lr", "--param", "Cee=1", "--out", w / "h1"],
        "fit param without =": ["fit", c, "--head", "lr", "--param", "C", "--out", w / "h2"],
        "fit bad param value": ["fit", c, "--head", "lr", "--param", "C=-1", "--out", w / "h3"],
        "fit bad preset": ["fit", c, "--head", "mlp", "--param", "preset=huge", "--out", w / "h4"],
        "fit out is a file": ["fit", c, "--head", "lr", "--out", ok],
        "evaluate head is a cache": ["evaluate", c, c],
        "evaluate unknown split": ["evaluate", head, c, "--split", "nope"],
        "evaluate not a cache": ["evaluate", head, w / "notcache.h5"],
        "info not a cache": ["info", w / "notcache.h5"],
        "verify not a cache": ["verify", w / "notcache.h5"],
        "plot head without cache": ["plot", "umap", head, "--out", w / "u.png"],
        "extract short manifest row": ["extract", "--dataset", w / "short.csv", "--out", w / "x.h5", "--model", tiny],
        "extract latin-1 manifest": ["extract", "--dataset", w / "latin1.csv", "--out", w / "x.h5", "--model", tiny],
        "extract unknown dataset": ["extract", "--dataset", "imagenet", "--out", w / "x.h5", "--model", tiny],
        "extract bad max text length": ["extract", "--dataset", "easy-vqa", "--limit", "5", "--out", w / "x.h5",
                                        "--model", tiny, "--max-text-length", "0"],
        "finetune bad hidden": ["finetune", "--from-cache", c, "--model", tiny, "--out", w / "ft", "--hidden", "big"],
        "finetune cache without vision": ["finetune", "--from-cache", c, "--model", tiny, "--out", w / "ft2"],
        "convert not a pickle": ["convert", c, "--out", w / "conv"],
        "stats unknown dataset": ["stats", "imagenet", "--out", w / "st"],
    }


CASE_NAMES = list(cases(__import__("pathlib").Path("w"), "t", "o"))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gives_a_message_not_a_traceback(world, tiny_itm, tiny_itm_other, name):
    args = [str(a) for a in cases(world, str(tiny_itm), str(tiny_itm_other))[name]]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0, f"{name}: accepted\n{r.output}"
    assert isinstance(r.exception, SystemExit), f"{name}: raised {r.exception!r}\n{r.output}"
    assert "Traceback" not in r.output and "Error:" in r.output, r.output
    assert len(r.output.strip().splitlines()) <= 12, f"{name}: message too long\n{r.output}"
