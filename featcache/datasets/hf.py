"""`hf:ID_OR_DIR`: a Hugging Face dataset, from the hub or a local folder, with its images embedded.

The field's VQA sets sit on the hub as parquet with the images inside (`lmms-lab/VQAv2`, `lmms-lab/GQA`,
...). This reads them through the `datasets` library: a hub id (where the hub can be reached; HF_HUB_OFFLINE
is respected), a local folder of parquet files in the hub's layout (`data/<split>-00000-of-0000N.parquet`),
or a `save_to_disk` folder. A hub id may pin a revision as the hub writes it, `hf:ID@REVISION` (a branch, tag
or commit); the cache records the revision asked for (or, for a folder, its files and their sizes) beside the
splits' fingerprints. Images are decoded from the bytes in the table (`{bytes, path}` cells), never
written out as files. Columns are found by their common names unless given. A table with a question column
is visual question answering; one with a label column and no question is image classification.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import DatasetError
from ..images.decode import ImageLoadError, decode_image, load_image
from .base import Question, VQADataset, cell_text

HINT = "hf: datasets need the Hugging Face datasets library: pip install 'featcache[data]'"
COLUMNS = {
    "image": ("image", "img", "picture", "jpg", "png", "webp"),
    "question": ("question", "query"),
    "answer": ("multiple_choice_answer", "answer", "answers", "direct_answers", "label_text"),
    "label": ("label", "labels", "fine_label", "class", "category"),
    "image_id": ("image_id", "imageId", "img_id", "image_name", "file_name"),
}


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DatasetError(HINT) from None
    return datasets


def split_revision(source: str) -> tuple[str, str | None]:
    """"lmms-lab/VQAv2@abc123" -> ("lmms-lab/VQAv2", "abc123"); a local folder (even one whose name has an @)
    has no revision."""
    if Path(source).expanduser().exists() or "@" not in source:
        return source, None
    repo, _, revision = source.rpartition("@")
    return repo, revision or None


def provenance(source: str, revision: str | None) -> str:
    """What the data is, as the cache records it: a folder's data files with their sizes, or the hub id and
    the revision asked for."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".parquet", ".arrow"))
        shown = ", ".join(f"{p.relative_to(folder).as_posix()} {p.stat().st_size} B" for p in files[:20])
        return f"files {shown}" + (f" and {len(files) - 20} more" if len(files) > 20 else "")
    return f"revision {revision or 'main'}"


def _load(source: str, config: str | None, revision: str | None = None):
    """The DatasetDict of a hub id, a local parquet folder or a save_to_disk folder; failures named."""
    datasets = _datasets()
    folder = Path(source).expanduser()
    try:
        if folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(folder))
        elif folder.is_dir():
            loaded = datasets.load_dataset(str(folder), name=config)
        else:
            loaded = datasets.load_dataset(source, name=config, revision=revision)
    except FileNotFoundError as exc:
        raise DatasetError(f"hf:{source}: not found ({exc}); give a hub id such as lmms-lab/VQAv2, or a folder of "
                           f"parquet files (data/<split>-00000-of-00001.parquet) or of save_to_disk") from None
    except Exception as exc:  # noqa: BLE001 (datasets raises many kinds; each is reported, none is a traceback)
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "loading script" in text.lower() or "trust_remote_code" in text:
            raise DatasetError(f"hf:{source} exists only as a loading script, which datasets 4+ no longer runs. Load "
                               f"its parquet conversion instead: the hub's refs/convert/parquet branch, downloaded "
                               f"with `hf download {source} --repo-type dataset --revision refs/convert/parquet`, "
                               f"then --dataset hf:THAT_FOLDER") from None
        if any(word in text.lower() for word in ("offline", "couldn't reach", "connect")):
            raise DatasetError(f"hf:{source} could not be fetched ({text}): the hub cannot be reached or "
                               f"HF_HUB_OFFLINE is set. Download it where the hub is reachable (`hf download "
                               f"{source} --repo-type dataset`) and give the folder: --dataset hf:FOLDER") from None
        raise DatasetError(f"hf:{source} could not be loaded ({type(exc).__name__}: {text})") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _column(names: list[str], given: str | None, role: str, source: str, required: bool = True) -> str | None:
    if given:
        if given not in names:
            raise DatasetError(f"hf:{source} has no column {given!r} (--{role}-column); its columns: {names}")
        return given
    found = [c for c in COLUMNS[role] if c in names]
    if not found and required:
        raise DatasetError(f"hf:{source}: no {role} column found (looked for {', '.join(COLUMNS[role])}); its "
                           f"columns: {names}. Name it with --{role}-column")
    return found[0] if found else None


