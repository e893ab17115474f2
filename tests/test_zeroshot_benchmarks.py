"""Zero-shot on the benchmarks: the published BLIP-2 setting (LAVIS's) recorded in the report, the generated
text scored by the official evaluator (equal to `featcache score vqa` on the run's own results file), and A-OKVQA
multiple choice ranked over each question's own choices."""

import json

import pytest
from click.testing import CliRunner

from cli import main
from featcache.models.tiny_generative import build_tiny_generative
from tests.test_gqa_aokvqa import write_aokvqa
from tests.test_vqav2 import write_vqav2


@pytest.fixture(scope="module")
def tiny_opt_generative(tmp_path_factory):
    return build_tiny_generative(tmp_path_factory.mktemp("gen") / "opt", "opt", seed=0)


def extract(runner, dataset, root, model, out):
    r = runner.invoke(main, ["extract", "--dataset", dataset, "--root", str(root), "--model", str(model),
                             "--out", str(out), "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0, r.output


def test_the_blip2_preset_is_recorded_and_its_answers_scored_by_the_evaluator(tiny_opt_generative, tmp_path):
    root = write_vqav2(tmp_path / "VQA", n_images=(3, 6, 0))
    runner = CliRunner()
    extract(runner, "vqav2", root, tiny_opt_generative, tmp_path / "c.h5")
    out = tmp_path / "zs"
    r = runner.invoke(main, ["zeroshot", str(tmp_path / "c.h5"), "--model", str(tiny_opt_generative), "--preset",
                             "blip2", "--split", "val", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "prompt template: 'Question: {} Short answer:'" in r.output and "'num_beams': 5" in r.output
    results = json.loads((out / "results.json").read_text())
    settings = results["zeroshot"]
    assert settings["preset"] == "blip2" and settings["max_new_tokens"] == 10 and settings["min_length"] == 1
    assert settings["length_penalty"] == 0.0 and settings["lemmatizer"] == "none"  # OPT: predict_answers' default
    submitted = json.loads((out / "submission.json").read_text())
    assert len(submitted) == 12 and all(isinstance(s["question_id"], int) for s in submitted)
    r = runner.invoke(main, ["score", "vqa", str(out / "submission.json"), "--out", str(tmp_path / "s.json"),
                             "--annotations", str(root / "Annotations" / "v2_mscoco_val2014_annotations.json")])
    assert r.exit_code == 0, r.output
    official = json.loads((tmp_path / "s.json").read_text())["accuracy"]
    reported = results["evaluation"]["benchmark"]
    assert reported["overall"] == official["overall"] and reported["perAnswerType"] == official["perAnswerType"]


def test_aokvqa_multiple_choice_ranks_each_questions_choices(tiny_opt_generative, tmp_path):
    root = write_aokvqa(tmp_path / "A")
    runner = CliRunner()
    extract(runner, "aokvqa", root, tiny_opt_generative, tmp_path / "c.h5")
    out = tmp_path / "zs"
    r = runner.invoke(main, ["zeroshot", str(tmp_path / "c.h5"), "--model", str(tiny_opt_generative), "--method",
                             "rank", "--split", "val", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    submitted = json.loads((out / "submission.json").read_text())
    choices = {d["question_id"]: d["choices"] for d in json.loads((root / "aokvqa_v1p0_val.json").read_text())}
    assert set(submitted) == set(choices) and all(p["multiple_choice"] in choices[q] for q, p in submitted.items())
    r = runner.invoke(main, ["score", "aokvqa", str(out / "submission.json"), "--strict", "--dataset",
                             str(root / "aokvqa_v1p0_val.json"), "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    official = json.loads((tmp_path / "s.json").read_text())
    reported = json.loads((out / "results.json").read_text())["evaluation"]["benchmark"]
    assert reported["multiple_choice"] == official["multiple_choice"]
    assert reported["direct_answer"] == official["direct_answer"]


def test_instructblip_on_vqav2_extracts_conditioned_features_and_is_scored_by_the_evaluator(tmp_path):
    from featcache.models.tiny_instructblip import build_tiny_instructblip

    model = build_tiny_instructblip(tmp_path / "ib", "t5")
    root = write_vqav2(tmp_path / "VQA", n_images=(3, 6, 0))
    runner = CliRunner()
    out = tmp_path / "zs"
    r = runner.invoke(main, ["zeroshot", "--dataset", "vqav2", "--root", str(root), "--model", str(model),
                             "--preset", "blip2", "--split", "val", "--device", "cpu", "--save-cache",
                             str(tmp_path / "c.h5"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    from featcache import open_cache

    with open_cache(tmp_path / "c.h5") as cache:  # the Q-Former read the prompt the language model answers
        assert cache.attrs["features"] == "multimodal" and cache.attrs["mm_prompt"] == "Question: {} Short answer:"
    submitted = json.loads((out / "submission.json").read_text())
    assert len(submitted) == 12
    r = runner.invoke(main, ["score", "vqa", str(out / "submission.json"), "--out", str(tmp_path / "s.json"),
                             "--annotations", str(root / "Annotations" / "v2_mscoco_val2014_annotations.json")])
    assert r.exit_code == 0, r.output
    official = json.loads((tmp_path / "s.json").read_text())["accuracy"]
    assert json.loads((out / "results.json").read_text())["evaluation"]["benchmark"]["overall"] == official["overall"]
