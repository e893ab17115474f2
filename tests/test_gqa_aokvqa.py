"""GQA and A-OKVQA: their scoring against hand-computed values and allenai/aokvqa's own eval_aokvqa (vendored in
tests/reference), their loaders on official-format fixtures, and a sweep over each whose reported figures equal
`featcache score` on the sweep's own results file."""

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from featcache.datasets import load_dataset
from featcache.errors import DatasetError, ScoreError
from featcache.scoring.aokvqa import evaluate_aokvqa
from featcache.scoring.gqa import evaluate_gqa

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
OFFICIAL = Path(__file__).parent / "reference" / "aokvqa_official"


def patch(path: Path, colour: str, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 15, (30, 34, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


def write_gqa(root: Path, seed: int = 0) -> Path:
    """train / testdev balanced question files (an open colour question, a binary one, per image) and a test file
    without answers; images/{imageId}.jpg."""
    rng = np.random.default_rng(seed)
    (root / "questions").mkdir(parents=True)
    for split, n in (("train", 12), ("testdev", 6), ("test", 3)):
        questions = {}
        for i in range(n):
            image, colour = f"{split[0]}{i}", list(COLOURS)[i % 3]
            patch(root / "images" / f"{image}.jpg", colour, rng)
            for j, (text, answer, structural, semantic) in enumerate((
                    ("What color is the square?", colour, "query", "attr"),
                    ("Is the square red?", "yes" if colour == "red" else "no", "verify", "attr"))):
                q = {"imageId": image, "question": text, "isBalanced": True,
                     "types": {"structural": structural, "semantic": semantic, "detailed": "x"}}
                if split != "test":
                    q["answer"] = answer
                questions[f"{split}{i:03d}{j}"] = q
        (root / "questions" / f"{split}_balanced_questions.json").write_text(json.dumps(questions))
    return root


def write_aokvqa(root: Path, seed: int = 0) -> Path:
    """aokvqa_v1p0_{train,val}.json (4 choices, 10 direct answers, some difficult) and COCO 2017 folders."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    qn = 0
    for split, n in (("train", 12), ("val", 6)):
        data = []
        for i in range(n):
            image_id, colour = 100 * len(split) + i, list(COLOURS)[i % 3]
            patch(root / f"{split}2017" / f"{image_id:012d}.jpg", colour, rng)
            choices = sorted(set(COLOURS) | {"pink"})
            qn += 1
            data.append({"question_id": f"q{qn:04d}", "image_id": image_id, "question": "Which color is it?",
                         "choices": choices, "correct_choice_idx": choices.index(colour),
                         "direct_answers": [colour] * 7 + ["pink", f"dark {colour}", "red"],
                         "difficult_direct_answer": i % 4 == 3, "rationales": ["..."]})
        (root / f"aokvqa_v1p0_{split}.json").write_text(json.dumps(data))
    return root


def test_gqa_accuracy_binary_and_open_by_hand():
    questions = {"1": {"answer": "red", "isBalanced": True, "types": {"structural": "query", "semantic": "attr"}},
                 "2": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify", "semantic": "rel"}},
                 "3": {"answer": "no", "isBalanced": True, "types": {"structural": "logical", "semantic": "obj"}},
                 "4": {"answer": "cat", "isBalanced": False, "types": {"structural": "query", "semantic": "cat"}}}
    scores = evaluate_gqa(questions, {"1": "Red", "2": "yes", "3": "no", "4": "cat"})  # no normalisation: "Red" misses
    assert scores["n"] == 3 and scores["accuracy"] == pytest.approx(200 / 3)
    assert scores["open"] == 0.0 and scores["binary"] == 100.0
    assert scores["accuracyPerStructuralType"] == {"logical": 100.0, "query": 0.0, "verify": 100.0}
    with pytest.raises(ScoreError, match="no prediction for 1 balanced questions"):
        evaluate_gqa(questions, {"1": "red", "2": "yes"})


@pytest.mark.parametrize("seed", [0, 1])
def test_aokvqa_equals_allenais_eval_predictions(seed, tmp_path):
    root = write_aokvqa(tmp_path / "a", seed)
    dataset = json.loads((root / "aokvqa_v1p0_val.json").read_text()) * 1
    rng = np.random.default_rng(seed)
    words = ["red", "green", "blue", "pink", "dark red", "Red", ""]
    preds = {d["question_id"]: {"multiple_choice": str(rng.choice(d["choices"])), "direct_answer": str(rng.choice(words))}
             for d in dataset if rng.random() < 0.85}  # some questions without a prediction: scored 0
    sys.path.insert(0, str(OFFICIAL))
    try:
        from eval_predictions import eval_aokvqa

        with contextlib.redirect_stdout(io.StringIO()):
            mc = eval_aokvqa(dataset, {q: p["multiple_choice"] for q, p in preds.items()}, multiple_choice=True, strict=False)
            da = eval_aokvqa(dataset, {q: p["direct_answer"] for q, p in preds.items()}, multiple_choice=False, strict=False)
    finally:
        sys.path.remove(str(OFFICIAL))
    ours = evaluate_aokvqa(dataset, preds)
    assert ours["multiple_choice"] == mc and ours["direct_answer"] == da
    bad = {dataset[0]["question_id"]: {"multiple_choice": "purple"}}
    assert evaluate_aokvqa(dataset, bad)["multiple_choice_not_a_choice"] == 1
    with pytest.raises(ScoreError, match="'purple' is not one of its choices"):
        evaluate_aokvqa(dataset[:1], bad, strict=True)


def test_the_loaders_and_their_bad_layouts(tmp_path):
    gqa = load_dataset("gqa", root=str(write_gqa(tmp_path / "g")))
    assert {s: sum(q.split == s for q in gqa.questions) for s in ("train", "testdev", "test")} == \
        {"train": 24, "testdev": 12, "test": 6}
    q = gqa.questions[0]
    assert q.references == (q.answer,) and q.question_type == "query" and q.answer_type == "attr" and gqa.metric == "gqa"
    ok = load_dataset("aokvqa", root=str(write_aokvqa(tmp_path / "a")))
    q = ok.questions[3]
    assert len(q.choices) == 4 and q.answer in q.choices and len(q.references) == 10 and q.answer_type == "difficult"
    assert Path(ok.image_paths[q.image]).is_file() and ok.metric == "aokvqa"
    for name in ("gqa", "aokvqa"):
        with pytest.raises(DatasetError, match="needs --root"):
            load_dataset(name)
        with pytest.raises(DatasetError, match="no (GQA question|A-OKVQA) file"):
            load_dataset(name, root=str(tmp_path / "empty"))
    (tmp_path / "a" / "aokvqa_v1p0_val.json").write_text(json.dumps([{"question_id": "x", "image_id": 1, "question": "q",
                                                                       "choices": ["a"], "correct_choice_idx": 3}]))
    with pytest.raises(DatasetError, match="correct_choice_idx 3 is outside its 1 choices"):
        load_dataset("aokvqa", root=str(tmp_path / "a"))


@pytest.mark.parametrize("benchmark", ["gqa", "aokvqa"])
def test_a_sweep_reports_what_score_gives_its_own_results_file(benchmark, tiny_itm, tmp_path):
    root = write_gqa(tmp_path / "g") if benchmark == "gqa" else write_aokvqa(tmp_path / "a")
    eval_split = "testdev" if benchmark == "gqa" else "val"
    runner = CliRunner()
    cache = tmp_path / "c.h5"
    r = runner.invoke(main, ["extract", "--dataset", benchmark, "--root", str(root), "--model", str(tiny_itm),
                             "--out", str(cache), "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "sweep"
    r = runner.invoke(main, ["sweep", str(cache), "--eval-split", eval_split, "--heads", "lr", "--views", "pooled",
                             "--out", str(out)])
    assert r.exit_code == 0, r.output
    reported = json.loads((out / "results.json").read_text())["evaluation"]["benchmark"]
    scored = tmp_path / "scores.json"
    if benchmark == "gqa":
        args = ["score", "gqa", str(out / "submission.json"), "--questions",
                str(root / "questions" / "testdev_balanced_questions.json")]
    else:
        args = ["score", "aokvqa", str(out / "submission.json"), "--dataset", str(root / "aokvqa_v1p0_val.json")]
    r = runner.invoke(main, args + ["--out", str(scored)])
    assert r.exit_code == 0, r.output
    official = json.loads(scored.read_text())
    keys = ("accuracy", "binary", "open") if benchmark == "gqa" else ("multiple_choice", "direct_answer")
    assert {k: reported[k] for k in keys} == {k: official[k] for k in keys}
    assert reported["primary"] == official["accuracy" if benchmark == "gqa" else "direct_answer"]
    if benchmark == "gqa":  # the test split has no answers: its results file only
        r = runner.invoke(main, ["evaluate", str(out / "best"), str(cache), "--split", "test", "--out", str(tmp_path / "t")])
        assert r.exit_code == 0, r.output
        rows = json.loads((tmp_path / "t" / "submission.json").read_text())
        assert len(rows) == 6 and set(rows[0]) == {"questionId", "prediction"}
    else:
        submitted = json.loads((out / "submission.json").read_text())
        choices = {d["question_id"]: d["choices"] for d in json.loads((root / "aokvqa_v1p0_val.json").read_text())}
        assert all(p["multiple_choice"] in choices[q] for q, p in submitted.items())  # MC picks among the choices
    r = runner.invoke(main, ["predict", "--head", str(out / "best"), "--dataset", benchmark, "--root", str(root),
                             "--split", eval_split, "--device", "cpu", "--submission", str(tmp_path / "live.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "live.json").read_text()) == json.loads((out / "submission.json").read_text())


def test_unanswered_files_are_named_not_a_traceback(tmp_path):
    root = write_gqa(tmp_path / "g")
    r = CliRunner().invoke(main, ["score", "gqa", str(root / "questions" / "test_balanced_questions.json"),
                                  "--questions", str(root / "questions" / "test_balanced_questions.json")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    (tmp_path / "res.json").write_text(json.dumps([{"questionId": "test0000", "prediction": "red"}]))
    r = CliRunner().invoke(main, ["score", "gqa", str(tmp_path / "res.json"), "--questions",
                                  str(root / "questions" / "test_balanced_questions.json")])
    assert r.exit_code == 1 and "have no answer" in r.output, r.output
    (tmp_path / "test.json").write_text(json.dumps([{"question_id": "q", "image_id": 1, "question": "?", "choices": ["a"]}]))
    (tmp_path / "p.json").write_text(json.dumps({"q": {"multiple_choice": "a"}}))
    r = CliRunner().invoke(main, ["score", "aokvqa", str(tmp_path / "p.json"), "--dataset", str(tmp_path / "test.json")])
    assert r.exit_code == 1 and "has no correct_choice_idx, direct_answers" in r.output, r.output
