"""Reading the benchmarks' JSON files with messages that name the file and what it should hold."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ScoreError


def read_json(path: str | Path, what: str):
    """The parsed JSON of `path` (`what` says which file it should be, for the message when it is not)."""
    path = Path(path)
    if not path.is_file():
        raise ScoreError(f"{what} {path} does not exist")
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScoreError(f"{what} {path} is not valid JSON ({exc}); re-download or re-write it") from None


def field(data, key: str, path: str | Path, what: str):
    """data[key] of a file's top-level object, or a message naming the file and the field it lacks."""
    if not isinstance(data, dict) or key not in data:
        raise ScoreError(f"{path} has no {key!r} field; is it {what}?")
    return data[key]
