"""VQAv2 and OK-VQA from their official files under --root, every human answer kept.

    vqav2   v2_OpenEnded_mscoco_{train2014,val2014,test-dev2015,test2015}_questions.json,
            v2_mscoco_{train2014,val2014}_annotations.json
    okvqa   OpenEnded_mscoco_{train2014,val2014}_questions.json, mscoco_{train2014,val2014}_annotations.json

The JSON files may sit in --root or in its Questions/ and Annotations/ folders (the official layout); images in
--root/{train2014,val2014,test2015}/ (or Images/, images/, Images/mscoco/ below it), named
COCO_{folder}_{image_id:012d}.jpg. Splits: train, val, and, where their question files are present, test-dev and
test (predicted, not scored: they have no answers). Each question keeps its id, its human answers, its answer
and question types; its label is the `multiple_choice_answer` (the vocabulary and the evaluator's normalisation
are applied when heads train: heads/benchmarks.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .base import Question, VQADataset

SPLITS = {"train": "train2014", "val": "val2014", "test-dev": "test-dev2015", "test": "test2015"}
FILES = {"vqav2": ("v2_OpenEnded_mscoco_{sub}_questions.json", "v2_mscoco_{sub}_annotations.json"),
         "okvqa": ("OpenEnded_mscoco_{sub}_questions.json", "mscoco_{sub}_annotations.json")}
NAMES = {"vqav2": "VQAv2", "okvqa": "OK-VQA"}


def _find(root: Path, name: str) -> Path | None:
    for folder in (root, root / "Questions", root / "Annotations", root / "questions", root / "annotations"):
        if (folder / name).is_file():
            return folder / name
    return None


def _image_folder(root: Path, sub: str) -> Path:
    for folder in (root / sub, root / "Images" / sub, root / "images" / sub, root / "Images" / "mscoco" / sub,
                   root / "coco" / sub):
        if folder.is_dir():
            return folder
    return root / sub  # absent: extraction names the first missing image and where it looked


def _read(path: Path, key: str, what: str) -> list:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read as JSON ({exc}); re-download the {what}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DatasetError(f"{path} has no {key!r} list; is it the {what}?")
    return data[key]


def _ids(ids) -> str:
    ids = sorted(ids)
    return f"{len(ids)} ({', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})"


def load_vqa_benchmark(root: str | Path | None, benchmark: str = "vqav2") -> VQADataset:
    """Every split of `benchmark` ("vqav2" or "okvqa") whose question file is under `root`."""
    name = NAMES[benchmark]
    q_pattern, a_pattern = FILES[benchmark]
    if root is None:
        raise DatasetError(f"{benchmark} needs --root DIR: the folder holding the official {name} files "
                           f"({q_pattern.format(sub='train2014')}, {a_pattern.format(sub='train2014')}, ...) and "
                           f"the COCO image folders train2014/ and val2014/")
    root = Path(root).expanduser()
    questions, paths, notes = [], {}, []
    for split, sub in SPLITS.items():
        q_file = _find(root, q_pattern.format(sub=sub))
        if q_file is None:
            continue
        a_name = a_pattern.format(sub=sub)
        a_file = _find(root, a_name)
        if a_file is None and not split.startswith("test"):
            raise DatasetError(f"{q_file} has no annotation file {a_name} beside it (looked in {root} and its "
                               f"Questions/ and Annotations/); put the split's annotations there")
        asked = _read(q_file, "questions", f"{name} question file")
        anns = {a.get("question_id"): a for a in _read(a_file, "annotations", f"{name} annotation file")} if a_file else {}
        if a_file is not None:
            ids = {q.get("question_id") for q in asked}
            if ids != set(anns):
                parts = [f"{_ids(ids - set(anns))} questions without an annotation" if ids - set(anns) else "",
                         f"{_ids(set(anns) - ids)} annotations without a question" if set(anns) - ids else ""]
                raise DatasetError(f"{q_file.name} and {a_file.name} do not match: {'; '.join(p for p in parts if p)}. "
                                   f"Re-download the split's two files together")
        folder = _image_folder(root, "test2015" if split.startswith("test") else sub)
        image_sub = folder.name
        for i, q in enumerate(asked):
            try:
                qid, image_id, text = q["question_id"], int(q["image_id"]), str(q["question"]).strip()
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{q_file} question {i} lacks question_id, image_id or question: {str(q)[:100]}") from None
            key = f"COCO_{image_sub}_{image_id:012d}"
            paths.setdefault(key, str(folder / f"{key}.jpg"))
            ann = anns.get(qid)
            if ann is None:
                questions.append(Question(key, text, "", split, qid=str(qid)))
                continue
            refs = tuple(str(a.get("answer", "")) for a in ann.get("answers", []))
            label = str(ann.get("multiple_choice_answer", ""))
            questions.append(Question(key, text, label, split, qid=str(qid), references=refs,
                                      answer_type=str(ann.get("answer_type", "")),
                                      question_type=str(ann.get("question_type", ""))))
    if not questions:
        raise DatasetError(f"no {name} question file under {root}: expected e.g. {q_pattern.format(sub='val2014')} "
                           f"(with {a_pattern.format(sub='val2014')}) in it or in its Questions/ and Annotations/")
    splits = sorted({q.split for q in questions})
    if "train" not in splits:
        notes.append(f"{name}: no train split under {root} (only {', '.join(splits)}); heads need one to fit")
    return VQADataset(name=benchmark, source=f"{name} official files under {root}", questions=questions,
                      image_paths=paths, warnings=notes, metric="vqa")


MINIVAL_FRACTION = 0.12
"""About LXMERT's minival share of val (25,994 of 214,354 questions)."""


def with_minival(ds: VQADataset, seed: int = 0, fraction: float = MINIVAL_FRACTION) -> VQADataset:
    """val cut by image into `minival` (a seeded `fraction` of its images: for choosing settings) and `nominival`
    (the rest: train on train+nominival, or evaluate on it), so a minival question never shares its image with
    a nominival one. Other splits stay as they are."""
    images = sorted({q.image for q in ds.questions if q.split == "val"})
    if not images:
        raise DatasetError(f"{ds.name}: no val split to cut a minival from (its splits: "
                           f"{', '.join(sorted({q.split for q in ds.questions}))})")
    rng = np.random.default_rng(seed)
    chosen = set(np.asarray(images, dtype=object)[rng.permutation(len(images))[:max(1, round(fraction * len(images)))]])
    questions = [replace(q, split="minival" if q.image in chosen else "nominival") if q.split == "val" else q
                 for q in ds.questions]
    return replace(ds, name=f"{ds.name}-minival", questions=questions,
                   source=f"{ds.source}; val cut by image into minival ({len(chosen)} images, seed {seed}) and nominival")