def _answer_text(value, choices=None) -> str:
    """A cell of an answer column as one string: a list of human answers gives the most common one."""
    if isinstance(value, dict):
        value = value.get("answer", value.get("text", ""))
    if isinstance(value, (list, tuple)):
        texts = [_answer_text(v) for v in value]
        texts = [t for t in texts if t]
        return Counter(texts).most_common(1)[0][0] if texts else ""
    if isinstance(value, int) and not isinstance(value, bool) and choices:
        return str(choices[value]) if 0 <= value < len(choices) else ""
    return "" if value is None else str(value).strip()


def _flag(value, source: str, split: str, row: int) -> bool:
    """A 0/1 column's value (an `answerable` of 0, 1, true/false, "yes"/"no")."""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "1.0"):
        return True
    if text in ("0", "false", "no", "0.0"):
        return False
    raise DatasetError(f"hf:{source} {split} row {row}: \"answerable\" must be 0 or 1 (or yes/no), got {value!r}")


def _ids_name_images(table, column: str, ids: list) -> bool:
    """Whether rows sharing an id hold the same image: same byte length and same first and last bytes (or the same
    path), read from the Arrow column without decoding."""
    seen: dict = {}
    data = table.data.column(column) if getattr(table, "_indices", None) is None else None
    for row, image_id in enumerate(ids):
        cell = data[row].as_py() if data is not None else table[row][column]
        raw = (cell or {}).get("bytes") if isinstance(cell, dict) else None
        sign = (len(raw), raw[:64], raw[-64:]) if raw else ("path", (cell or {}).get("path") if isinstance(cell, dict)
                                                            else None)
        if seen.setdefault(image_id, sign) != sign:
            return False
    return True


class HFImages:
    """Opens "split/row" locators of one image column, decoding the embedded bytes (picklable: the tables
    are memory-mapped Arrow files, so decode workers share them)."""

    def __init__(self, tables: dict, column: str, source: str, fingerprints: dict[str, str]) -> None:
        self.tables, self.column, self.source, self.fingerprints = tables, column, source, fingerprints
        self._columns: dict = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_columns": {}}  # a column pickled would copy it: each process maps its own

    def _cell(self, split: str, row: int):
        """The image cell of one row, read from the Arrow column itself: `dataset[row]` would convert every
        column of the row to Python first (about 1 ms a row, a fifth of a photo's decode)."""
        table = self.tables[split]
        if getattr(table, "_indices", None) is not None:  # a selected / shuffled view: rows are indirect
            return table[row][self.column]
        if split not in self._columns:
            self._columns[split] = table.data.column(self.column)
        return self._columns[split][row].as_py()

    def identity(self, locator: str) -> str:
        """The locator plus its split's datasets fingerprint: another version of the data is another image."""
        return f"{locator}@{self.fingerprints.get(locator.rsplit('/', 1)[0], '')}"

    def open(self, locator: str, draft_size: int | None = None):
        split, row = locator.rsplit("/", 1)
        cell = self._cell(split, int(row))
        name = f"hf:{self.source} {split} row {row}"
        if cell is None:
            raise ImageLoadError(f"{name} has no image (a null cell); drop that row, or pass --skip-bad")
        if isinstance(cell, dict) and cell.get("bytes"):
            return decode_image(cell["bytes"], name, draft_size)
        if isinstance(cell, dict) and cell.get("path"):
            return load_image(self._inside(str(cell["path"]), name), draft_size)
        raise ImageLoadError(f"{name}: the image cell holds neither bytes nor a path ({type(cell).__name__})")

    def _inside(self, path: str, name: str) -> str:
        """A cell's path, only where it lies in the dataset's own folder: featcache reads nothing outside the
        folders a user names (a hub dataset's cells carry their bytes; a path there would be any file on disk)."""
        root = Path(self.source).expanduser()
        if not root.is_dir():
            raise ImageLoadError(f"{name}: the image cell has no bytes, only a path ({path}); a hub dataset's images "
                                 f"must be in the table (featcache reads nothing outside the folders you name): "
                                 f"embed them, as push_to_hub does")
        full = (root / path).resolve()
        if not full.is_relative_to(root.resolve()):
            raise ImageLoadError(f"{name}: the image cell points outside the dataset's folder {root} ({path}); "
                                 f"featcache reads nothing outside the folders you name: embed the images in the "
                                 f"table (as push_to_hub does) or copy them into {root}")
        return str(full)

    def missing(self, locators: list[str]) -> list[str]:
        """Locators whose image cell is null (read from the column's validity, not by decoding)."""
        null = {}
        for split, table in self.tables.items():
            column = table.data.column(self.column)
            null[split] = set(i for i, valid in enumerate(column.is_valid().to_pylist()) if not valid)
        return [loc for loc in locators if int(loc.rsplit("/", 1)[1]) in null[loc.rsplit("/", 1)[0]]]


