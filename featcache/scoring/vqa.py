"""VQA accuracy exactly as the official evaluator computes it (GT-Vision-Lab/VQA, PythonEvaluationTools/
vqaEvaluation/vqaEval.py at "Fixed processing answers bug", a013f00), quirks included:

- an answer (human or predicted) has newlines and tabs turned into spaces and is stripped; then, only when the
  question's human answers are not all the same string, every answer and the prediction are normalised:
  punctuation (removed, or turned into a space unless it touches a space or the text has a digit,digit comma),
  periods not before a digit removed (at most 32 of them: the script passes re.UNICODE as sub()'s count),
  lower case, number words zero..ten (and "none") as digits, articles dropped, contractions restored;
- a prediction's accuracy is the mean over the human answers of min(1, matches among the OTHER answers / 3)
  ("others" = the answer entries that differ from it as dicts, so leave-one-out where ids are unique);
- figures are 100 x the mean, rounded to 2 decimals as the script's Python 2 round() does (ties away from
  zero; Python 3's round() would break them to even).

A result file must name exactly the annotated question ids (the official loadRes asserts this too); here the
refusal names the ids. The functions take the parsed JSON, so a report over a cache and `featcache score vqa`
over files run the same code.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from ..errors import ScoreError

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: "(?!<=" is a lookahead, as in the script
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_PERIOD_COUNT = re.UNICODE.value  # the script's sub("", text, re.UNICODE) passes 32 as the count


@lru_cache(maxsize=1 << 18)  # answers repeat: VQAv2 train's 4.4M human answers are ~150k distinct strings
def process_punctuation(text: str) -> str:
    out = text
    digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


@lru_cache(maxsize=1 << 18)
def process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """The evaluator's normalisation of one answer (applied when a question's human answers differ)."""
    return process_digit_article(process_punctuation(_clean(text)))


@lru_cache(maxsize=1 << 18)
def _clean(text: str) -> str:
    return str(text).replace("\n", " ").replace("\t", " ").strip()


@lru_cache(maxsize=1 << 18)
def _processed(text: str) -> str:
    """process_digit_article(process_punctuation(text)), one cache lookup instead of two."""
    return process_digit_article(process_punctuation(text))


def round_official(value: float, digits: int = 2) -> float:
    """Python 2's round(): the exact binary value, ties away from zero."""
    return float(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _entries(answers: Sequence[str | Mapping]) -> list[dict]:
    """Human answers as the annotation file's dicts; bare strings get ids 1..n, as VQAv2's answers have."""
    return [dict(a) if isinstance(a, Mapping) else {"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)]


def question_accuracy(prediction: str, answers: Sequence[str | Mapping]) -> float:
    """The official accuracy (0..1, unrounded) of `prediction` against one question's human answers (strings,
    or the annotation's dicts with "answer")."""
    if not answers:
        raise ScoreError("a question without human answers cannot be scored (a test split is predicted, not scored)")
    if all(isinstance(a, str) for a in answers):
        return _accuracy_of_strings(prediction, answers)
    gts = _entries(answers)
    for g in gts:
        g["answer"] = _clean(g["answer"])
    pred = _clean(prediction)
    if len(set(g["answer"] for g in gts)) > 1:
        for g in gts:
            g["answer"] = process_digit_article(process_punctuation(g["answer"]))
        pred = process_digit_article(process_punctuation(pred))
    accs = []
    for g in gts:
        matches = sum(1 for other in gts if other != g and other["answer"] == pred)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs)


def _accuracy_of_strings(prediction: str, answers: Sequence[str]) -> float:
    """question_accuracy for bare answers (distinct entries, as ids 1..n make them), by counting: with c of the
    answers equal to the prediction, each of those sees c - 1 matches among the others and every other sees c."""
    gts = [_clean(a) for a in answers]
    pred = _clean(prediction)
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        pred = process_digit_article(process_punctuation(pred))
    c = gts.count(pred)
    hit, miss = min(1.0, (c - 1) / 3), min(1.0, c / 3)
    return sum([hit if a == pred else miss for a in gts]) / len(gts)  # summed in the script's order: bit-equal


def soft_scores(answers: Sequence[str | Mapping]) -> dict[str, float]:
    """Answer -> the official accuracy of predicting it, for every answer that scores above 0: the soft target of
    VQA-as-classification (0.3 / 0.6 / 0.9 / 1.0 for 1 / 2 / 3 / 4+ of 10 matching), computed by the metric
    itself so a head's target is exactly what the evaluator rewards. Keys are the answers as the evaluator
    compares them (normalised when the human answers differ)."""
    if answers and all(isinstance(a, str) for a in answers):
        return _soft_scores_of_strings(answers)
    raw = [_clean(e["answer"]) for e in _entries(answers)]
    candidates = raw if len(set(raw)) <= 1 else [normalize_answer(a) for a in raw]
    out = {}
    for c in dict.fromkeys(candidates):
        score = question_accuracy(c, answers)
        if score > 0:
            out[c] = score
    return out


def _soft_scores_of_strings(answers: Sequence[str]) -> dict[str, float]:
    """soft_scores for bare answers, with each answer normalised once rather than once per candidate (a VQAv2
    training set has 443k answer lists): the same candidates, the same sums in the same order."""
    gts = list(map(_clean, answers))
    n = len(gts)
    if len(set(gts)) == 1:  # (most VQAv2 lists: ten of one answer, which _clean leaves as it is)
        c = gts[0]
        score = 1.0 if n >= 4 else sum([min(1.0, (n - 1) / 3)] * n) / n
        return {c: score} if score > 0 else {}
    gts = list(map(_processed, gts))
    out = {}
    for c in dict.fromkeys(gts):
        pred = _processed(_clean(c))  # question_accuracy(c, answers) cleans and normalises c again
        k = gts.count(pred)
        if k >= 4:  # every leave-one-out subset still holds 3 matches: n terms of 1.0, exactly
            score = 1.0
        else:
            hit, miss = min(1.0, (k - 1) / 3), min(1.0, k / 3)
            score = sum([hit if a == pred else miss for a in gts]) / n
        if score > 0:
            out[c] = score
    return out


def soft_scores_of_lists(answer_lists: Iterable[Sequence[str | Mapping]]) -> list[dict[str, float]]:
    """[soft_scores(a) for a in answer_lists], each distinct list scored once: lists repeat (ten times "yes"),
    VQAv2 train's 443k hold 292k distinct. Rows with the same list share one dict."""
    seen: dict[tuple, dict] = {}
    out = []
    for answers in answer_lists:
        try:
            key = tuple(answers)
            scores = seen.get(key)
        except TypeError:  # (entries as {"answer": ...} dicts are not hashable)
            out.append(soft_scores(answers))
            continue
        if scores is None:
            scores = seen[key] = (_soft_scores_of_strings(key) if all(type(a) is str for a in key)
                                  else soft_scores(answers)) if key else {}
        out.append(scores)
    return out


def vqa_vocabulary(answers: Iterable[str], min_count: int = 9) -> list[str]:
    """The field's answer vocabulary: normalised answers (one per question, its `multiple_choice_answer`) seen at
    least `min_count` times, most frequent first (3,129 answers on VQAv2 train+val at 9)."""
    counts = Counter(normalize_answer(a) for a in answers)
    return [a for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count and a]


def _ids(items: Iterable, what: str) -> str:
    items = list(items)
    shown = ", ".join(map(repr, items[:5]))
    return f"{len(items)} {what} ({shown}{', ...' if len(items) > 5 else ''})"


def _hashable(value, where: str):
    """An id usable as a key (a JSON list or object is none)."""
    if isinstance(value, (list, dict)):
        raise ScoreError(f"{where}: question_id must be a number or a string, got {str(value)[:40]}")
    return value


def check_results(results, annotated: Iterable) -> dict:
    """question id -> predicted answer from a results list [{"question_id", "answer"}], refusing what the official
    loadRes refuses (not a list; missing or unknown ids), with the ids named. A repeated id keeps its last
    answer, as loadRes does."""
    if not isinstance(results, list):
        raise ScoreError('results must be a JSON list of {"question_id": ..., "answer": ...} objects (the official '
                         f"format), got a JSON {type(results).__name__}")
    from .checks import answer_text

    predictions = {}
    for i, r in enumerate(results):
        if not isinstance(r, Mapping) or "question_id" not in r or "answer" not in r:
            raise ScoreError(f'results entry {i} is not an object with "question_id" and "answer": {str(r)[:80]}')
        _hashable(r["question_id"], f"results entry {i}")
        predictions[r["question_id"]] = answer_text(r["answer"], f"results entry {i} (question {r['question_id']})")
    annotated = set(annotated)
    missing, unknown = annotated - set(predictions), set(predictions) - annotated
    if missing or unknown:
        parts = ([f"no prediction for {_ids(sorted(missing, key=str), 'annotated question ids')}"] if missing else []) \
            + ([f"{_ids(sorted(unknown, key=str), 'question ids')} not in the annotations"] if unknown else [])
        hint = (" (the results' ids are strings; the official files have integer question ids)"
                if unknown and all(isinstance(q, str) for q in unknown) else "")
        raise ScoreError("results do not match the annotated questions: " + "; ".join(parts) + hint +
                         ". The official evaluator refuses such a file too: predict every question of the split.")
    return predictions


def evaluate_vqa(annotations: Sequence[Mapping], results, questions: Sequence[Mapping] | None = None) -> dict:
    """The official evaluation of `results` (the results file's list) against `annotations` (the annotation
    file's "annotations" list): {"accuracy": {"overall", "perQuestionType", "perAnswerType"}, "evalQA",
    "evalQuesType", "evalAnsType"} with the script's rounding; `questions` (the question file's "questions"), when
    given, must name the same ids."""
    by_id = {}
    for i, a in enumerate(annotations):
        if not isinstance(a, Mapping):
            raise ScoreError(f"annotation {i} is a JSON {type(a).__name__}, not an object; is this a VQA annotation "
                             f"file (v2_mscoco_*_annotations.json)?")
        missing = [k for k in ("question_id", "answers") if k not in a]
        if missing:
            raise ScoreError(f"annotation {i} has no {' or '.join(missing)}; is this a VQA annotation file "
                             f"(v2_mscoco_*_annotations.json)?")
        if not isinstance(a["answers"], list) or not all(isinstance(e, str) or (isinstance(e, Mapping) and "answer" in e)
                                                         for e in a["answers"]):
            raise ScoreError(f"annotation {i} (question {a['question_id']}): \"answers\" must be a list of "
                             f"{{\"answer\": ...}} objects, got {str(a['answers'])[:80]}")
        _hashable(a["question_id"], f"annotation {i}")
        by_id[a["question_id"]] = a
    from .checks import unique

    unique([str(a["question_id"]) for a in annotations], "question ids in the annotations")
    if questions is not None:
        lacking = [i for i, q in enumerate(questions) if not isinstance(q, Mapping) or "question_id" not in q]
        if lacking:
            raise ScoreError(f"question {lacking[0]} of the question file has no \"question_id\"; is it a VQA question "
                             f"file (v2_OpenEnded_mscoco_*_questions.json)?")
        asked = {_hashable(q["question_id"], "a question") for q in questions}
        if asked != set(by_id):
            raise ScoreError("the question and annotation files do not match: "
                             + "; ".join(p for p in (
                                 f"{_ids(sorted(set(by_id) - asked, key=str), 'annotations')} without a question"
                                 if set(by_id) - asked else "",
                                 f"{_ids(sorted(asked - set(by_id), key=str), 'questions')} without an annotation"
                                 if asked - set(by_id) else "") if p)
                             + ". Give the files of one split (e.g. v2_OpenEnded_mscoco_val2014_questions.json with "
                               "v2_mscoco_val2014_annotations.json)")
    predictions = check_results(results, by_id)
    repeated = len(results) - len(predictions)  # (kept: the last answer counts, as the official loadRes does)
    per_q, per_qtype, per_atype = {}, {}, {}
    for qid, ann in by_id.items():
        acc = question_accuracy(predictions[qid], ann["answers"])
        qtype, atype = ann.get("question_type", ""), ann.get("answer_type", "")
        per_q[qid] = acc
        per_qtype.setdefault(qtype, {})[qid] = acc
        per_atype.setdefault(atype, {})[qid] = acc

    def mean(values) -> float:
        values = list(values)
        return round_official(100 * sum(values) / len(values))

    return {
        "accuracy": {"overall": mean(per_q.values()),
                     "perQuestionType": {t: mean(v.values()) for t, v in per_qtype.items()},
                     "perAnswerType": {t: mean(v.values()) for t, v in per_atype.items()}},
        "evalQA": {q: round_official(100 * a) for q, a in per_q.items()},
        "evalQuesType": {t: {q: round_official(100 * a) for q, a in v.items()} for t, v in per_qtype.items()},
        "evalAnsType": {t: {q: round_official(100 * a) for q, a in v.items()} for t, v in per_atype.items()},
        "empty_predictions": sum(1 for q in by_id if not normalize_answer(predictions[q])),
        "repeated_results": repeated,
    }


def vqa_accuracy_of(predictions: Mapping, references: Mapping[object, Sequence[str]],
                    answer_types: Mapping | None = None, question_types: Mapping | None = None) -> dict:
    """`evaluate_vqa` from plain mappings (question id -> prediction, -> its human answers, -> its types): what
    a report over a cache calls, the cache holding each question's answers."""
    annotations = [{"question_id": q, "answers": list(refs),
                    "answer_type": (answer_types or {}).get(q, ""), "question_type": (question_types or {}).get(q, "")}
                   for q, refs in references.items()]
    return evaluate_vqa(annotations, [{"question_id": q, "answer": a} for q, a in predictions.items()])


def score_vqa_files(results: str, annotations: str, questions: str | None = None) -> dict:
    """`evaluate_vqa` of the official files: a results file, the split's annotation file and (optionally) its
    question file."""
    from .files import field, read_json

    anns = field(read_json(annotations, "annotation file"), "annotations", annotations,
                 "a VQA annotation file (v2_mscoco_val2014_annotations.json)")
    ques = None if questions is None else field(read_json(questions, "question file"), "questions", questions,
                                                "a VQA question file (v2_OpenEnded_mscoco_val2014_questions.json)")
    return evaluate_vqa(anns, read_json(results, "results file"), ques)
