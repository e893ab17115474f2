"""VQA accuracy equals the official evaluator's (GT-Vision-Lab/VQA, run here from tests/reference/vqa_official)
per question, on answers that exercise every normalisation rule; hand-computed values; soft scores and the
vocabulary rule; `featcache score vqa` and its refusals."""

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from featcache.errors import ScoreError
from featcache.scoring.vqa import (evaluate_vqa, normalize_answer, question_accuracy, round_official, soft_scores,
                                   soft_scores_of_lists, vqa_vocabulary)

OFFICIAL = Path(__file__).parent / "reference" / "vqa_official"

# answers that hit each rule: case, number words, articles, contractions, punctuation next to a space or not, a
# digit,digit comma, periods before a digit or not, newlines and tabs, an empty answer
POOL = ["yes", "Yes", "no", "two", "2", "a dog", "the dog", "dog", "dogs", "dont know", "don't know", "isnt",
        "t-shirt", "t shirt", "tshirt", "1,000", "1000", "one thousand", "3.5", "3.5.", "end.", "end", "(left)",
        "left", "left side", "hot dog!", "hot dog", "hot-dog", "red, white", "red white", "none", "0", "ten", "10",
        "yes\n", "\tno", "x / y", "x/y", "", "Im", "I'm", "a", "well... yes", "it's", "its"]


