"""GQA accuracy as the official eval.py (v1.2, gqadataset.org) computes it: over the balanced questions, a point
when the prediction equals the answer exactly (no normalisation), as a percentage; binary (structural type
verify, logical, compare, choose) and open (query) beside it, and per structural and semantic type. The script's
other metrics (validity, plausibility, consistency, grounding, distribution) need its choices, entailment and
scene-graph files and are not computed here.

A results file is [{"questionId", "prediction"}]; like the script, every balanced question needs a prediction.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ScoreError


def results_map(results) -> dict:
    if not isinstance(results, list):
        raise ScoreError('GQA results must be a JSON list of {"questionId": ..., "prediction": ...} objects, got a '
                         f"JSON {type(results).__name__}")
    from .checks import answer_text, question_id, unique

    out = {}
    for i, r in enumerate(results):
        if not isinstance(r, Mapping) or "questionId" not in r or "prediction" not in r:
            raise ScoreError(f'GQA results entry {i} is not an object with "questionId" and "prediction": {str(r)[:80]}')
        out[question_id(r["questionId"], f"GQA results entry {i}")] = answer_text(r["prediction"],
                                                                                   f"GQA results entry {i}")
    unique([str(r["questionId"]) for r in results], "question ids in the results")
    return out


def evaluate_gqa(questions: Mapping[str, Mapping], predictions: Mapping[str, str]) -> dict:
    """{"accuracy", "binary", "open", "accuracyPerStructuralType", "accuracyPerSemanticType", "n"} (percentages)
    over the balanced questions of `questions` (the question file's dict, id -> question)."""
    scores: dict = {"accuracy": [], "binary": [], "open": [], "accuracyPerStructuralType": {},
                    "accuracyPerSemanticType": {}}
    unanswered = [q for q, v in questions.items() if v.get("isBalanced", True) and "answer" not in v]
    if unanswered:
        raise ScoreError(f"{len(unanswered)} questions have no answer (e.g. {unanswered[:3]}): a test or challenge "
                         f"file is scored by the evaluation server, not here; give testdev or val questions")
    missing = [q for q, v in questions.items() if v.get("isBalanced", True) and str(q) not in predictions]
    if missing:
        raise ScoreError(f"no prediction for {len(missing)} balanced questions (e.g. {missing[:3]}); the official "
                         f"eval.py needs one for every question of the split")
    from .checks import nonempty

    nonempty(sum(1 for v in questions.values() if isinstance(v, Mapping) and v.get("isBalanced", True)), "GQA accuracy",
             "the question file marks no question balanced (isBalanced); give a *_balanced_questions.json file")
    unknown = [p for p in predictions if p not in {str(q) for q in questions}]
    for qid, q in questions.items():
        if not q.get("isBalanced", True):
            continue
        score = float(predictions[str(qid)] == q["answer"])
        types = q.get("types", {})
        structural = types.get("structural", "")
        scores["accuracy"].append(score)
        scores["open" if structural == "query" else "binary"].append(score)
        scores["accuracyPerStructuralType"].setdefault(structural, []).append(score)
        scores["accuracyPerSemanticType"].setdefault(types.get("semantic", ""), []).append(score)

    def pct(values) -> float:
        return 100 * sum(values) / len(values) if values else 0.0

    return {"n": len(scores["accuracy"]), "unknown_ids": len(unknown), "accuracy": pct(scores["accuracy"]),
            "binary": pct(scores["binary"]),
            "open": pct(scores["open"]),
            **{k: {t: pct(v) for t, v in sorted(scores[k].items())}
               for k in ("accuracyPerStructuralType", "accuracyPerSemanticType")}}


def score_gqa_files(results: str, questions: str) -> dict:
    from .files import read_json

    data = read_json(questions, "GQA question file")
    if not isinstance(data, dict):
        raise ScoreError(f"{questions} is not a GQA question file (an object question id -> question, e.g. "
                         f"testdev_balanced_questions.json)")
    return evaluate_gqa(data, results_map(read_json(results, "results file")))
