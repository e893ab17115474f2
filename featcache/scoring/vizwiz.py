"""VizWiz-VQA scored as the VizWiz challenge's evaluation does (vqaEval.py of the VizWiz API, by Qing Li, after
the VQA evaluator), with its differences from VQAv2's (featcache.scoring.vqa) kept:

- questions are keyed by their image ("VizWiz_val_00000000.jpg"): results are [{"image", "answer"}];
- the prediction is always normalised (newlines/tabs to spaces, stripped, punctuation, periods, lower case,
  number words, articles, contractions), the human answers never (VizWiz ships them normalised);
- its contraction table restores curly apostrophes (dont -> don’t) where VQAv2's writes straight ones;
- accuracy is the leave-one-out mean of min(1, matches / 3) over the 10 answers, 0-100 rounded by Python 3's
  round() to 2 decimals, overall and per answer type (yes/no, number, other, unanswerable);
- answerability: average precision and F1 (threshold 0.5) of "unanswerable" (1 - `answerable`), from the
  results' "answerable" probability (the answerability task's field) or, where it is absent, from whether the
  normalised answer is "unanswerable".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from ..errors import ScoreError
from .vqa import ARTICLES, NUMBER_WORDS, _clean, _ids, process_punctuation

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn’t’ve", "couldnt’ve": "couldn’t’ve", "didnt": "didn’t", "doesnt": "doesn’t", "dont": "don’t",
    "hadnt": "hadn’t", "hadnt’ve": "hadn’t’ve", "hadn'tve": "hadn’t’ve", "hasnt": "hasn’t", "havent": "haven’t",
    "hed": "he’d", "hed’ve": "he’d’ve", "he’dve": "he’d’ve", "hes": "he’s", "howd": "how’d", "howll": "how’ll",
    "hows": "how’s", "Id’ve": "I’d’ve", "I’dve": "I’d’ve", "Im": "I’m", "Ive": "I’ve", "isnt": "isn’t", "itd": "it’d",
    "itd’ve": "it’d’ve", "it’dve": "it’d’ve", "itll": "it’ll", "let’s": "let’s", "maam": "ma’am", "mightnt": "mightn’t",
    "mightnt’ve": "mightn’t’ve", "mightn’tve": "mightn’t’ve", "mightve": "might’ve", "mustnt": "mustn’t",
    "mustve": "must’ve", "neednt": "needn’t", "notve": "not’ve", "oclock": "o’clock", "oughtnt": "oughtn’t",
    "ow’s’at": "’ow’s’at", "’ows’at": "’ow’s’at", "’ow’sat": "’ow’s’at", "shant": "shan’t", "shed’ve": "she’d’ve",
    "she’dve": "she’d’ve", "she’s": "she’s", "shouldve": "should’ve", "shouldnt": "shouldn’t",
    "shouldnt’ve": "shouldn’t’ve", "shouldn’tve": "shouldn’t’ve", "somebody’d": "somebodyd",
    "somebodyd’ve": "somebody’d’ve", "somebody’dve": "somebody’d’ve", "somebodyll": "somebody’ll",
    "somebodys": "somebody’s", "someoned": "someone’d", "someoned’ve": "someone’d’ve", "someone’dve": "someone’d’ve",
    "someonell": "someone’ll", "someones": "someone’s", "somethingd": "something’d", "somethingd’ve": "something’d’ve",
    "something’dve": "something’d’ve", "somethingll": "something’ll", "thats": "that’s", "thered": "there’d",
    "thered’ve": "there’d’ve", "there’dve": "there’d’ve", "therere": "there’re", "theres": "there’s", "theyd": "they’d",
    "theyd’ve": "they’d’ve", "they’dve": "they’d’ve", "theyll": "they’ll", "theyre": "they’re", "theyve": "they’ve",
    "twas": "’twas", "wasnt": "wasn’t", "wed’ve": "we’d’ve", "we’dve": "we’d’ve", "weve": "we've", "werent": "weren’t",
    "whatll": "what’ll", "whatre": "what’re", "whats": "what’s", "whatve": "what’ve", "whens": "when’s",
    "whered": "where’d", "wheres": "where's", "whereve": "where’ve", "whod": "who’d", "whod’ve": "who’d’ve",
    "who’dve": "who’d’ve", "wholl": "who’ll", "whos": "who’s", "whove": "who've", "whyll": "why’ll", "whyre": "why’re",
    "whys": "why’s", "wont": "won’t", "wouldve": "would’ve", "wouldnt": "wouldn’t", "wouldnt’ve": "wouldn’t’ve",
    "wouldn’tve": "wouldn’t’ve", "yall": "y’all", "yall’ll": "y’all’ll", "y’allll": "y’all’ll", "yall’d’ve": "y’all’d’ve",
    "y’alld’ve": "y’all’d’ve", "y’all’dve": "y’all’d’ve", "youd": "you’d", "youd’ve": "you’d’ve", "you’dve": "you’d’ve",
    "youll": "you’ll", "youre": "you’re", "youve": "you’ve",
}
UNANSWERABLE = "unanswerable"


@lru_cache(maxsize=1 << 16)
def normalize_prediction(text: str) -> str:
    """The VizWiz evaluation's normalisation of a predicted answer (its human answers are compared as they are)."""
    words = [NUMBER_WORDS.get(w, w) for w in process_punctuation(_clean(text)).lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def answer_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """0..1, unrounded: the mean over the answers of min(1, matches among the other answers / 3)."""
    if not answers:
        raise ScoreError("a VizWiz question without answers cannot be scored (the test split is predicted, not scored)")
    pred = normalize_prediction(prediction)
    c = sum(1 for a in answers if a == pred)
    hit, miss = min(1, float(c - 1) / 3), min(1, float(c) / 3)
    return float(sum([hit if a == pred else miss for a in answers])) / len(answers)


def soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """Answer -> its VizWiz accuracy, for every answer scoring above 0: the soft targets of a VizWiz classifier.
    An answer that normalisation would change can never match (the prediction is normalised, the humans' are
    not), so only answers already in normal form are targets."""
    return {a: s for a in dict.fromkeys(answers) if normalize_prediction(a) == a
            and (s := answer_accuracy(a, answers)) > 0}


def _answer_strings(annotation: Mapping, i: int) -> list[str]:
    answers = annotation.get("answers")
    if not isinstance(answers, list) or not all(isinstance(a, Mapping) and "answer" in a or isinstance(a, str)
                                                for a in answers):
        raise ScoreError(f"annotation {i} (image {annotation.get('image')!r}): \"answers\" must be a list of "
                         f"{{\"answer\": ...}} objects; is this a VizWiz annotation file (Annotations/val.json)?")
    return [a if isinstance(a, str) else a["answer"] for a in answers]


def unanswerability(answerable: Sequence[int], predicted: Sequence[float]) -> dict:
    """Average precision and F1 (at 0.5) of "unanswerable", 0-100 rounded to 2 decimals, as the script computes
    them with scikit-learn from the human label and the predicted probability of being answerable (scikit-learn's
    values, unwarned, where no question is unanswerable: a small validation subset)."""
    import warnings

    import numpy as np
    from sklearn.metrics import average_precision_score, f1_score

    gt_n, pred_n = 1 - np.asarray(answerable, dtype=int), 1.0 - np.asarray(predicted, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {"average_precision": round(100 * float(average_precision_score(gt_n, pred_n)), 2),
                "f1_score": round(100 * float(f1_score(gt_n, pred_n > 0.5, zero_division=0)), 2)}


def check_results(results, annotated: Sequence[str]) -> tuple[dict, dict | None, int]:
    """image -> predicted answer (and -> "answerable" probability where every entry has one) from a results list,
    refusing a missing image (the script fails on one) and naming it; predictions for other images are counted."""
    if not isinstance(results, list):
        raise ScoreError('VizWiz results must be a JSON list of {"image": ..., "answer": ...} objects, got a JSON '
                         f"{type(results).__name__}")
    from .checks import answer_text, probability, question_id, unique

    answers, answerable = {}, {}
    for i, r in enumerate(results):
        if not isinstance(r, Mapping) or "image" not in r or ("answer" not in r and "answerable" not in r):
            raise ScoreError(f'results entry {i} is not an object with "image" and "answer": {str(r)[:80]}')
        image = question_id(r["image"], f"results entry {i}")
        if "answer" in r:
            answers[image] = answer_text(r["answer"], f"results entry {i} (image {image!r})")
        if "answerable" in r:
            answerable[image] = probability(r["answerable"], f'results entry {i} (image {image!r}): "answerable"')
    unique([question_id(r["image"], "") for r in results if isinstance(r, Mapping) and "image" in r],
           "images in the results")
    missing = [img for img in annotated if img not in answers and img not in answerable]
    if missing:
        raise ScoreError(f"no prediction for {_ids(missing, 'annotated images')}: predict every image of the split")
    if answers and len(answers) < len(answerable | answers):  # (the accuracy was left out without a word)
        lacking = [img for img in annotated if img not in answers]
        if lacking:
            raise ScoreError(f"{len(lacking)} results have \"answerable\" but no \"answer\" (e.g. {lacking[:3]}): give "
                             f"every result an answer, or none (the answerability task alone)")
    unknown = len((set(answers) | set(answerable)) - set(annotated))
    return answers, (answerable if all(img in answerable for img in annotated) else None), unknown


def evaluate_vizwiz(annotations: Sequence[Mapping], results) -> dict:
    """The VizWiz evaluation of `results` against an annotation file's list: {"accuracy": {"overall",
    "perAnswerType"}, "evalQA" (per image), "unanswerability": {"average_precision", "f1_score"}}, with
    "answerable_from" saying whether the probabilities came from the results or from their answers."""
    from .checks import flag, question_id, unique

    refs, types, labels = {}, {}, {}
    for i, a in enumerate(annotations):
        if not isinstance(a, Mapping) or "image" not in a:
            raise ScoreError(f"annotation {i} has no \"image\"; is this a VizWiz annotation file (Annotations/val.json)?")
        image = question_id(a["image"], f"annotation {i}")
        refs[image] = _answer_strings(a, i)
        types[image] = str(a.get("answer_type", ""))
        if "answerable" in a:
            labels[image] = flag(a["answerable"], f"annotation {i} (image {image!r}): \"answerable\"")
    unique([str(a["image"]) for a in annotations], "images in the annotations")
    if not refs:
        raise ScoreError("the annotation file holds no questions")
    if labels and len(labels) < len(refs):  # (the answerability figures were left out without a word)
        raise ScoreError(f"{len(refs) - len(labels)} of {len(refs)} annotations have no \"answerable\": the "
                         f"answerability figures need it on every one (or on none)")
    answers, answerable, unknown = check_results(results, list(refs))
    out: dict = {"n": len(refs), "unknown_images": unknown}
    answered = all(img in answers for img in refs)
    if answered:
        per_q = {img: answer_accuracy(answers[img], refs[img]) for img in refs}
        per_type: dict[str, list[float]] = {}
        for img, acc in per_q.items():
            per_type.setdefault(types[img], []).append(acc)
        out["accuracy"] = {"overall": round(100 * float(sum(per_q.values())) / len(per_q), 2),
                           "perAnswerType": {t: round(100 * float(sum(v)) / len(v), 2) for t, v in per_type.items()}}
        out["evalQA"] = {img: round(100 * acc, 2) for img, acc in per_q.items()}
    if len(labels) == len(refs):
        if answerable is None and answered:
            answerable = {img: float(normalize_prediction(answers[img]) != UNANSWERABLE) for img in refs}
            out["answerable_from"] = "answers"
        elif answerable is not None:
            out["answerable_from"] = "results"
        if answerable is not None:
            out["unanswerability"] = unanswerability([labels[img] for img in refs], [answerable[img] for img in refs])
    return out


def score_vizwiz_files(results: str, annotations: str) -> dict:
    """`evaluate_vizwiz` of a results file against a split's annotation file (Annotations/val.json)."""
    from .files import read_json

    anns = read_json(annotations, "annotation file")
    if not isinstance(anns, list):
        raise ScoreError(f"{annotations} is not a VizWiz annotation file (a JSON list of {{\"image\", \"question\", "
                         f"\"answers\", ...}}), got a JSON {type(anns).__name__}")
    return evaluate_vizwiz(anns, read_json(results, "results file"))
