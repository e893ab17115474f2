"""VizWiz-VQA from its official files under --root: Annotations/{train,val,test}.json (or those files in --root;
a list of {"image", "question", "answers", "answer_type", "answerable"}) and the images in {train,val,test}/ (or
images/{split}/). One question per image, keyed by the image's file name as the results file names it. Each
question keeps its 10 answers, its answer type (yes/no, number, other, unanswerable) and, as its
question_type, "answerable" or "unanswerable" (the human `answerable` flag: VizWiz has no question types), so
reports score it as the VizWiz evaluation does (featcache.scoring.vizwiz). Its label is the most common answer
(first met on a tie). test has no answers: predicted, not scored."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import DatasetError
from .base import Question, VQADataset
from .official_files import first_file, read_json

SPLITS = ("train", "val", "test")


def load_vizwiz(root: str | Path | None) -> VQADataset:
    if root is None:
        raise DatasetError("vizwiz needs --root DIR: the folder holding Annotations/{train,val,test}.json and the "
                           "image folders train/, val/, test/")
    root = Path(root).expanduser()
    questions, paths = [], {}
    for split in SPLITS:
        path = first_file(root / "Annotations" / f"{split}.json", root / "annotations" / f"{split}.json",
                          root / f"{split}.json")
        if path is None:
            continue
        folder = next((f for f in (root / split, root / "images" / split, root / "Images" / split) if f.is_dir()),
                      root / split)
        for i, q in enumerate(read_json(path, list, "a VizWiz annotation file (a list of questions)")):
            try:
                image, text = str(q["image"]), str(q["question"]).strip()
            except (KeyError, TypeError):
                raise DatasetError(f"{path} entry {i} lacks image or question: {str(q)[:100]}") from None
            key = Path(image).stem
            if key in paths:
                raise DatasetError(f"{path} entry {i}: image {image} occurs twice; VizWiz has one question per image")
            paths[key] = str(folder / image)
            answers = tuple(str(a.get("answer", "") if isinstance(a, dict) else a) for a in q.get("answers") or [])
            label = Counter(answers).most_common(1)[0][0] if answers else ""
            flag = q.get("answerable")
            questions.append(Question(key, text, label, split, qid=image, references=answers,
                                      answer_type=str(q.get("answer_type", "") or ""),
                                      question_type="" if flag is None else ("answerable" if int(flag) else "unanswerable")))
    if not questions:
        raise DatasetError(f"no VizWiz annotation file under {root}: expected Annotations/val.json (with the val/ "
                           f"image folder) or val.json in it")
    return VQADataset(name="vizwiz", source=f"VizWiz-VQA files under {root}", questions=questions,
                      image_paths=paths, metric="vizwiz")