def load_hf(source: str, config: str | None = None, image_column: str | None = None,
            question_column: str | None = None, answer_column: str | None = None,
            label_column: str | None = None) -> VQADataset:
    """Every split of a Hugging Face dataset as a VQADataset (see the module docstring)."""
    datasets = _datasets()
    source, revision = split_revision(source)
    loaded = _load(source, config, revision)
    first = next(iter(loaded.values()))
    names = list(first.column_names)
    image = _column(names, image_column, "image", source)
    question = _column(names, question_column, "question", source, required=False)
    if question is None and label_column is None and answer_column is None and not any(c in names for c in COLUMNS["label"]):
        raise DatasetError(f"hf:{source} has neither a question column (visual question answering) nor a label "
                           f"column (image classification); its columns: {names}. Name them with "
                           f"--question-column/--answer-column or --label-column")
    classify = question is None
    target = (_column(names, label_column or answer_column, "label", source) if classify
              else _column(names, answer_column, "answer", source))
    image_id = _column(names, None, "image_id", source, required=False)
    # a benchmark's own fields (lmms-lab/VQAv2, OK-VQA: question ids, ten human answers, answer/question types)
    bench = {} if classify else {k: c for k, c in (("qid", "question_id"), ("answer_type", "answer_type"),
                                                    ("question_type", "question_type")) if c in names}
    humans = next((c for c in ("answers", "direct_answers") if c in names and not classify), None)
    if not classify and "answer_type" not in bench and "category" in names:  # lmms-lab/VizWiz-VQA's answer type
        bench["answer_type"] = "category"
    flag = "answerable" if "answerable" in names and not classify else None
    tables, questions, paths, notes = {}, [], {}, []
    for split, table in loaded.items():
        feature = table.features.get(target)
        to_name = getattr(feature, "int2str", None)
        choices = table["choices"] if "choices" in table.column_names and not classify else None
        try:
            tables[split] = table.select_columns([image]).cast_column(image, datasets.Image(decode=False))
        except Exception as exc:  # noqa: BLE001 (datasets and pyarrow raise several kinds for a wrong cast)
            raise DatasetError(f"hf:{source}: column {image!r} does not hold images ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); name the image column with "
                               f"--image-column") from None
        wanted = dict.fromkeys(c for c in (question, target, image_id, humans, flag, *bench.values()) if c)
        columns = table.select_columns(list(wanted))[:]  # column -> values
        ids = image_id
        if image_id and not _ids_name_images(tables[split], image, columns[image_id]):
            ids = None  # (12 pictures sharing one file_name were written as one image, every row pointing at it)
            notes.append(f"split {split}: column {image_id!r} repeats for rows with different images, so it does not "
                         f"name images there: each row is its own image")
        for row, value in enumerate(columns[target]):
            key = f"{split}/{columns[ids][row]}" if ids else f"{split}/{row}"  # ids repeat only within a split
            if key not in paths:
                paths[key] = f"{split}/{row}"
            if to_name is not None and isinstance(value, int):  # a ClassLabel; -1 is the hub's "no label" (test)
                answer = to_name(value) if value >= 0 else ""
            else:
                answer = _answer_text(value, choices[row] if choices is not None else None)
            text = "" if classify else cell_text(columns[question][row])
            extra = {field: str(columns[c][row] if columns[c][row] is not None else "") for field, c in bench.items()}
            if humans and isinstance(columns[humans][row], (list, tuple)):
                extra["references"] = tuple(_answer_text(a) for a in columns[humans][row])
            if flag and columns[flag][row] is not None:
                extra["question_type"] = "answerable" if _flag(columns[flag][row], source, split, row) else "unanswerable"
            questions.append(Question(key, text, answer, split, **extra))
    empty = sum(1 for q in questions if not q.answer)
    if empty:
        notes.append(f"{empty} rows without {'a label' if classify else 'an answer'}")
    cols = f"image={image}, " + (f"label={target}" if classify else f"question={question}, answer={target}")
    versions = {s: str(getattr(t, "_fingerprint", "")) for s, t in loaded.items()}
    fingerprints = ",".join(f"{s}:{v}" for s, v in versions.items())
    metric = "vqa" if any(len(q.references) > 1 for q in questions) else ""
    if metric and questions and all(q.qid.startswith("VizWiz_") for q in questions):
        metric = "vizwiz"  # scored by the VizWiz evaluation (featcache.scoring.vizwiz), not VQAv2's
        if not flag:  # the hub copy has no answerable column: its answer type says it (the crowd's majority)
            from dataclasses import replace

            questions = [replace(q, question_type=("unanswerable" if q.answer_type == "unanswerable" else "answerable")
                                 if q.references else "") for q in questions]
            notes.append("VizWiz without an answerable column: answerability taken from the answer type")
    return VQADataset(name=Path(source).name or source, questions=questions, image_paths=paths, warnings=notes,
                      source=f"hf:{source} ({provenance(source, revision)}; config {config or 'default'}; splits {', '.join(loaded)}; columns {cols}; "
                             f"fingerprints {fingerprints})",
                      task="classify" if classify else "vqa", reader=HFImages(tables, image, source, versions),
                      metric=metric)
