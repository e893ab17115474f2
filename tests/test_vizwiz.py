"""VizWiz-VQA: its evaluation's rules against hand-computed values (the prediction normalised, the humans' answers
not, curly contractions, answerability AP / F1 as scikit-learn computes them), the loader on an official-format
fixture, and a sweep whose reported figures equal `featcache score vizwiz` on the sweep's own results file."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score

from cli import main
from featcache.datasets import load_dataset
from featcache.errors import DatasetError, ScoreError
from featcache.scoring import vizwiz, vqa

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_vizwiz(root: Path, seed: int = 0) -> Path:
    """Annotations/{train,val,test}.json and {split}/VizWiz_{split}_%08d.jpg: colour patches asked "what color is
    this?" (mostly their colour), every fourth a grey blur the crowd called unanswerable."""
    rng = np.random.default_rng(seed)
    (root / "Annotations").mkdir(parents=True)
    for split, n in (("train", 16), ("val", 8), ("test", 4)):
        (root / split).mkdir()
        entries = []
        for i in range(n):
            image = f"VizWiz_{split}_{i:08d}.jpg"
            blur = i % 4 == 3
            base = (128, 128, 128) if blur else COLOURS[list(COLOURS)[i % 3]]
            arr = np.clip(np.array(base) + rng.normal(0, 40 if blur else 15, (30, 34, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / split / image)
            entry = {"image": image, "question": "What color is this?"}
            if split != "test":
                colour = list(COLOURS)[i % 3]
                answers = ["unanswerable"] * 8 + ["unsuitable", "grey"] if blur else [colour] * 7 + ["unanswerable", f"dark {colour}", "pink"]
                entry.update(answers=[{"answer": a, "answer_confidence": "yes"} for a in answers],
                             answer_type="unanswerable" if blur else "other", answerable=0 if blur else 1)
            entries.append(entry)
        (root / "Annotations" / f"{split}.json").write_text(json.dumps(entries))
    return root


def test_the_prediction_is_normalised_the_human_answers_are_not():
    assert vizwiz.answer_accuracy("The Dog.", ["dog"] * 10) == 1.0
    assert vizwiz.answer_accuracy("two", ["2"] * 3 + ["3"] * 7) == pytest.approx((7 * 1 + 3 * (2 / 3)) / 10)
    # a human answer in another form never matches: "the dog" stays as the humans wrote it
    assert vizwiz.answer_accuracy("the dog", ["the dog"] * 10) == 0.0
    # VizWiz restores curly apostrophes where VQAv2's evaluator writes straight ones
    assert vizwiz.normalize_prediction("dont") == "don’t" and vqa.normalize_answer("dont") == "don't"
    assert vizwiz.answer_accuracy("dont", ["don't"] * 10) == 0.0
    # its contraction table is VQAv2's up to the apostrophes (a check against typos in either)
    straight = lambda s: s.replace("’", "'")  # noqa: E731
    assert {straight(k): straight(v) for k, v in vizwiz.CONTRACTIONS.items()} == vqa.CONTRACTIONS
    # soft targets: only answers in normal form, each scored by the evaluation itself
    assert vizwiz.soft_scores(["The cat"] * 5 + ["cat"] * 2 + ["dog"] * 3) == {"cat": pytest.approx(0.6),
                                                                                "dog": pytest.approx(0.9)}


def test_accuracy_per_answer_type_and_unanswerability_by_hand():
    anns = [{"image": "a.jpg", "answers": ["red"] * 10, "answer_type": "other", "answerable": 1},
            {"image": "b.jpg", "answers": ["yes"] * 2 + ["no"] * 8, "answer_type": "yes/no", "answerable": 1},
            {"image": "c.jpg", "answers": ["unanswerable"] * 10, "answer_type": "unanswerable", "answerable": 0},
            {"image": "d.jpg", "answers": ["unanswerable"] * 6 + ["blue"] * 4, "answer_type": "unanswerable",
             "answerable": 0}]
    results = [{"image": "a.jpg", "answer": "Red", "answerable": 0.9}, {"image": "b.jpg", "answer": "yes", "answerable": 0.4},
               {"image": "c.jpg", "answer": "unanswerable", "answerable": 0.2},
               {"image": "d.jpg", "answer": "blue", "answerable": 0.7}]
    scores = vizwiz.evaluate_vizwiz(anns, results)
    b = (2 * (1 / 3) + 8 * (2 / 3)) / 10  # "yes": the two yes-sayers see 1 other, the rest see 2
    d = (6 * 1 + 4 * 1) / 10
    assert scores["evalQA"] == {"a.jpg": 100.0, "b.jpg": round(100 * b, 2), "c.jpg": 100.0, "d.jpg": 100.0 * d}
    assert scores["accuracy"]["overall"] == round(100 * (1 + b + 1 + d) / 4, 2)
    assert scores["accuracy"]["perAnswerType"] == {"other": 100.0, "yes/no": round(100 * b, 2), "unanswerable": 100.0}
    gt, p = np.array([0, 0, 1, 1]), 1 - np.array([0.9, 0.4, 0.2, 0.7])
    assert scores["unanswerability"] == {"average_precision": round(100 * average_precision_score(gt, p), 2),
                                         "f1_score": round(100 * f1_score(gt, p > 0.5), 2)}
    assert scores["answerable_from"] == "results"
    derived = vizwiz.evaluate_vizwiz(anns, [{k: v for k, v in r.items() if k != "answerable"} for r in results])
    assert derived["answerable_from"] == "answers" and derived["accuracy"] == scores["accuracy"]
    with pytest.raises(ScoreError, match="no prediction for 1 annotated images .'d.jpg'"):
        vizwiz.evaluate_vizwiz(anns, results[:3])
    with pytest.raises(ScoreError, match="must be a probability"):
        vizwiz.evaluate_vizwiz(anns, [{**r, "answerable": "high"} for r in results])


def test_the_loader_and_its_bad_layouts(tmp_path):
    ds = load_dataset("vizwiz", root=str(write_vizwiz(tmp_path / "v")))
    assert {s: sum(q.split == s for q in ds.questions) for s in ("train", "val", "test")} == \
        {"train": 16, "val": 8, "test": 4} and ds.metric == "vizwiz"
    q = ds.questions[3]
    assert q.qid == "VizWiz_train_00000003.jpg" and q.answer == "unanswerable" and len(q.references) == 10
    assert q.answer_type == "unanswerable" and q.question_type == "unanswerable" and Path(ds.image_paths[q.image]).is_file()
    assert ds.questions[0].question_type == "answerable" and ds.questions[0].answer == "red"
    assert all(not q.references for q in ds.questions if q.split == "test")
    with pytest.raises(DatasetError, match="needs --root"):
        load_dataset("vizwiz")
    with pytest.raises(DatasetError, match="no VizWiz annotation file"):
        load_dataset("vizwiz", root=str(tmp_path / "empty"))
    (tmp_path / "v" / "Annotations" / "val.json").write_text(json.dumps([{"image": "x.jpg"}]))
    with pytest.raises(DatasetError, match="val.json entry 0 lacks image or question"):
        load_dataset("vizwiz", root=str(tmp_path / "v"))


def test_a_sweep_reports_what_score_vizwiz_gives_its_own_results_file(tiny_itm, tmp_path):
    root = write_vizwiz(tmp_path / "v")
    runner = CliRunner()
    cache = tmp_path / "c.h5"
    r = runner.invoke(main, ["extract", "--dataset", "vizwiz", "--root", str(root), "--model", str(tiny_itm),
                             "--out", str(cache), "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "sweep"
    r = runner.invoke(main, ["sweep", str(cache), "--eval-split", "val", "--heads", "lr", "--views", "pooled",
                             "--out", str(out)])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    reported = results["evaluation"]["benchmark"]
    assert reported["metric"] == "vizwiz" and results["benchmark"]["targets"].startswith("VizWiz soft scores")
    submitted = json.loads((out / "submission.json").read_text())
    assert len(submitted) == 8 and set(submitted[0]) == {"image", "answer", "answerable"}
    r = runner.invoke(main, ["score", "vizwiz", str(out / "submission.json"), "--annotations",
                             str(root / "Annotations" / "val.json"), "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0 and "Unanswerable: average precision" in r.output, r.output
    official = json.loads((tmp_path / "s.json").read_text())
    assert reported["overall"] == reported["primary"] == official["accuracy"]["overall"]
    assert reported["perAnswerType"] == official["accuracy"]["perAnswerType"]
    assert (reported["average_precision"], reported["f1_score"]) == tuple(official["unanswerability"].values())
    r = runner.invoke(main, ["evaluate", str(out / "best"), str(cache), "--split", "test", "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "t" / "submission.json").read_text())) == 4
    r = runner.invoke(main, ["score", "vizwiz", str(out / "submission.json"), "--annotations",
                             str(root / "Annotations" / "train.json")])
    assert r.exit_code == 1 and "no prediction for 16 annotated images" in r.output and "Traceback" not in r.output


def test_the_hubs_parquet_copy_is_scored_as_vizwiz(tmp_path):
    """lmms-lab/VizWiz-VQA's layout (question_id = the image's name, answers, category) loads through hf: with
    VizWiz's scoring, and the same questions and answers as the official files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = write_vizwiz(tmp_path / "v")
    entries = json.loads((root / "Annotations" / "val.json").read_text())
    (tmp_path / "hub" / "data").mkdir(parents=True)
    table = pa.table({"question_id": [e["image"] for e in entries], "question": [e["question"] for e in entries],
                      "image": [{"bytes": (root / "val" / e["image"]).read_bytes(), "path": None} for e in entries],
                      "answers": [[a["answer"] for a in e["answers"]] for e in entries],
                      "category": [e["answer_type"] for e in entries]})
    pq.write_table(table, tmp_path / "hub" / "data" / "val-00000-of-00001.parquet")
    hub = load_dataset(f"hf:{tmp_path / 'hub'}")
    official = [q for q in load_dataset("vizwiz", root=str(root)).questions if q.split == "val"]
    assert hub.metric == "vizwiz"
    fields = lambda q: (q.qid, q.text, q.references, q.answer_type, q.question_type)  # noqa: E731
    assert [fields(q) for q in hub.questions] == [fields(q) for q in official]
