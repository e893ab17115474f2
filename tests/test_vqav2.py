"""VQAv2 end to end on a small fixture in the official layout: the loader and its counts, the cache keeps every
human answer, a sweep on the field's vocabulary reports the VQA accuracy that `featcache score vqa` gives its own
results file, test-dev is predicted into the results format; bad layouts are named."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featcache
from cli import main
from featcache.datasets import load_dataset
from featcache.errors import DatasetError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
META = {"info": {}, "license": {}, "data_type": "mscoco", "task_type": "Open-Ended"}


def write_vqav2(root: Path, n_images=(12, 6, 3), seed: int = 0) -> Path:
    """train2014 / val2014 / test-dev2015 in the official files and folders: a colour patch per image, questions
    "what color is it?" (10 human answers, mostly its colour, with variants and noise) and "is it red?"."""
    rng = np.random.default_rng(seed)
    (root / "Questions").mkdir(parents=True)
    (root / "Annotations").mkdir()
    qid = 0
    for sub, n in zip(("train2014", "val2014", "test-dev2015"), n_images):
        folder = root / ("test2015" if sub.startswith("test") else sub)
        folder.mkdir(exist_ok=True)
        questions, annotations = [], []
        for i in range(n):
            image_id = 1000 * len(sub) + i
            colour = list(COLOURS)[i % 3]
            arr = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 15, (32, 36, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(folder / f"COCO_{folder.name}_{image_id:012d}.jpg")
            for text, answers, atype, qtype in (
                    ("What color is it?", [colour] * 6 + [colour.capitalize() + "."] * 2 + ["pink", f"the {colour}"],
                     "other", "what color is the"),
                    ("Is it red?", ["yes" if colour == "red" else "no"] * 9 + ["maybe"], "yes/no", "is the")):
                qid += 1
                questions.append({"image_id": image_id, "question": text, "question_id": qid})
                annotations.append({"question_id": qid, "image_id": image_id, "answer_type": atype,
                                    "question_type": qtype, "multiple_choice_answer": answers[0],
                                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                                                for j, a in enumerate(answers)]})
        (root / "Questions" / f"v2_OpenEnded_mscoco_{sub}_questions.json").write_text(
            json.dumps({**META, "data_subtype": sub, "questions": questions}))
        if not sub.startswith("test"):
            (root / "Annotations" / f"v2_mscoco_{sub}_annotations.json").write_text(
                json.dumps({**META, "data_subtype": sub, "annotations": annotations}))
    return root


@pytest.fixture(scope="module")
def vqav2(tmp_path_factory) -> Path:
    return write_vqav2(tmp_path_factory.mktemp("vqav2") / "VQA")


def test_the_loader_keeps_ids_every_answer_and_types(vqav2):
    ds = load_dataset("vqav2", root=str(vqav2))
    counts = {s: sum(q.split == s for q in ds.questions) for s in ("train", "val", "test-dev")}
    assert counts == {"train": 24, "val": 12, "test-dev": 6} and len(ds.images()) == 21
    q = next(q for q in ds.questions if q.split == "val" and q.text == "What color is it?")
    assert len(q.references) == 10 and q.answer_type == "other" and q.qid.isdigit() and q.answer in COLOURS
    assert ds.image_paths[q.image].endswith(f"val2014/{q.image}.jpg") and Path(ds.image_paths[q.image]).is_file()
    test = [q for q in ds.questions if q.split == "test-dev"]
    assert all(not q.references and not q.answer for q in test)
    assert all("/test2015/COCO_test2015_" in ds.image_paths[q.image] for q in test)


def test_a_sweep_reports_the_official_vqa_accuracy_of_its_own_results_file(vqav2, tiny_itm, tmp_path):
    runner = CliRunner()
    cache = tmp_path / "vqav2.h5"
    r = runner.invoke(main, ["extract", "--dataset", "vqav2", "--root", str(vqav2), "--model", str(tiny_itm),
                             "--out", str(cache), "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0, r.output
    with featcache.open_cache(cache) as c:
        refs = c.strings("questions", "references")
        assert len(json.loads(refs[0])) == 10 and set(c.strings("questions", "answer_type")) >= {"other", "yes/no"}
    out = tmp_path / "sweep"
    r = runner.invoke(main, ["sweep", str(cache), "--eval-split", "val", "--heads", "lr", "--views", "pooled",
                             "--min-answer-count", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "answer vocabulary: 5 answers" in r.output and "VQA acc" in r.output  # red green blue yes no
    results = json.loads((out / "results.json").read_text())
    reported = results["evaluation"]["benchmark"]
    assert results["benchmark"]["vocabulary"] == 5 and 0 < results["benchmark"]["coverage"]["val"] <= 100
    scored = tmp_path / "scores.json"
    r = runner.invoke(main, ["score", "vqa", str(out / "submission.json"), "--out", str(scored), "--annotations",
                             str(vqav2 / "Annotations" / "v2_mscoco_val2014_annotations.json"), "--questions",
                             str(vqav2 / "Questions" / "v2_OpenEnded_mscoco_val2014_questions.json")])
    assert r.exit_code == 0, r.output
    official = json.loads(scored.read_text())["accuracy"]
    assert reported["primary"] == reported["overall"] == official["overall"] and reported["perAnswerType"] == official["perAnswerType"]
    assert reported["perQuestionType"] == official["perQuestionType"]
    assert f"VQA accuracy **{official['overall']:.2f}**" in (out / "report.md").read_text()
    from heads.trained import TrainedHead

    assert TrainedHead.load(out / "best").head.loss_function_ == "bce"  # trained on the soft scores

    r = runner.invoke(main, ["evaluate", str(out / "best"), str(cache), "--split", "test-dev",
                             "--out", str(tmp_path / "testdev")])
    assert r.exit_code == 0, r.output
    submitted = json.loads((tmp_path / "testdev" / "submission.json").read_text())
    asked = json.loads((vqav2 / "Questions" / "v2_OpenEnded_mscoco_test-dev2015_questions.json").read_text())
    assert sorted(s["question_id"] for s in submitted) == sorted(q["question_id"] for q in asked["questions"])
    assert all(isinstance(s["question_id"], int) and s["answer"] for s in submitted)
    r = runner.invoke(main, ["evaluate", str(out / "best"), str(cache), "--split", "val", "--out", str(tmp_path / "v")])
    assert r.exit_code == 0 and f"VQA accuracy {official['overall']:.2f}" in r.output, r.output
    # live on the images (the ViT runs), in the results format: the cache's predictions
    r = runner.invoke(main, ["predict", "--head", str(out / "best"), "--dataset", "vqav2", "--root", str(vqav2),
                             "--split", "val", "--device", "cpu", "--submission", str(tmp_path / "live.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "live.json").read_text()) == json.loads((out / "submission.json").read_text())


def test_bad_layouts_are_named(tmp_path):
    with pytest.raises(DatasetError, match="needs --root"):
        load_dataset("vqav2")
    with pytest.raises(DatasetError, match="no VQAv2 question file"):
        load_dataset("vqav2", root=str(tmp_path))
    root = write_vqav2(tmp_path / "a", n_images=(3, 3, 0))
    ann = root / "Annotations" / "v2_mscoco_val2014_annotations.json"
    data = json.loads(ann.read_text())
    ann.write_text(json.dumps({**data, "annotations": data["annotations"][1:]}))
    with pytest.raises(DatasetError, match=r"do not match: 1 \(\d+\) questions without an annotation"):
        load_dataset("vqav2", root=str(root))
    ann.unlink()
    with pytest.raises(DatasetError, match="has no annotation file v2_mscoco_val2014_annotations.json"):
        load_dataset("vqav2", root=str(root))
    ann.write_text("{")
    with pytest.raises(DatasetError, match="cannot be read as JSON"):
        load_dataset("vqav2", root=str(root))


def test_the_hubs_parquet_copy_gives_the_same_questions(vqav2, tmp_path):
    """lmms-lab/VQAv2's layout (images embedded, the annotation's fields as columns) loads through hf: with the
    same question ids, human answers and types as the official files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    official = [q for q in load_dataset("vqav2", root=str(vqav2)).questions if q.split == "val"]
    anns = {a["question_id"]: a for a in json.loads(
        (vqav2 / "Annotations" / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]}
    asked = json.loads((vqav2 / "Questions" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"]
    (tmp_path / "hub" / "data").mkdir(parents=True)
    image = lambda q: (vqav2 / "val2014" / f"COCO_val2014_{q['image_id']:012d}.jpg").read_bytes()  # noqa: E731
    table = pa.table({"question_id": [q["question_id"] for q in asked], "question": [q["question"] for q in asked],
                      "image_id": [str(q["image_id"]) for q in asked],
                      "image": [{"bytes": image(q), "path": None} for q in asked],
                      **{c: [anns[q["question_id"]][c] for q in asked]
                         for c in ("answers", "multiple_choice_answer", "answer_type", "question_type")}})
    pq.write_table(table, tmp_path / "hub" / "data" / "validation-00000-of-00001.parquet")
    hub = load_dataset(f"hf:{tmp_path / 'hub'}").questions
    fields = lambda q: (q.qid, q.text, q.answer, q.references, q.answer_type, q.question_type)  # noqa: E731
    assert [fields(q) for q in hub] == [fields(q) for q in official]


def test_a_train_and_val_vocabulary_is_counted_over_both_and_warns_when_it_leaks(tmp_path, tiny_itm):
    """The field counts VQAv2's 3,129 answers over train+val (for test-dev); counted over the evaluated split it
    leaks, and the run says so."""
    root = write_vqav2(tmp_path / "VQA", n_images=(3, 6, 0))
    runner = CliRunner()
    cache = tmp_path / "c.h5"
    r = runner.invoke(main, ["extract", "--dataset", "vqav2", "--root", str(root), "--model", str(tiny_itm),
                             "--out", str(cache), "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0, r.output
    base = ["sweep", str(cache), "--eval-split", "val", "--heads", "lr", "--views", "pooled", "--min-answer-count", "3"]
    r = runner.invoke(main, base + ["--out", str(tmp_path / "a")])
    assert r.exit_code != 0 and "only 0 answer(s) occur at least 3 times" in r.output  # 3 train images: "no" x2
    r = runner.invoke(main, base + ["--vocabulary-splits", "train,val", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "answer vocabulary: 5 answers seen >= 3 times in train+val" in r.output and "leak" in r.output
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["benchmark"]["vocabulary_splits"] == ["train", "val"] and "leak" in results["benchmark"]["warning"]
    assert "**Warning: the vocabulary counts answers of val" in (tmp_path / "b" / "report.md").read_text()


def test_a_minival_is_cut_from_val_by_image(vqav2):
    ds = load_dataset("vqav2-minival", root=str(vqav2), seed=1)
    by_split = {s: {q.image for q in ds.questions if q.split == s} for s in ("minival", "nominival", "val", "train")}
    assert len(by_split["minival"]) == 1 and len(by_split["nominival"]) == 5 and not by_split["val"]  # 12% of 6
    assert not by_split["minival"] & by_split["nominival"] and len(by_split["train"]) == 12
    assert load_dataset("vqav2-minival", root=str(vqav2), seed=1).questions == ds.questions  # seeded
    assert all(len(q.references) == 10 for q in ds.questions if q.split == "minival")


def test_fine_tunes_report_the_official_vqa_accuracy_of_their_own_results_file(vqav2, tiny_itm, tiny_opt, tmp_path):
    """Both fine-tunes, evaluated on val: the summary's VQA accuracy is what `score vqa` gives their results file."""
    runner = CliRunner()
    annotations = str(vqav2 / "Annotations" / "v2_mscoco_val2014_annotations.json")

    def official(submission: Path) -> dict:
        r = runner.invoke(main, ["score", "vqa", str(submission), "--annotations", annotations,
                                 "--out", str(tmp_path / "s.json")])
        assert r.exit_code == 0, r.output
        return json.loads((tmp_path / "s.json").read_text())["accuracy"]

    r = runner.invoke(main, ["finetune", "--dataset", "vqav2", "--root", str(vqav2), "--model", str(tiny_itm),
                             "--out", str(tmp_path / "ft"), "--epochs", "1", "--hidden", "16", "--eval-split", "val",
                             "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["evaluated_split"] == "val" and summary["test"]["n"] == 12
    acc = official(tmp_path / "ft" / "submission.json")
    assert summary["test"]["benchmark"]["overall"] == summary["test"]["benchmark"]["primary"] == acc["overall"]
    assert summary["test"]["benchmark"]["perAnswerType"] == acc["perAnswerType"]
    # its report folder: the page's figures are the summary's, every evaluated question kept with its score
    from heads.page.render import read_page_data
    from heads.predictions import read_predictions

    page = read_page_data(tmp_path / "ft" / "report" / "report.html")
    assert page["evaluation"]["benchmark"]["overall"] == acc["overall"] and page["ranking"][0]["head"] == "finetune"
    kept = read_predictions(tmp_path / "ft" / "report" / "predictions.jsonl")
    assert len(kept) == 12 and all(len(k["top5"]) >= 1 and k["answers"] for k in kept)
    assert round(100 * sum(k["score"] for k in kept) / 12, 2) == pytest.approx(acc["overall"], abs=0.01)

    cache = tmp_path / "opt.h5"
    r = runner.invoke(main, ["extract", "--dataset", "vqav2", "--root", str(vqav2), "--model", str(tiny_opt),
                             "--out", str(cache), "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["finetune", "--generative", "--from-cache", str(cache), "--model", str(tiny_opt),
                             "--out", str(tmp_path / "gft"), "--epochs", "1", "--eval-split", "val", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "gft" / "summary.json").read_text())
    assert summary["test_benchmark"]["overall"] == official(tmp_path / "gft" / "submission.json")["overall"]


@pytest.mark.parametrize("head", ["knn", "attnpool"])
def test_the_token_heads_follow_the_vqa_protocol(vqav2, tiny_itm, tmp_path, head):
    """kNN votes with the soft scores and the attention probe trains on them; both report the official VQA accuracy
    of their own results file, and predict live on the images what the cache predicts."""
    runner = CliRunner()
    cache = tmp_path / "vqav2.h5"
    r = runner.invoke(main, ["extract", "--dataset", "vqav2", "--root", str(vqav2), "--model", str(tiny_itm),
                             "--out", str(cache), "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "sweep"
    r = runner.invoke(main, ["sweep", str(cache), "--eval-split", "val", "--heads", head, "--views", "itc",
                             "--min-answer-count", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    reported = json.loads((out / "results.json").read_text())["evaluation"]["benchmark"]
    scored = tmp_path / "scores.json"
    r = runner.invoke(main, ["score", "vqa", str(out / "submission.json"), "--out", str(scored), "--annotations",
                             str(vqav2 / "Annotations" / "v2_mscoco_val2014_annotations.json"), "--questions",
                             str(vqav2 / "Questions" / "v2_OpenEnded_mscoco_val2014_questions.json")])
    assert r.exit_code == 0, r.output
    assert reported["overall"] == json.loads(scored.read_text())["accuracy"]["overall"]
    from heads.trained import TrainedHead

    trained = TrainedHead.load(out / "best").head
    assert type(trained).__name__ == {"knn": "KNNHead", "attnpool": "AttentionPoolHead"}[head]
    r = runner.invoke(main, ["predict", "--head", str(out / "best"), "--dataset", "vqav2", "--root", str(vqav2),
                             "--split", "val", "--device", "cpu", "--submission", str(tmp_path / "live.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "live.json").read_text()) == json.loads((out / "submission.json").read_text())
