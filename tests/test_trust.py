"""Loading a file never runs code: every path that reads a head or checkpoint refuses a crafted pickle."""

import json

import joblib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import main
from featcache.errors import FeatcacheError, UnsafeFileError
from featcache.cache.synthetic import write_synthetic_cache


class Evil:
    """Unpickling this creates the file `marker`: proof that loading ran code."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path):
    """A joblib file and a torch.save archive (shaped like a featcache 0.1 checkpoint) that run code on load."""
    marker = tmp_path / "PWNED"
    joblib.dump(Evil(marker), tmp_path / "head.joblib")
    torch.save({"format": "featcache-finetune-1", "payload": Evil(marker)}, tmp_path / "best.pt")
    return {"marker": marker, "joblib": tmp_path / "head.joblib", "pt": tmp_path / "best.pt"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("c") / "c.h5", 40, 10, 400, 100, query_tokens=4,
                                 query_dim=8, proj_dim=4)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_refused(result, marker):
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a traceback
    assert "--trust-pickle" in result.output and "arbitrary code" in result.output, result.output
    assert not marker.exists(), "loading ran the file's code"


def test_library_loaders_refuse_pickles(evil):
    from featcache.finetune.checkpoints import load_model, load_state
    from featcache.finetune import load_finetuned
    from featcache.workflows.convert import convert_legacy
    from heads.trained import load_head

    for call in (lambda: load_head(evil["joblib"]), lambda: load_head(evil["pt"]),
                 lambda: load_model(evil["pt"]), lambda: load_state(evil["pt"]),
                 lambda: load_finetuned(evil["pt"], model="unused"),
                 lambda: convert_legacy(evil["joblib"], evil["joblib"].parent / "safe")):
        with pytest.raises(UnsafeFileError, match="arbitrary code"):
            call()
    assert not evil["marker"].exists()


@pytest.mark.parametrize("kind", ["joblib", "pt"])
def test_every_cli_loading_path_refuses(evil, cache, tmp_path, kind):
    bad = evil[kind]
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    assert_refused(cli("predict", "--head", bad, "--image", img, "--question", "what?"), evil["marker"])
    assert_refused(cli("evaluate", bad, cache), evil["marker"])
    assert_refused(cli("plot", "umap", bad, "--cache", cache, "--out", tmp_path / "u.png"), evil["marker"])
    assert_refused(cli("convert", bad, "--out", tmp_path / "safe"), evil["marker"])


def test_finetune_refuses_a_pickled_init_head_and_resume_state(evil, tiny_itm, small_dataset, tmp_path):
    from featcache.models.backbone import load_backbone
    from featcache.finetune import FinetuneConfig, LiveSource, finetune

    bb = load_backbone(str(tiny_itm), device="cpu")
    cfg = FinetuneConfig(epochs=1, hidden_sizes=(8,))
    with pytest.raises(UnsafeFileError):
        finetune(LiveSource(small_dataset, bb.preprocessor), tmp_path / "a", bb, cfg, init_head=str(evil["joblib"]),
                 workers=0, progress=False)
    run = tmp_path / "b"
    run.mkdir()
    (run / "last.pt").write_bytes(evil["pt"].read_bytes())  # found in --out: an automatic resume must not load it
    with pytest.raises(UnsafeFileError):
        finetune(LiveSource(small_dataset, bb.preprocessor), run, load_backbone(str(tiny_itm), device="cpu"), cfg,
                 workers=0, progress=False)
    assert not evil["marker"].exists()


def test_tampered_safe_folders_are_refused_without_running_anything(cache, tmp_path, evil):
    from heads import LogisticRegressionHead
    from heads.trained import TrainedHead, load_head

    from featcache import open_cache

    with open_cache(cache) as c:
        X, y = c.view("pooled", "train")
        saved = TrainedHead.from_cache(LogisticRegressionHead(max_iter=5).fit(X, y), "pooled", c, "train").save(
            tmp_path / "head")
    assert load_head(saved).head.classes_ is not None
    meta = json.loads((saved / "featcache.json").read_text())
    (saved / "featcache.json").write_text(json.dumps({**meta, "head_class": "os.system"}))
    with pytest.raises(FeatcacheError, match="knows"):
        load_head(saved)
    (saved / "featcache.json").write_text(json.dumps(meta))
    (saved / "tensors.safetensors").write_bytes(evil["joblib"].read_bytes())  # a pickle under a safe name
    with pytest.raises(FeatcacheError, match="damaged"):
        load_head(saved)
    assert not evil["marker"].exists()


def test_trusted_legacy_head_loads_and_converts(cache, tmp_path):
    """--trust-pickle is the explicit way to read a featcache 0.1 joblib head; convert makes it safe."""
    from heads import MLPHead
    from heads.trained import TrainedHead, load_head

    from featcache import open_cache

    with open_cache(cache) as c:
        X, y = c.view("pooled", "train")
        Xt, _ = c.view("pooled", "test")
        trained = TrainedHead.from_cache(MLPHead(max_epochs=2).fit(X, y), "pooled", c, "train")
    joblib.dump(trained, tmp_path / "old.joblib")
    with pytest.raises(UnsafeFileError):
        load_head(tmp_path / "old.joblib")
    r = cli("convert", tmp_path / "old.joblib", "--out", tmp_path / "new", "--trust-pickle")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(load_head(tmp_path / "new").head.predict_proba(Xt), trained.head.predict_proba(Xt))
    r = cli("evaluate", tmp_path / "old.joblib", cache, "--trust-pickle", "--out", tmp_path / "ev")
    assert r.exit_code == 0, r.output
