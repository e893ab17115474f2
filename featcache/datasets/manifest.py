"""Any (image, question, answer[, split]) table as CSV or JSONL.

The `image_name,question,answer` layout of ABO-style datasets and DAQUAR's processed
`question,answer,image_id` both load unchanged: the image column may be called image, image_name,
image_id, image_path or file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import DatasetError
from .base import Question, VQADataset

IMAGE_COLUMNS = ("image", "image_name", "image_id", "image_path", "file")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_SPLIT = "all"


def _read_rows(path: Path) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        return rows
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def resolve_image(images_dir: Path, name: str) -> str:
    """The file for an image reference; a name without extension matches any image extension."""
    candidate = images_dir / name
    if candidate.suffix.lower() in IMAGE_EXTENSIONS or candidate.is_file():
        return str(candidate)
    for ext in IMAGE_EXTENSIONS:
        if (images_dir / (name + ext)).is_file():
            return str(images_dir / (name + ext))
    return str(candidate)  # reported as missing later, by name


def load_manifest(path: str | Path, images: str | Path | None = None, name: str | None = None) -> VQADataset:
    """Read a manifest; relative image paths resolve against `images` (default: the manifest's folder)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest {path} does not exist; give a CSV/JSONL file or a dataset name "
                           f"(see `featcache datasets`)")
    images_dir = Path(images) if images is not None else path.parent
    rows = _read_rows(path)
    if not rows:
        raise DatasetError(f"manifest {path} has no rows")
    columns = set(rows[0])
    image_col = next((c for c in IMAGE_COLUMNS if c in columns), None)
    missing = [c for c in ("question", "answer") if c not in columns] + ([] if image_col else ["image"])
    if missing:
        raise DatasetError(f"manifest {path} lacks column(s) {missing}; it has {sorted(columns)}. Needed: "
                           f"image (or one of {IMAGE_COLUMNS[1:]}), question, answer, optional split")
    questions, paths = [], {}
    for row in rows:
        key = str(row[image_col]).strip()
        if key not in paths:
            paths[key] = resolve_image(images_dir, key)
        split = str(row.get("split") or DEFAULT_SPLIT).strip()
        questions.append(Question(key, str(row["question"] or "").strip(), str(row["answer"] or "").strip(), split))
    from collections import Counter

    notes = []
    dupes = sum(n - 1 for n in Counter(questions).values() if n > 1)
    if dupes:
        notes.append(f"{dupes} duplicate rows (kept)")
    empty = sum(1 for q in questions if not q.answer)
    if empty:
        notes.append(f"{empty} rows without an answer")
    return VQADataset(name=name or path.stem, source=str(path.resolve()), questions=questions, image_paths=paths,
                      warnings=notes)
