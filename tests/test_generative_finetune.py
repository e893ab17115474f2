"""LoRA on a generative BLIP-2's language model from cached query states (tiny random OPT and T5)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from featcache.extract import Compute, Storage, extract
from featcache.generative.finetune import (RECIPES, GenerativeConfig, finetune_generative, inject_lora,
                                           load_finetuned_generative)
from featcache.models.generative import load_generative
from featcache.models.tiny_generative import build_tiny_generative
from tests.test_finetune import colours  # noqa: F401 (the fixture: noisy solid colours, chance 1/3)

FAST = GenerativeConfig(lora_rank=8, lora_alpha=16, lora_dropout=0.0, prompt="Question: {} Answer:", lr=3e-3,
                        epochs=8, batch_size=8, amp=None, validation_fraction=0.2, patience=8)


@pytest.fixture(scope="module", params=["opt", "t5"])
def setup(request, colours, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp(f"gft_{request.param}")
    folder = build_tiny_generative(root / "model", request.param, seed=0)
    extract(colours, root / "c.h5", model=str(folder), progress=False, compute=Compute(device="cpu", workers=0),
            storage=Storage(store_dtype="float32"))
    return folder, root / "c.h5"


def test_learns_the_colour_task_and_reloads_to_the_same_predictions(setup, colours, tmp_path):  # noqa: F811
    from featcache.generative.zeroshot import zeroshot

    folder, cache = setup
    before = zeroshot(cache, str(folder), "rank", split="test")
    rep = finetune_generative(cache, tmp_path / "run", str(folder), FAST, device="cpu", progress=False)
    assert rep.test_accuracy >= 0.8 > float((before.pred == before.y).mean()) + 0.2, (rep, before.pred)
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == rep.epochs_run
    again = zeroshot(cache, str(tmp_path / "run" / "best"), "rank", split="test")  # the checkpoint, reloaded
    assert float((again.pred == again.y).mean()) == rep.test_accuracy
    gen = zeroshot(cache, str(tmp_path / "run" / "best"), "generate", split="test")
    assert gen.counts["exact"] >= 1, gen.settings  # the tuned model says the colour words themselves
    from featcache.generative.caption import CaptionSettings, caption, read_captions

    best, settings = str(tmp_path / "run" / "best"), CaptionSettings(num_beams=1, max_new_tokens=3)
    from_cache = read_captions(caption(best, tmp_path / "a.csv", cache=cache, settings=settings, progress=False))
    from_images = read_captions(caption(best, tmp_path / "b.csv", dataset=colours, settings=settings, limit=5,
                                        progress=False))  # the base checkpoint's processor
    assert all(from_images[k] == from_cache[k] for k in from_images)


def test_only_the_language_model_adapters_change(setup):
    folder, _ = setup
    lm = load_generative(str(folder), device="cpu")
    targets = inject_lora(lm, FAST)
    trainable = [n for n, p in lm.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("language_model.") and "lora_" in n for n in trainable)
    assert not any("vision_model" in n or "qformer" in n for n, _ in lm.model.named_modules() if "lora_" in n)
    assert {"fc1", "fc2"} <= set(targets) if lm.decoder_only else {"q", "v"} <= set(targets)


def test_resume_equals_an_uninterrupted_run(setup, tmp_path):
    folder, cache = setup
    cfg = replace(FAST, epochs=3, patience=9, schedule="cosine", t_max=30)  # a linear decay spans the epochs
    straight = finetune_generative(cache, tmp_path / "a", str(folder), cfg, device="cpu", progress=False)
    finetune_generative(cache, tmp_path / "b", str(folder), replace(cfg, epochs=2), device="cpu", progress=False)
    resumed = finetune_generative(cache, tmp_path / "b", str(folder), cfg, device="cpu", progress=False)
    assert resumed.resumed_from_epoch == 2
    from featcache.errors import FeatcacheError

    with pytest.raises(FeatcacheError, match=r"config\.lr differ.*--overwrite"):
        finetune_generative(cache, tmp_path / "b", str(folder), replace(cfg, lr=1e-3), device="cpu", progress=False)
    assert [round(h["train_loss"], 6) for h in resumed.history] == [round(h["train_loss"], 6) for h in straight.history]
    a = load_finetuned_generative(tmp_path / "a" / "best", device="cpu")
    b = load_finetuned_generative(tmp_path / "b" / "best", device="cpu")
    for (k, va), (_, vb) in zip(sorted(a.lm.state_dict().items()), sorted(b.lm.state_dict().items())):
        torch.testing.assert_close(va, vb, msg=k)


def test_recipes_hold_the_published_settings():
    paper, report = RECIPES["paper-baseline"], RECIPES["lora-vqa-report"]
    assert (paper.lora_rank, paper.l1, paper.prompt) == (1, 0.01, "Question: {} Answer:")
    assert (report.lora_rank, report.lora_alpha, report.lora_dropout, report.lr, report.schedule, report.epochs,
            report.batch_size, report.max_new_tokens) == (16, 32, 0.05, 1e-4, "linear", 3, 4, 4)
    assert report.prompt == "Question: {} Answer in one word:" and report.amp == "bfloat16"
    assert np.isclose(paper.lr, 1e-4)


def test_cli_finetune_generative_then_zeroshot_from_its_checkpoint(setup, tmp_path):
    import json

    from click.testing import CliRunner

    from cli import main

    folder, cache = setup
    runner = CliRunner()
    r = runner.invoke(main, ["finetune", "--generative", "--recipe", "lora-vqa-report", "--from-cache", str(cache),
                             "--model", str(folder), "--epochs", "2", "--lr", "3e-3", "--batch-size", "8",
                             "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    cfg = summary["config"]  # the recipe, with exactly the options given replaced
    assert (cfg["epochs"], cfg["lr"], cfg["batch_size"], cfg["lora_rank"], cfg["lora_alpha"], cfg["prompt"]) == \
        (2, 3e-3, 8, 16, 32, "Question: {} Answer in one word:")
    assert summary["epochs_run"] == 2 and 0 <= summary["test_rank_accuracy"] <= 1
    r = runner.invoke(main, ["zeroshot", str(cache), "--model", str(tmp_path / "run" / "best"), "--method", "rank",
                             "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "rep" / "results.json").read_text())["ranking"][0]
    assert row["accuracy"] == summary["test_rank_accuracy"]  # same prompt (the checkpoint's), same predictions
    for args, message in ((["--hidden", "64"], "belong to the classifier fine-tune"),
                          ([], "give --from-cache"),
                          (["--from-cache", str(cache)], "needs --model")):
        extra = [] if "--from-cache" in args or not args else ["--from-cache", str(cache), "--model", str(folder)]
        r = runner.invoke(main, ["finetune", "--generative", *extra, *args, "--out", str(tmp_path / "bad")])
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(main, ["finetune", "--recipe", "paper-baseline", "--from-cache", str(cache),
                             "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "belong to --generative" in r.output


def test_lora_on_the_qformer_too_learns_from_cached_vit_states(colours, tmp_path):  # noqa: F811
    from featcache.errors import FeatcacheError
    from featcache.generative.zeroshot import zeroshot

    folder = build_tiny_generative(tmp_path / "model", "opt", seed=0)
    extract(colours, tmp_path / "v.h5", model=str(folder), progress=False, compute=Compute(device="cpu", workers=0),
            storage=Storage(store_dtype="float32", store_vision=True))
    cfg = replace(FAST, lora_qformer=True)
    lm = load_generative(str(folder), device="cpu")
    targets = inject_lora(lm, cfg)
    trainable = [n for n, p in lm.model.named_parameters() if p.requires_grad]
    assert any(n.startswith("qformer.") for n in trainable) and any(n.startswith("language_model.") for n in trainable)
    assert all("lora_" in n for n in trainable) and "qformer.dense" in targets
    assert not any("vision_model" in n for n in trainable)
    rep = finetune_generative(tmp_path / "v.h5", tmp_path / "run", str(folder), cfg, device="cpu", progress=False)
    assert rep.test_accuracy >= 0.8
    again = zeroshot(tmp_path / "v.h5", str(tmp_path / "run" / "best"), "rank", split="test")  # reruns the Q-Former
    assert float((again.pred == again.y).mean()) == rep.test_accuracy
    extract(colours, tmp_path / "q.h5", model=str(folder), progress=False, compute=Compute(device="cpu", workers=0))
    with pytest.raises(FeatcacheError, match="--store-vision"):
        finetune_generative(tmp_path / "q.h5", tmp_path / "run2", str(folder), cfg, device="cpu", progress=False)
    with pytest.raises(FeatcacheError, match="--store-vision"):
        zeroshot(tmp_path / "q.h5", str(tmp_path / "run" / "best"), "rank")
