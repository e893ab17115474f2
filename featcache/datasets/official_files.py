"""Finding and reading a benchmark's official files under --root, with messages that name the file."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DatasetError


def first_file(*candidates: Path) -> Path | None:
    """The first of the places a layout may put a file that exists."""
    return next((f for f in candidates if f.is_file()), None)


def read_json(path: Path, kind: type, what: str):
    """The JSON of `path`, which must be a `kind` (dict or list); `what` names the file for the message."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read as JSON ({exc}); re-download it") from None
    if not isinstance(data, kind):
        raise DatasetError(f"{path} is not {what}")
    return data
