"""The field's protocols over a benchmark cache (one holding each question's id and reference answers, see
featcache.cache.answers), dispatched on the cache's `metric`:

- vqa (VQAv2, OK-VQA): labels are the evaluator-normalised `multiple_choice_answer`s; the vocabulary is those seen
  at least 9 times in the training split; lr, mlp and attnpool train on the metric's own soft scores (knn votes
  with them); the figure is the official VQA accuracy, per answer type;
- gqa: labels are the answers as they are; the vocabulary every training answer; the figure is eval.py's
  accuracy with binary / open;
- aokvqa: labels are the correct choices; the vocabulary every training label; the figures are the direct-answer
  accuracy (primary) and multiple choice, where the head picks the likeliest of each question's choices;
- vizwiz: labels are each image's most common answer as VizWiz ships it; the vocabulary those seen at least 3
  times that the evaluation can match (in normal form); lr, mlp and attnpool train on VizWiz's soft scores; the
  figures are the VizWiz accuracy per answer type and the average precision / F1 of "unanswerable", its probability
  the head's probability of the answer "unanswerable".
Training questions outside the vocabulary are left out; evaluation keeps every question, each scored as the
benchmark scores it. Predictions go out in the benchmark's results format (`submission`)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from featcache.cache.answers import References, read_references
from featcache.cache.views import question_rows
from featcache.errors import FeatcacheError
from featcache.scoring.aokvqa import direct_answer_accuracy, evaluate_aokvqa
from featcache.scoring.gqa import evaluate_gqa
from featcache.scoring import vizwiz
from featcache.scoring.vqa import (normalize_answer, round_official, soft_scores, soft_scores_of_lists, vqa_accuracy_of,
                                   vqa_vocabulary)

DEFAULT_MIN_COUNT = {"vqa": 9, "gqa": 1, "aokvqa": 1, "vizwiz": 3}
"""The vocabulary rule per metric: VQA's >= 9 (3,129 answers on VQAv2 train+val: bottom-up-top-down, ViLT,
LXMERT); GQA's and A-OKVQA's classifiers take every training answer; VizWiz's 20k training questions (a twentieth
of VQAv2's) would keep too few answers at 9, so >= 3, the matches that earn full credit."""


def split_references(cache, split) -> References | None:
    """The benchmark fields of the questions of `split`'s view, row for row; None on other caches."""
    return read_references(cache, question_rows(cache, split))


@dataclass
class SplitData:
    """A view's (X, y) of each split, their references, and the soft targets of the first split's rows."""

    views: list[tuple]
    references: list[References | None]
    soft: np.ndarray | None
    """soft_targets of every row of the first split (None off the VQA and VizWiz protocols)."""


def read_splits(cache, view: str, splits: list[str], stream: bool = False) -> SplitData:
    """What a head's fit and evaluation on a benchmark cache read, with the view read in a second thread while the
    references are parsed and the first split's soft targets scored: h5py releases the GIL while it reads the
    features, and the references are Python work (on VQAv2's itc, seconds each: docs/guide/datasets.md)."""
    with ThreadPoolExecutor(1, thread_name_prefix="featcache-view") as pool:
        views = pool.submit(cache.split_views, view, list(splits), stream)
        references = [split_references(cache, split) for split in splits]
        first = references[0]
        soft = soft_targets(first) if first is not None and first.scored else None
        return SplitData(views.result(), references, soft)


@dataclass
class TrainingSet:
    rows: np.ndarray
    """Rows of the training view kept: those whose label is in the vocabulary."""
    labels: np.ndarray
    vocabulary: list[str]


def training_set(y, min_count: int | None = None, metric: str = "vqa", vocabulary_answers=None) -> TrainingSet:
    """The field's training set of a benchmark's training split: its labels and its vocabulary, counted over
    `vocabulary_answers` where given (e.g. train+val, as VQAv2's 3,129 are), else over y."""
    min_count = DEFAULT_MIN_COUNT[metric] if min_count is None else min_count
    labels = eval_labels(y, metric)
    counted = y if vocabulary_answers is None else vocabulary_answers
    if metric == "vqa":
        vocabulary = vqa_vocabulary(counted, min_count)
    elif metric == "vizwiz":  # the prediction is normalised, the humans' answers not: only normal forms can score
        vocabulary = [a for a, c in sorted(Counter(map(str, counted)).items(), key=lambda kv: (-kv[1], kv[0]))
                      if c >= min_count and a and vizwiz.normalize_prediction(a) == a]
    else:
        vocabulary = [a for a, c in sorted(Counter(eval_labels(counted, metric).tolist()).items(),
                                           key=lambda kv: (-kv[1], kv[0])) if c >= min_count and a]
    if len(vocabulary) < 2:
        raise FeatcacheError(f"only {len(vocabulary)} answer(s) occur at least {min_count} times in the training "
                             f"split; lower the vocabulary threshold (--min-answer-count)")
    known = set(vocabulary)  # (np.isin on 443k strings sorts object arrays: 17 s; a set: 0.1 s)
    rows = np.flatnonzero(np.fromiter((label in known for label in labels), dtype=bool, count=len(labels)))
    return TrainingSet(rows, labels[rows], vocabulary)


