"""(image, question) pairs to answer: read from a CSV/JSONL, checked before any model loads."""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .base import cell_text
from .manifest import read_table, require_columns


def read_pairs(path: str | Path, delimiter: str | None = None) -> list[tuple[str, str]]:
    """A CSV/JSONL with columns image and question, or image alone for an image classification head
    (relative image paths resolve against its folder)."""
    path = Path(path)
    rows = read_table(path, delimiter)
    if not rows:
        raise DatasetError(f"{path} has no rows; it needs columns image, question (or image alone)")
    cols = require_columns(path, rows, {"image": ("image",)})
    out = []
    for lineno, r in rows:
        image, question = cell_text(r[cols["image"]]), cell_text(r.get("question"))
        if not image:
            raise DatasetError(f"{path}:{lineno}: empty image; every row needs one")
        if "question" in r and not question:
            raise DatasetError(f"{path}:{lineno}: empty question; every row of a file with a question column needs one")
        out.append((str(path.parent / image) if not Path(image).is_absolute() else image, question))
    return out


def check_questions(pairs: list[tuple[str, str]]) -> None:
    empty = [image for image, q in pairs if not q.strip()]
    if empty:
        raise DatasetError(f"the question for image {empty[0]} is empty ({len(empty)} empty in all); give every "
                           f"image a question")


def write_predictions(path: str | Path, results: list[dict], reference: list[str] | None = None) -> Path:
    """Predictions as CSV: image, question, answer, probability, top_k (JSON), the dataset's own answer, and
    (with --skip-bad) why a row has no answer."""
    import csv
    import json

    path = Path(path)
    try:
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            errors = any("error" in r for r in results)
            w.writerow(["image", "question", "answer", "probability", "top_k"] + (["reference"] if reference else [])
                       + (["error"] if errors else []))
            for i, r in enumerate(results):
                w.writerow([r["image"], r["question"], r["answer"], "" if "error" in r else f"{r['probability']:.6f}",
                            json.dumps(r["top_k"])] + ([reference[i]] if reference else [])
                           + ([r.get("error", "")] if errors else []))
    except OSError as exc:
        raise DatasetError(f"cannot write predictions to {path} ({exc}); choose another --out") from None
    return path
