"""A-OKVQA as allenai/aokvqa evaluation/eval_predictions.py scores it:

- multiple choice: 1 when the prediction is exactly the correct choice, over every question;
- direct answer: min(1, exact matches among the 10 direct answers / 3), with no normalisation and no
  leave-one-out, over the questions not marked `difficult_direct_answer`;
both as percentages. Predictions are {question_id: {"multiple_choice": ..., "direct_answer": ...}} (the file
prepare_predictions.py writes and the leaderboard takes). As the script's command line does (strict=False), a
question without a prediction scores 0; here the count is reported, and `strict` refuses it, and an MC prediction
that is not one of the question's choices, as its strict mode does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import ScoreError


def direct_answer_accuracy(prediction: str, direct_answers: Sequence[str]) -> float:
    return min(1.0, sum(prediction == a for a in direct_answers) / 3.0)


def evaluate_aokvqa(dataset: Sequence[Mapping], predictions: Mapping, strict: bool = False) -> dict:
    """{"multiple_choice", "direct_answer"} (percentages, None where no prediction of that kind was given), with
    the numbers of questions scored, predictions missing and MC predictions outside their choices."""
    if not isinstance(predictions, Mapping):
        raise ScoreError('A-OKVQA predictions must be a JSON object {question_id: {"multiple_choice": ..., '
                         f'"direct_answer": ...}}, got a JSON {type(predictions).__name__}')
    from .checks import answer_text, nonempty, question_id, unique

    for d in dataset:
        lacking = [k for k in ("question_id", "choices", "correct_choice_idx", "direct_answers") if k not in d]
        if lacking:
            raise ScoreError(f"A-OKVQA question {d.get('question_id', '?')} has no {', '.join(lacking)}: the test "
                             f"split is scored by the leaderboard; give the train or val file")
        where = f"A-OKVQA question {question_id(d['question_id'], 'an A-OKVQA question')}"
        for key in ("choices", "direct_answers"):  # (a string would be compared character by character)
            if not isinstance(d[key], list) or not d[key]:
                raise ScoreError(f"{where}: {key!r} must be a non-empty list of answers, got {str(d[key])[:60]}")
            for a in d[key]:
                answer_text(a, f"{where} {key}")
        idx = d["correct_choice_idx"]
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(d["choices"]):
            raise ScoreError(f"{where}: correct_choice_idx must index its {len(d['choices'])} choices, got {idx!r}")
        if "difficult_direct_answer" in d and not isinstance(d["difficult_direct_answer"], bool):
            raise ScoreError(f"{where}: difficult_direct_answer must be true or false, got {d['difficult_direct_answer']!r}")
    unique([str(d["question_id"]) for d in dataset], "question ids in the A-OKVQA file")
    by_id = {d["question_id"]: d for d in dataset}
    for q, p in predictions.items():
        if not isinstance(p, Mapping):
            raise ScoreError(f'prediction {q!r} must be an object {{"multiple_choice": ..., "direct_answer": ...}}, '
                             f"got {str(p)[:60]}")
        for key in ("multiple_choice", "direct_answer"):
            if key in p:
                answer_text(p[key], f"prediction {q!r} {key}")
    unknown = [q for q in predictions if q not in by_id]
    out: dict = {"unknown_ids": len(unknown)}
    for kind, key in (("multiple_choice", "multiple_choice"), ("direct_answer", "direct_answer")):
        preds = {q: p[key] for q, p in predictions.items() if isinstance(p, Mapping) and key in p}
        if not preds:
            out[kind] = None
            continue
        asked = by_id if kind == "multiple_choice" else {q: d for q, d in by_id.items()
                                                         if d.get("difficult_direct_answer") is False}
        nonempty(len(asked), kind.replace("_", " "), "the direct answer is scored over the questions marked "
                 "\"difficult_direct_answer\": false, and the file marks none (is it the official val file?)")
        missing = [q for q in asked if q not in preds]
        if strict and missing:
            raise ScoreError(f"no {kind} prediction for {len(missing)} questions (e.g. {missing[:3]})")
        accs, invalid = [], 0
        for q, d in asked.items():
            if q not in preds:
                accs.append(0.0)
                continue
            if kind == "multiple_choice":
                if preds[q] not in d["choices"]:
                    invalid += 1
                    if strict:
                        raise ScoreError(f"question {q}: the multiple-choice prediction {preds[q]!r} is not one of "
                                         f"its choices {d['choices']}")
                accs.append(float(preds[q] == d["choices"][d["correct_choice_idx"]]))
            else:
                accs.append(direct_answer_accuracy(preds[q], d["direct_answers"]))
        out[kind] = sum(accs) / len(accs) * 100 if accs else 0.0
        out[f"{kind}_n"], out[f"{kind}_missing"] = len(asked), len(missing)
        if kind == "multiple_choice":
            out["multiple_choice_not_a_choice"] = invalid
    return out


def score_aokvqa_files(predictions: str, dataset: str, strict: bool = False) -> dict:
    from .files import read_json

    data = read_json(dataset, "A-OKVQA file")
    if not isinstance(data, list) or not all(isinstance(d, dict) and "question_id" in d for d in data):
        raise ScoreError(f"{dataset} is not an A-OKVQA split file (a list of questions, e.g. aokvqa_v1p0_val.json)")
    return evaluate_aokvqa(data, read_json(predictions, "predictions file"), strict)
