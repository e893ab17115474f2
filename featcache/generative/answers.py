"""Free-form answers onto a closed vocabulary: VQA normalisation, then exact match; what stays unmatched
can be mapped to the nearest vocabulary answer by ITC text embedding (reported apart as "mapped")."""

from __future__ import annotations

import re

import numpy as np

_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """The VQA evaluation's normalisation: lower case, punctuation dropped, number words as digits,
    articles dropped, spaces collapsed."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def match_answers(generated: list[str], vocabulary: list[str]) -> tuple[list[str | None], np.ndarray]:
    """Each generated text's vocabulary answer after normalisation (None where none matches), and the
    mask of matched ones."""
    index = {}
    for answer in vocabulary:
        if normalize_answer(answer):  # an answer that normalises to nothing would match every empty output
            index.setdefault(normalize_answer(answer), answer)
    found = [index.get(normalize_answer(g)) if normalize_answer(g) else None for g in generated]
    return found, np.array([f is not None for f in found])


def map_by_embedding(texts: list[str], vocabulary: list[str], embed) -> list[str]:
    """Nearest vocabulary answer by cosine of `embed` (texts -> (n, d) L2-normalised), e.g. the Q-Former
    ITC text projection of a retrieval checkpoint."""
    if not texts:
        return []
    sims = embed([t or " " for t in texts]) @ embed(list(vocabulary)).T
    return [vocabulary[i] for i in sims.argmax(1)]
