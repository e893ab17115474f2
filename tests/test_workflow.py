"""The researcher's loop: sweep -> report -> evaluate -> predict -> plot, on a tiny-model cache."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import f1_score

from cli import main
from featcache import open_cache
from featcache.datasets import load_dataset
from featcache.errors import CacheFormatError
from featcache.extract import Compute, extract
from featcache.workflows.predict import predict
from heads.evaluate import evaluate
from heads.sweep import fit_head, run_sweep
from heads.trained import TrainedHead


@pytest.fixture(scope="module")
def easy_cache(tmp_path_factory, tiny_itm):
    from featcache.models.backbone import load_backbone

    path = tmp_path_factory.mktemp("wf") / "easy.h5"
    extract(load_dataset("easy-vqa", limit=600), path, model=load_backbone(str(tiny_itm), device="cpu"),
            progress=False, compute=Compute(workers=0))
    return path


def assert_png(path, min_side=200):
    with Image.open(path) as im:
        assert im.size[0] >= min_side and im.size[1] >= min_side


def test_sweep_writes_every_file_and_ranks(easy_cache, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["sweep", str(easy_cache), "--heads", "lr,lgbm", "--views", "pooled,sim",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("results.json", "report.md", "per_class.csv", "confusion.png", "best/tensors.safetensors", "best/featcache.json"):
        assert (out / name).stat().st_size > 0, name
    assert_png(out / "confusion.png")
    data = json.loads((out / "results.json").read_text())
    vals = [r["validation_accuracy"] for r in data["ranking"]]  # ranked on validation, never on the test split
    assert len(vals) == 4 and vals == sorted(vals, reverse=True) and data["chosen_on"] == "validation"
    report = (out / "report.md").read_text()
    assert "macro F1" in report and "command:" in report and "model_fingerprint" in report
    assert "RANDOM WEIGHTS" not in report  # a real (if tiny) folder checkpoint is not labelled random


def test_macro_f1_counts_every_class(easy_cache):
    with open_cache(easy_cache) as cache:
        X, y = cache.view("pooled", "train")
        Xt, yt = cache.view("pooled", "test")
    trained = fit_head(easy_cache, "lr", "pooled")
    m = evaluate(trained.head, Xt, yt)
    labels = sorted(set(y) | set(yt))
    pred = trained.head.predict(Xt)
    assert m["macro_f1"] == pytest.approx(f1_score(yt, pred, average="macro", labels=labels, zero_division=0))
    assert len(m["per_class"]) == len(labels)
    assert len(set(pred)) < len(labels)  # some classes are never predicted: they count as 0, not skipped


def test_sweep_api_touches_test_once_per_model(easy_cache):
    result = run_sweep(easy_cache, heads=["lr"], views=["pooled"], grid="small", progress=False)
    (row,) = result.rows
    assert row["candidates"] == 2 and row["params"] in ({"C": 0.1}, {"C": 1.0})
    assert isinstance(result.best, TrainedHead) and result.best.view == "pooled"


@pytest.mark.parametrize("kind,params", [("lr", {}), ("knn", {}), ("attnpool", {"max_epochs": 3})])
def test_predict_live_equals_prediction_from_cache(easy_cache, tiny_itm, kind, params):
    trained = fit_head(easy_cache, kind, "itc", params)
    ds = load_dataset("easy-vqa", limit=600)
    test_qs = [(i, q) for i, q in enumerate(ds.questions) if q.split == "test"][:12]
    with open_cache(easy_cache) as cache:
        X, _ = cache.view("itc", None)
    expected = trained.head.predict_proba(X[np.array([i for i, _ in test_qs])])
    pairs = [(ds.image_paths[q.image], q.text) for _, q in test_qs]
    got = predict(trained, pairs, model=str(tiny_itm), device="cpu", top_k=2)
    np.testing.assert_allclose([r["probability"] for r in got], expected.max(axis=1), rtol=1e-6)
    assert [r["answer"] for r in got] == list(trained.head.classes_[expected.argmax(axis=1)])


def test_head_refuses_features_of_another_model(easy_cache, tiny_itm_other, tmp_path):
    trained = fit_head(easy_cache, "lr", "pooled")
    ds = load_dataset("easy-vqa", limit=20)
    q = ds.questions[0]
    with pytest.raises(CacheFormatError, match="(?s)trained on features of.*model_fingerprint"):
        predict(trained, [(ds.image_paths[q.image], q.text)], model=str(tiny_itm_other), device="cpu")
    other_cache = tmp_path / "other.h5"
    extract(ds, other_cache, model=str(tiny_itm_other), progress=False, compute=Compute(workers=0))
    from heads.sweep import evaluate_head

    with pytest.raises(CacheFormatError, match="different model"):
        evaluate_head(trained, other_cache, "train")


def test_cli_fit_evaluate_predict_plot(easy_cache, tiny_itm, tmp_path):
    runner = CliRunner()
    head = tmp_path / "mlp"
    r = runner.invoke(main, ["fit", str(easy_cache), "--head", "mlp", "--view", "itc", "--param", "hidden_sizes=[32]",
                             "--param", "max_epochs=5", "--out", str(head)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["evaluate", str(head), str(easy_cache), "--split", "test", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0 and "accuracy" in r.output, r.output
    assert_png(tmp_path / "ev" / "confusion.png")
    ds = load_dataset("easy-vqa", limit=10)
    q = ds.questions[0]
    r = runner.invoke(main, ["predict", "--head", str(head), "--model", str(tiny_itm), "--image",
                             ds.image_paths[q.image], "--question", q.text, "--device", "cpu"])
    assert r.exit_code == 0 and "->" in r.output and "top-3" in r.output, r.output
    r = runner.invoke(main, ["plot", "umap", str(head), "--cache", str(easy_cache), "--per-class", "20",
                             "--out", str(tmp_path / "umap.png")])
    assert r.exit_code == 0, r.output
    assert_png(tmp_path / "umap.png")


@pytest.mark.parametrize("kind,param", [("knn", "k=5"), ("attnpool", "max_epochs=3")])
def test_cli_fit_evaluate_plot_the_token_heads(easy_cache, tmp_path, kind, param):
    runner = CliRunner()
    head = tmp_path / kind
    r = runner.invoke(main, ["fit", str(easy_cache), "--head", kind, "--view", "itc", "--param", param, "--out", str(head)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["evaluate", str(head), str(easy_cache), "--split", "test", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0 and "accuracy" in r.output, r.output
    r = runner.invoke(main, ["plot", "umap", str(head), "--cache", str(easy_cache), "--per-class", "20",
                             "--out", str(tmp_path / "umap.png")])
    assert r.exit_code == 0, r.output
    assert_png(tmp_path / "umap.png")


def test_demo_without_hub_shows_the_ways_on(tmp_path):
    r = CliRunner().invoke(main, ["demo", "--model", "Salesforce/blip2-itm-vit-g", "--out", str(tmp_path)])
    assert r.exit_code != 0
    assert "make demo MODEL=/path/to/checkpoint" in r.output and "make demo MODEL=tiny-random" in r.output


def test_demo_with_tiny_random_is_labelled(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    r = CliRunner().invoke(main, ["demo", "--model", "tiny-random", "--limit", "400", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert r.output.count("RANDOM") >= 2
    report = (tmp_path / "d" / "report" / "report.md").read_text()
    assert "RANDOM WEIGHTS" in report
    assert_png(tmp_path / "d" / "report" / "umap.png")


def test_demo_with_a_tiny_generative_model_puts_zeroshot_and_heads_in_one_report(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    r = CliRunner().invoke(main, ["demo", "--model", "tiny-random-opt", "--limit", "300", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert r.output.count("RANDOM") >= 2
    rows = json.loads((tmp_path / "d" / "report" / "results.json").read_text())["ranking"]
    # every head but the attention probe, which needs tokens (the image view is their mean)
    assert {"zeroshot-rank", "zeroshot-generate", "lr", "mlp", "lgbm", "knn"} == {row["head"] for row in rows}
    assert {row["view"] for row in rows if not row["head"].startswith("zeroshot")} == {"image"}
    assert "RANDOM WEIGHTS" in (tmp_path / "d" / "report" / "report.md").read_text()


def test_killed_sweep_leaves_no_mixed_report_and_resumes(easy_cache, tmp_path, monkeypatch):
    """A sweep interrupted midway leaves the previous report whole; rerunning resumes its finished fits
    and ends with the report an uninterrupted sweep writes."""
    import heads.sweep as sweep_mod
    import heads.sweep_fit as group_mod

    out = tmp_path / "report"
    first = sweep_mod.sweep_to_folder(easy_cache, out, heads=["lr"], views=["sim"], progress=False)
    before = (out / "results.json").read_text()
    settings = dict(heads=["lr", "lgbm"], views=["pooled"], progress=False, overwrite=True)  # (replacing a report)

    real_evaluate, calls = group_mod.evaluate, []

    def dying_evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after two candidate fits: the process "dies"
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(group_mod, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        sweep_mod.sweep_to_folder(easy_cache, out, **settings)
    assert (out / "results.json").read_text() == before  # the old report, untouched and unmixed
    assert (out.parent / "report.partial").is_dir()
    monkeypatch.setattr(group_mod, "evaluate", real_evaluate)

    resumed = sweep_mod.sweep_to_folder(easy_cache, out, **settings)
    assert resumed.note.startswith("resumed (2 of 5 fits")
    assert not (out.parent / "report.partial").exists()
    straight = sweep_mod.sweep_to_folder(easy_cache, tmp_path / "straight", **settings)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # noqa: E731
    assert strip(resumed.result.rows) == strip(straight.result.rows)
    assert first.note == "fresh" and {r["view"] for r in resumed.result.rows} == {"pooled"}


def test_unfinished_sweep_with_other_settings_starts_clean(easy_cache, tmp_path):
    from heads.sweep import sweep_to_folder

    out = tmp_path / "r"
    (tmp_path / "r.partial" / "state").mkdir(parents=True)
    (tmp_path / "r.partial" / "run.json").write_text('{"other": "settings"}')
    (tmp_path / "r.partial" / "state" / "fits.jsonl").write_text('{"key": "junk"}\n')
    rep = sweep_to_folder(easy_cache, out, heads=["lr"], views=["sim"], progress=False)
    assert rep.note.startswith("clean") and (out / "report.md").exists()
    r = CliRunner().invoke(main, ["sweep", str(easy_cache), "--heads", "lr", "--views", "sim", "--out", str(out),
                                  "--overwrite"])
    assert r.exit_code == 0 and "Warning" not in r.output and "warn" not in r.output.lower(), r.output


def test_predict_with_a_random_weight_fine_tune_is_labelled(tmp_path, monkeypatch):
    from featcache.models.backbone import load_backbone
    from featcache.finetune import FinetuneConfig, LiveSource, finetune

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ds = load_dataset("easy-vqa", limit=60)
    bb = load_backbone("tiny-random", device="cpu")
    finetune(LiveSource(ds, bb.preprocessor), tmp_path / "ft", bb, FinetuneConfig(epochs=1, hidden_sizes=(16,)),
             workers=0, progress=False)
    q = ds.questions[0]
    r = CliRunner().invoke(main, ["predict", "--head", str(tmp_path / "ft" / "best"), "--image",
                                  ds.image_paths[q.image], "--question", q.text, "--device", "cpu"])
    assert r.exit_code == 0 and "RANDOM WEIGHTS" in r.output and "->" in r.output, r.output
