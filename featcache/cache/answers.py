"""A benchmark's question fields in the cache: its question ids, every human answer, answer and question types.

Stored where a dataset has them (VQAv2, OK-VQA, ...), so reports and `score` compute the benchmark's own
accuracy from the cache alone, without the annotation files:

    /questions/question_id     str   the benchmark's id ("" where none)
    /questions/references      str   a JSON list of the human answers ("[]" for an unanswered split: test-dev)
    /questions/answer_type     str   e.g. yes/no, number, other
    /questions/question_type   str   e.g. "what color is the" (GQA: the structural type)
    /questions/choices         str   a JSON list of the multiple-choice options (A-OKVQA; "[]" elsewhere)

(GQA's /questions/answer_type holds its semantic type; A-OKVQA's is "difficult" where the direct answer is;
VizWiz's /questions/question_type is "answerable" or "unanswerable", the human flag.)
The file attribute `metric` names the benchmark whose scoring applies: vqa, gqa, aokvqa or vizwiz.

In OUT.parts/questions.npz the references travel as UTF-8 bytes plus offsets (a fixed-width text array of
443k JSON lists would take gigabytes; object arrays would need pickle).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np

COLUMNS = ("question_id", "references", "answer_type", "question_type", "choices")


def benchmark_columns(questions) -> dict[str, np.ndarray]:
    """The questions.npz arrays of the benchmark fields; none when no question has an id or references."""
    if not any(q.qid or q.references for q in questions):
        return {}
    blob, offsets = pack([json.dumps(list(q.references), ensure_ascii=False) for q in questions])
    choices, choice_offsets = pack([json.dumps(list(q.choices), ensure_ascii=False) for q in questions])
    return {"question_id": np.array([q.qid for q in questions], dtype=str), "references_utf8": blob,
            "references_offsets": offsets, "answer_type": np.array([q.answer_type for q in questions], dtype=str),
            "question_type": np.array([q.question_type for q in questions], dtype=str), "choices_utf8": choices,
            "choices_offsets": choice_offsets}


def pack(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def unpack(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    data = blob.tobytes()
    return np.array([data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])], dtype=object)


def string_columns(questions_npz: dict) -> dict[str, np.ndarray]:
    """The benchmark columns of a loaded questions.npz as the cache shows them (references as JSON text)."""
    if "question_id" not in questions_npz:
        return {}
    return {"question_id": questions_npz["question_id"].astype(object),
            "references": unpack(questions_npz["references_utf8"], questions_npz["references_offsets"]),
            "answer_type": questions_npz["answer_type"].astype(object),
            "question_type": questions_npz["question_type"].astype(object),
            "choices": unpack(questions_npz["choices_utf8"], questions_npz["choices_offsets"])}


@dataclass
class References:
    """The benchmark fields of some questions of a cache, row for row."""

    question_ids: list[str]
    answers: list[list[str]]
    answer_types: list[str]
    question_types: list[str]
    choices: list[list[str]]
    metric: str = "vqa"

    @property
    def scored(self) -> bool:
        """Whether these questions have reference answers (a test-dev split is predicted, not scored)."""
        return any(self.answers) or any(self.labels())

    def take(self, rows) -> "References":
        rows = np.asarray(rows)
        rows = rows.tolist()
        return References(*([getattr(self, f)[i] for i in rows]
                            for f in ("question_ids", "answers", "answer_types", "question_types", "choices")),
                          metric=self.metric, labels_=None if self.labels_ is None else [self.labels_[i] for i in rows])

    labels_: list[str] | None = None
    """The questions' labels (/questions/answer), where the protocol needs them (A-OKVQA's correct choice)."""

    def labels(self) -> list[str]:
        return self.labels_ if self.labels_ is not None else [""] * len(self.question_ids)



def read_references(cache, rows: np.ndarray) -> References | None:
    """The benchmark fields of question `rows`, or None when the cache has none."""
    if "references" not in cache.questions:
        return None
    pick = lambda name: np.asarray(cache.strings("questions", name), dtype=object)[rows].tolist()  # noqa: E731
    metric = str(cache.attrs.get("metric") or "vqa")
    # (only A-OKVQA's protocol reads choices: elsewhere the column holds "[]" per question, 0.5 s on VQAv2)
    choices = json_lists(pick("choices")) if "choices" in cache.questions and metric == "aokvqa" else \
        [[] for _ in range(len(np.arange(cache.n_questions)[rows]))]
    return References(pick("question_id"), shared_strings(json_lists(pick("references"))), pick("answer_type"),
                      pick("question_type"), choices, metric, pick("answer"))


def shared_strings(lists: list) -> list:
    """Each list's strings interned: VQAv2 train's 4.4M human answers are ~3k distinct strings, and one object
    each instead of one per answer keeps 0.25 GB out of memory for 0.6 s. Lists holding anything but strings are
    left as they are."""
    out = []
    try:
        for answers in lists:
            if type(answers) is not list:
                return lists
            out.append(list(map(sys.intern, answers)))
    except TypeError:  # (an answer that is not a string)
        return lists
    return out


def json_lists(texts: list[str]) -> list:
    """Each JSON text parsed, in one call over them all where they are well formed (443k json.loads calls take
    ~3x as long); one by one otherwise, so a damaged text fails as itself."""
    try:
        out = json.loads("[" + ",".join(texts) + "]")
    except ValueError:
        out = None
    if out is None or len(out) != len(texts):  # ("[1],[2]" inside one text would shift the rest)
        out = [json.loads(t) for t in texts]
    return out
