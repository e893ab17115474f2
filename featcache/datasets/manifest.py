"""Any (image, question, answer[, split]) table as CSV or JSONL, or (image, label[, split]) for image
classification.

The `image_name,question,answer` layout of ABO-style datasets and DAQUAR's processed
`question,answer,image_id` both load unchanged: the image column may be called image, image_name,
image_id, image_path or file. A table with a label column (label, class, category) and no question
column is an image classification dataset.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import DatasetError
from .base import Question, VQADataset, cell_text

IMAGE_COLUMNS = ("image", "image_name", "image_id", "image_path", "file", "file_name")
LABEL_COLUMNS = ("label", "class", "category")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_SPLIT = "all"


DELIMITERS = (",", ";", "\t", "|")


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text (a byte-order mark, as Excel's "CSV UTF-8" writes, is dropped); else name the line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                           f"save it as UTF-8 (Excel: 'CSV UTF-8') or convert it, e.g. "
                           f"`iconv -f latin1 -t utf-8 {path.name} > fixed.csv`") from None


def _read_jsonl(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DatasetError(f"{path}:{lineno}: not valid JSON ({getattr(exc, 'msg', 'nested too deeply')}); each "
                               f"line must be one JSON object") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{lineno}: a JSON {type(row).__name__} where a JSON object "
                               f'{{"image": ..., "question": ..., "answer": ...}} is needed')
        for key, value in row.items():
            if isinstance(value, (list, dict)) and key in ("image", "question", "answer", "label", "split"):
                raise DatasetError(f"{path}:{lineno}: {key!r} is a JSON {type(value).__name__} ({str(value)[:50]}); "
                                   f"it must be text (one row per question)")
            if isinstance(value, str) and "\x00" in value:  # (HDF5 strings end at a NUL: found only at merge)
                raise DatasetError(f"{path}:{lineno}: {key!r} holds a NUL character; remove it")
        rows.append((lineno, row))
    return rows


def _read_csv(path: Path, text: str, delimiter: str | None) -> list[tuple[int, dict]]:
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    if delimiter is None:  # the candidate that splits the header most; a comma on ties
        delimiter = max(DELIMITERS, key=lambda d: (header_line.count(d), d == ","))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, header = [], None
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                repeated = sorted({c for c in header if header.count(c) > 1})
                if repeated:  # (csv keeps the last of two same-named columns, silently)
                    raise DatasetError(f"{path}: the header names column(s) {', '.join(repeated)} more than once; "
                                       f"rename or drop the duplicate")
                continue
            line = reader.line_num
            if len(fields) != len(header):
                what = "fewer" if len(fields) < len(header) else "more"
                raise DatasetError(f"{path}:{line}: {len(fields)} fields, {what} than the header's {len(header)} "
                                   f"({', '.join(header)}); fix the row (quote values that contain "
                                   f"{delimiter!r}) or give --delimiter")
            rows.append((line, dict(zip(header, fields))))
    except csv.Error as exc:
        raise DatasetError(f"{path}:{reader.line_num}: unreadable CSV ({exc})") from None
    return rows


def read_table(path: str | Path, delimiter: str | None = None) -> list[tuple[int, dict]]:
    """(line number, row) of a CSV (delimiter sniffed from the header unless given) or JSONL file."""
    path = Path(path)
    text = _decode(path, path.read_bytes())
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _read_jsonl(path, text)
    return _read_csv(path, text, delimiter)


def require_columns(path: Path, rows: list[tuple[int, dict]], needed: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """The column used for each need (name -> accepted spellings); a row without one names its line."""
    chosen: dict[str, str] = {}
    for lineno, row in rows:
        missing = []
        for need, spellings in needed.items():
            col = chosen.get(need) or next((c for c in spellings if c in row), None)
            if col is None or col not in row:
                missing.append(need)
            else:
                chosen[need] = col
        if missing:
            where = f"{path} lacks column(s)" if lineno == rows[0][0] else f"{path}:{lineno}: the row lacks"
            raise DatasetError(f"{where} {sorted(missing)}; it has {sorted(row)}. Needed: "
                               + ", ".join(f"{n} (or {', '.join(needed[n][1:])})" if len(needed[n]) > 1 else n
                                           for n in needed) + ", optional split")
    return chosen


def resolve_image(images_dir: Path, name: str) -> str:
    """The file for an image reference; a name without extension matches any image extension."""
    candidate = images_dir / name
    if candidate.suffix.lower() in IMAGE_EXTENSIONS or candidate.is_file():
        return str(candidate)
    for ext in IMAGE_EXTENSIONS:
        if (images_dir / (name + ext)).is_file():
            return str(images_dir / (name + ext))
    return str(candidate)  # reported as missing later, by name


def load_manifest(path: str | Path, images: str | Path | None = None, name: str | None = None,
                  delimiter: str | None = None) -> VQADataset:
    """Read a manifest; relative image paths resolve against `images` (default: the manifest's folder)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest {path} does not exist; give a CSV/JSONL file or a dataset name "
                           f"(see `featcache datasets`)")
    images_dir = Path(images) if images is not None else path.parent
    rows = read_table(path, delimiter)
    if not rows:
        raise DatasetError(f"manifest {path} has no rows")
    first = rows[0][1]
    classify = "question" not in first and any(c in first for c in LABEL_COLUMNS)
    if "question" not in first and not classify:
        raise DatasetError(f"{path} has neither a question column (image, question, answer: visual question "
                           f"answering) nor a label column ({', '.join(LABEL_COLUMNS)}: image classification); "
                           f"it has {sorted(first)}")
    needed = {"image": IMAGE_COLUMNS, "label": LABEL_COLUMNS} if classify else \
        {"image": IMAGE_COLUMNS, "question": ("question",), "answer": ("answer",)}
    cols = require_columns(path, rows, needed)
    questions, paths = [], {}
    import os

    for _, row in rows:
        raw = str(row[cols["image"]]).strip()
        key = os.path.normpath(raw) if raw else raw  # img/a.jpg, ./img/a.jpg and img//a.jpg are one image
        if key not in paths:
            paths[key] = resolve_image(images_dir, key)
        split = cell_text(row.get("split")) or DEFAULT_SPLIT
        if classify:
            questions.append(Question(key, "", cell_text(row[cols["label"]]), split))
        else:
            questions.append(Question(key, cell_text(row[cols["question"]]),
                                      cell_text(row[cols["answer"]]), split))
    from collections import Counter

    notes = []
    dupes = sum(n - 1 for n in Counter(questions).values() if n > 1)
    if dupes:
        notes.append(f"{dupes} duplicate rows (kept)")
    empty = sum(1 for q in questions if not q.answer)
    if empty:
        notes.append(f"{empty} rows without {'a label' if classify else 'an answer'}")
    splits_of: dict[str, set] = {}
    for q in questions:
        splits_of.setdefault(q.image, set()).add(q.split)
    shared = [k for k, v in splits_of.items() if len(v) > 1]
    if shared:
        notes.append(f"{len(shared)} images appear in more than one split (e.g. {shared[0]!r}): their questions "
                     f"leak between splits; give each image one split")
    if classify:
        again = len(questions) - len(paths)
        if again:
            notes.append(f"{again} images listed more than once (each row kept as a labelled example)")
    return VQADataset(name=name or path.stem, source=str(path.resolve()), questions=questions, image_paths=paths,
                      warnings=notes, task="classify" if classify else "vqa")