def official_files(tmp_path: Path, n: int = 400, seed: int = 0) -> tuple[Path, Path, Path, list]:
    """Annotation, question and results files in the official layout: random human answers from POOL (some
    questions with all ten the same), random predictions (POOL entries and their variants)."""
    rng = np.random.default_rng(seed)
    anns, ques, res = [], [], []
    for qid in range(n):
        if qid % 7 == 0:
            answers = [POOL[rng.integers(len(POOL))]] * 10  # all identical: no normalisation at all
        else:
            k = rng.integers(1, 5)
            answers = [POOL[i] for i in rng.choice(len(POOL), size=k)]
            answers = [answers[i] for i in rng.integers(0, k, size=10)]
        anns.append({"question_id": qid, "image_id": qid // 3, "question_type": ["what is", "is the", "how many"][qid % 3],
                     "answer_type": ["other", "yes/no", "number"][qid % 3], "multiple_choice_answer": answers[0],
                     "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]})
        ques.append({"question_id": qid, "image_id": qid // 3, "question": f"question {qid}?"})
        pick = answers[rng.integers(10)] if rng.random() < 0.6 else POOL[rng.integers(len(POOL))]
        res.append({"question_id": qid, "answer": pick.upper() if rng.random() < 0.1 else pick})
    meta = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014", "license": {}}
    paths = tmp_path / "ann.json", tmp_path / "ques.json", tmp_path / "res.json"
    paths[0].write_text(json.dumps({**meta, "annotations": anns}))
    paths[1].write_text(json.dumps({**meta, "questions": ques}))
    paths[2].write_text(json.dumps(res))
    return (*paths, anns)


def run_official(ann: Path, ques: Path, res: Path):
    sys.path.insert(0, str(OFFICIAL))
    try:
        import vqa
        import vqaEval

        with contextlib.redirect_stdout(io.StringIO()):
            gt = vqa.VQA(str(ann), str(ques))
            evaluator = vqaEval.VQAEval(gt, gt.loadRes(str(res), str(ques)), n=2)
            evaluator.evaluate()
        return evaluator
    finally:
        sys.path.remove(str(OFFICIAL))


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_the_official_evaluator_per_question(seed, tmp_path):
    ann, ques, res, anns = official_files(tmp_path, seed=seed)
    official = run_official(ann, ques, res)
    ours = evaluate_vqa(anns, json.loads(res.read_text()), json.loads(ques.read_text())["questions"])
    assert ours["evalQA"] == official.evalQA
    assert ours["evalAnsType"] == official.evalAnsType and ours["evalQuesType"] == official.evalQuesType
    # the reference runs under Python 3 here, whose round() breaks exact ties to even; the script's Python 2
    # round() (ours) breaks them away from zero. Away from ties the figures are the same.
    assert ours["accuracy"] == official.accuracy
    assert len(set(official.evalQA.values())) > 4  # the fixture spans many accuracy levels


@pytest.mark.parametrize("prediction, answers, expected", [
    ("yes", ["Yes"] * 10, 0.0),  # all ten the same: not even lower-cased
    ("Yes", ["Yes"] * 10, 1.0),
    ("2", ["two"] * 10, 0.0),
    ("2", ["two"] * 9 + ["2"], 1.0),  # they differ: all normalised, number words as digits
    ("yes", ["yes"] * 3 + ["no"] * 7, 0.9),  # 3 x min(1, 2/3) + 7 x min(1, 3/3), over 10
    ("Yes.", ["yes"] * 2 + ["no"] * 8, 0.6),  # a period not before a digit is removed, then lower case
    ("yes", ["yes"] + ["no"] * 9, 0.3),
    ("1,000", ["1000"] * 3 + ["one thousand"] * 7, 0.9),  # a digit,digit comma: punctuation removed, not spaced
    ("t shirt", ["t-shirt"] * 4 + ["shirt"] * 6, 1.0),  # a hyphen inside a word becomes a space
    ("tshirt", ["t-shirt"] * 4 + ["shirt"] * 6, 0.0),
    ("a dog", ["dog"] * 2 + ["cat"] * 8, 0.6),  # articles dropped
    ("dont", ["don't"] * 3 + ["no"] * 7, 0.9),  # contractions restored
    ("3.5", ["3.5"] * 3 + ["3"] * 7, 0.9),  # a period before a digit stays
    ("x/y", ["x / y"] * 4 + ["z"] * 6, 1.0),  # "x / y": the slash touches a space, removed; "x/y": spaced; both "x y"
])
def test_hand_computed_accuracies(prediction, answers, expected):
    assert question_accuracy(prediction, answers) == pytest.approx(expected)


def test_the_official_rounding_and_normalisation_details():
    assert round_official(0.125, 2) == 0.13 and round(0.125, 2) == 0.12  # Python 2's ties-away-from-zero
    assert normalize_answer("The Two Dogs!") == "2 dogs"
    assert normalize_answer("well... yes") == "well yes"
    assert normalize_answer("." * 40) == "." * 8  # at most 32 periods stripped (the script's count=re.UNICODE)


def test_soft_scores_are_the_metric_of_each_answer():
    answers = ["two"] * 4 + ["2"] * 2 + ["three"] * 3 + ["Four"]
    scores = soft_scores(answers)
    assert scores == pytest.approx({"2": 1.0, "3": 0.9, "4": 0.3})
    assert soft_scores(["Yes"] * 10) == {"Yes": 1.0}
    for answer, score in scores.items():
        assert question_accuracy(answer, answers) == score


def test_soft_scores_of_many_lists_are_each_lists_own(tmp_path):
    """The fast path over a training set's lists (repeats, ten of one answer, short lists, padded and dict
    entries) gives every list exactly soft_scores' dict, whose every score is the evaluator's."""
    anns = official_files(tmp_path, n=300, seed=3)[3]
    lists = [[e["answer"] for e in ann["answers"]] for ann in anns for _ in range(2)]
    lists += [["Yes"], ["two", "2"], [" dog\t", "dog"], ["no"] * 3, [], [{"answer": "two"}, {"answer": "2"}]]
    many = soft_scores_of_lists(lists)
    assert len(many) == len(lists)
    for answers, scores in zip(lists, many):
        assert scores == (soft_scores(answers) if answers else {})
        for answer, score in scores.items():
            assert question_accuracy(answer, answers) == score  # bit-equal, not approximately


def test_the_vocabulary_rule():
    answers = ["yes"] * 9 + ["Yes."] * 2 + ["two"] * 5 + ["2"] * 4 + ["cat"] * 8
    assert vqa_vocabulary(answers, min_count=9) == ["yes", "2"]
    assert vqa_vocabulary(answers, min_count=8) == ["yes", "2", "cat"]


def test_score_vqa_cli_writes_the_evaluators_fields_and_refuses_partial_results(tmp_path):
    ann, ques, res, anns = official_files(tmp_path, n=60)
    out = tmp_path / "scores.json"
    r = CliRunner().invoke(main, ["score", "vqa", str(res), "--annotations", str(ann), "--questions", str(ques),
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    official = run_official(ann, ques, res)
    written = json.loads(out.read_text())
    assert written["accuracy"] == official.accuracy and f"{official.accuracy['overall']:.2f}" in r.output
    assert {int(k): v for k, v in written["evalQA"].items()} == official.evalQA
    results = json.loads(res.read_text())
    cases = [(results[1:], "no prediction for 1 annotated question ids (0)"),
             (results + [{"question_id": 999, "answer": "x"}], "1 question ids (999) not in the annotations"),
             ([{**r, "question_id": str(r["question_id"])} for r in results], "integer question ids"),
             ({"0": "yes"}, "must be a JSON list"), ([{"question_id": 0}], 'results entry 0 is not an object')]
    for bad, message in cases:
        res.write_text(json.dumps(bad))
        r = CliRunner().invoke(main, ["score", "vqa", str(res), "--annotations", str(ann)])
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output
    res.write_text("[{")
    r = CliRunner().invoke(main, ["score", "vqa", str(res), "--annotations", str(ann)])
    assert r.exit_code == 1 and "not valid JSON" in r.output
    res.write_text(json.dumps(results))
    ques.write_text(json.dumps({"questions": json.loads(ques.read_text())["questions"][:-1]}))
    r = CliRunner().invoke(main, ["score", "vqa", str(res), "--annotations", str(ann), "--questions", str(ques)])
    assert r.exit_code == 1 and "1 annotations (59) without a question" in r.output, r.output
    r = CliRunner().invoke(main, ["score", "vqa", str(res), "--annotations", str(ques)])
    assert r.exit_code == 1 and "has no 'annotations' field" in r.output
    with pytest.raises(ScoreError, match="without human answers"):
        question_accuracy("x", [])


def test_bare_answers_score_as_the_annotation_dicts(tmp_path):
    """The counting path for answer strings (the cache's) equals the script's leave-one-out over dicts."""
    *_, anns = official_files(tmp_path, n=300, seed=3)
    rng = np.random.default_rng(3)
    for ann in anns:
        strings = [a["answer"] for a in ann["answers"]]
        for pred in (strings[0], POOL[rng.integers(len(POOL))], normalize_answer(strings[-1])):
            assert question_accuracy(pred, strings) == question_accuracy(pred, ann["answers"])


def test_a_malformed_annotation_is_named():
    with pytest.raises(ScoreError, match=r"annotation 0 \(question 7\): \"answers\" must be a list"):
        evaluate_vqa([{"question_id": 7, "answers": [{"text": "yes"}]}], [{"question_id": 7, "answer": "yes"}])