def eval_labels(y, metric: str = "vqa") -> np.ndarray:
    """Labels as the benchmark compares them: VQA's normalised, the others' as they are."""
    if metric == "vqa":
        return np.array([normalize_answer(a) for a in y], dtype=object)
    return np.asarray(y, dtype=object)


def soft_targets(refs: References) -> np.ndarray | None:
    """VQA: one {answer: soft score} per row (the metric's own score of each answer: featcache.scoring.soft_scores),
    as an object array a head's fit slices with X and y. Other metrics train on their labels: None."""
    if refs.metric not in ("vqa", "vizwiz"):
        return None
    out = np.empty(len(refs.answers), dtype=object)
    if refs.metric == "vqa":
        out[:] = soft_scores_of_lists(refs.answers)
        return out
    seen: dict[tuple, dict] = {}  # answer lists repeat: each distinct one is scored once
    for i, answers in enumerate(refs.answers):
        key = tuple(answers)
        if key not in seen:
            seen[key] = vizwiz.soft_scores(answers) if answers else {}
        out[i] = seen[key]
    return out


def _ids(refs: References) -> list[str]:
    return [q or f"row{i}" for i, q in enumerate(refs.question_ids)]


def vqa_scores(predictions, refs: References) -> dict:
    """The official VQA accuracy of `predictions` (row for row with `refs`): overall, per answer type, per
    question type (0-100, two decimals), and n."""
    ids = _ids(refs)
    scored = vqa_accuracy_of(dict(zip(ids, map(str, predictions))), dict(zip(ids, refs.answers)),
                             dict(zip(ids, refs.answer_types)), dict(zip(ids, refs.question_types)))
    return {"n": len(ids), **scored["accuracy"]}


def gqa_scores(predictions, refs: References) -> dict:
    ids = _ids(refs)
    questions = {q: {"answer": a[0] if a else "", "types": {"structural": st, "semantic": se}}
                 for q, a, st, se in zip(ids, refs.answers, refs.question_types, refs.answer_types)}
    return evaluate_gqa(questions, dict(zip(ids, map(str, predictions))))


def mc_choices(proba: np.ndarray, classes, refs: References) -> list[str]:
    """Per row, the likeliest of its choices under the head's probabilities (the first choice where none is a
    class): a classifier answering multiple choice."""
    column = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    out = []
    for p, choices in zip(proba, refs.choices):
        scored = [(p[column[c]], -k, c) for k, c in enumerate(choices) if c in column]
        out.append(max(scored)[2] if scored else (choices[0] if choices else ""))
    return out


def aokvqa_scores(predictions, refs: References, mc: list[str] | None) -> dict:
    ids = _ids(refs)
    dataset = [{"question_id": q, "choices": c, "correct_choice_idx": c.index(a) if a in c else 0,
                "direct_answers": d, "difficult_direct_answer": t == "difficult"}
               for q, c, a, d, t in zip(ids, refs.choices, refs.labels(), refs.answers, refs.answer_types)]
    preds = {q: {"direct_answer": str(p), **({"multiple_choice": m} if mc is not None else {})}
             for q, p, m in zip(ids, predictions, mc if mc is not None else [None] * len(ids))}
    return evaluate_aokvqa(dataset, preds)


def answerable_probability(predictions, proba=None, classes=None) -> list[float]:
    """VizWiz: per row, the probability that the question is answerable: 1 - the head's probability of the answer
    "unanswerable" where it has that class, else 0 or 1 from whether the prediction is "unanswerable"."""
    names = np.asarray(classes if classes is not None else [], dtype=object).tolist()
    if proba is not None and vizwiz.UNANSWERABLE in names:
        return (1.0 - np.asarray(proba)[:, names.index(vizwiz.UNANSWERABLE)]).astype(float).tolist()
    return [float(vizwiz.normalize_prediction(str(p)) != vizwiz.UNANSWERABLE) for p in predictions]


def vizwiz_scores(predictions, refs: References, proba=None, classes=None) -> dict:
    ids = _ids(refs)
    flagged = all(t in ("answerable", "unanswerable") for t in refs.question_types)
    annotations = [{"image": q, "answers": a, "answer_type": t, **({"answerable": int(f == "answerable")} if flagged
                                                                   else {})}
                   for q, a, t, f in zip(ids, refs.answers, refs.answer_types, refs.question_types)]
    results = [{"image": q, "answer": str(p), "answerable": r}
               for q, p, r in zip(ids, predictions, answerable_probability(predictions, proba, classes))]
    scored = vizwiz.evaluate_vizwiz(annotations, results)
    return {"n": scored["n"], **scored["accuracy"], **scored.get("unanswerability", {})}


