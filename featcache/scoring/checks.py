"""The shape every scorer's input must have, checked in one place: answers are text, ids are unique and hashable,
probabilities and flags are what they say, and no figure is computed over zero questions."""

from __future__ import annotations

import math
from collections import Counter

from ..errors import ScoreError


def answer_text(value, where: str) -> str:
    """A predicted or human answer as text: a string, or a finite number (JSON `2`); a list, object, null or NaN
    would be str()-ed and silently scored 0."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise ScoreError(f"{where}: the answer must be text, got {type(value).__name__} {str(value)[:40]}")


def question_id(value, where: str) -> str:
    """An id as text (ids are compared as text); a list or object is no id."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise ScoreError(f"{where}: the id must be a string or an integer, got {type(value).__name__} {str(value)[:40]}")


def unique(ids: list[str], what: str) -> None:
    """Refuse repeated ids: which of two predictions (or annotations) counts would be the file's order's choice."""
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:
        raise ScoreError(f"{len(repeated)} {what} appear more than once (e.g. {repeated[:3]}); keep one entry each")


def probability(value, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    raise ScoreError(f"{where}: must be a probability between 0 and 1, got {str(value)[:40]}")


def flag(value, where: str) -> int:
    """A 0/1 label (JSON 0, 1, true or false)."""
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return int(value)
    raise ScoreError(f"{where}: must be 0 or 1, got {str(value)[:40]}")


def nonempty(n: int, figure: str, why: str) -> None:
    """A figure over zero questions is an error, not a 0.0."""
    if n == 0:
        raise ScoreError(f"no question is scored for {figure}: {why}")