def benchmark_scores(predictions, refs: References, proba=None, classes=None, mc: list[str] | None = None) -> dict:
    """The benchmark's own figures for `predictions`, with `primary` (0-100) the one that ranks results (A-OKVQA's
    multiple choice from `mc`, or from `proba` over `classes`; VizWiz's answerability from `proba`)."""
    if refs.metric == "vizwiz":
        scores = vizwiz_scores(predictions, refs, proba, classes)
        return {"metric": "vizwiz", "primary": scores["overall"], **scores}
    if refs.metric == "gqa":
        scores = gqa_scores(predictions, refs)
        return {"metric": "gqa", "primary": scores["accuracy"], **scores}
    if refs.metric == "aokvqa":
        if mc is None and proba is not None:
            mc = mc_choices(proba, classes, refs)
        scores = aokvqa_scores(predictions, refs, mc)
        return {"metric": "aokvqa", "primary": scores["direct_answer"], **scores}
    scores = vqa_scores(predictions, refs)
    return {"metric": "vqa", "primary": scores["overall"], **scores}


def coverage(vocabulary, refs: References) -> float:
    """The best score any classifier over `vocabulary` can reach on these questions (0-100): VQA accuracy, GQA
    accuracy, A-OKVQA direct-answer accuracy."""
    vocab = set(vocabulary)
    if refs.metric == "gqa":
        best = [float(bool(a) and a[0] in vocab) for a in refs.answers if a]
    elif refs.metric == "aokvqa":
        best = [max([direct_answer_accuracy(v, a) for v in set(a) & vocab], default=0.0)
                for a, t in zip(refs.answers, refs.answer_types) if a and t != "difficult"]
    elif refs.metric == "vizwiz":
        best = [max([s for a, s in vizwiz.soft_scores(answers).items() if a in vocab], default=0.0)
                for answers in refs.answers if answers]
        return round(100 * sum(best) / max(1, len(best)), 2)
    else:
        best = [max([s for a, s in soft_scores(answers).items() if a in vocab], default=0.0)
                for answers in refs.answers if answers]
    return round_official(100 * sum(best) / max(1, len(best)))


def submission(predictions, refs: References, mc: list[str] | None = None, proba=None, classes=None):
    """The benchmark's results format: VQAv2 / OK-VQA [{"question_id", "answer"}] (integer ids where they are),
    GQA [{"questionId", "prediction"}], A-OKVQA {question_id: {"direct_answer"[, "multiple_choice"]}}, VizWiz
    [{"image", "answer", "answerable"}] (one file for both of its tasks)."""
    if refs.metric == "vizwiz":
        return [{"image": q, "answer": str(p), "answerable": round(r, 6)} for q, p, r in
                zip(refs.question_ids, predictions, answerable_probability(predictions, proba, classes))]
    if refs.metric == "gqa":
        return [{"questionId": q, "prediction": str(p)} for q, p in zip(refs.question_ids, predictions)]
    if refs.metric == "aokvqa":
        return {q: {"direct_answer": str(p), **({"multiple_choice": mc[i]} if mc is not None else {})}
                for i, (q, p) in enumerate(zip(refs.question_ids, predictions))}
    return [{"question_id": int(q) if q.isdigit() else q, "answer": str(p)}
            for q, p in zip(refs.question_ids, predictions)]


FIGURE_NAMES = {"vqa": "VQA accuracy", "gqa": "GQA accuracy", "aokvqa": "A-OKVQA direct-answer accuracy",
                "vizwiz": "VizWiz accuracy"}
SCORERS = {"vqa": "the official VQA evaluator (GT-Vision-Lab/VQA)", "gqa": "GQA's eval.py (accuracy, binary, open)",
           "aokvqa": "allenai/aokvqa eval_predictions.py", "vizwiz": "the VizWiz evaluation (VizWiz API vqaEval.py)"}


def breakdown(scores: dict) -> str:
    """The figures beside the primary one, as text: per answer type (VQA), binary / open (GQA), multiple choice
    (A-OKVQA)."""
    if scores["metric"] == "gqa":
        return f"binary {scores['binary']:.2f}, open {scores['open']:.2f}"
    if scores["metric"] == "vizwiz":
        types = ", ".join(f"{t} {v:.2f}" for t, v in sorted(scores["perAnswerType"].items()))
        ap = (f"; unanswerable AP {scores['average_precision']:.2f}, F1 {scores['f1_score']:.2f}"
              if "average_precision" in scores else "")
        return types + ap
    if scores["metric"] == "aokvqa":
        mc = scores.get("multiple_choice")
        return f"multiple choice {mc:.2f}" if mc is not None else "no multiple-choice predictions"
    return ", ".join(f"{t} {v:.2f}" for t, v in sorted(scores["perAnswerType"].items()))
