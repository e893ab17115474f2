"""GQA from its official files under --root: {train,val,testdev,test,challenge}_balanced_questions.json (in --root or
its questions/ folder; an object question id -> question) and images/{imageId}.jpg. Each question keeps its id,
its one answer, its structural type (as question_type: query is open, the rest binary) and semantic type (as
answer_type), so reports score it as the official eval.py does (featcache.scoring.gqa). test and challenge have
no answers: predicted, not scored."""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .base import Question, VQADataset
from .official_files import first_file, read_json

SPLITS = ("train", "val", "testdev", "test", "challenge")


def load_gqa(root: str | Path | None) -> VQADataset:
    if root is None:
        raise DatasetError("gqa needs --root DIR: the folder holding {train,val,testdev}_balanced_questions.json (or "
                           "questions/ with them) and images/")
    root = Path(root).expanduser()
    questions, paths = [], {}
    images = root / "images" if (root / "images").is_dir() else root / "allImages" / "images"
    for split in SPLITS:
        path = first_file(root / f"{split}_balanced_questions.json", root / "questions" / f"{split}_balanced_questions.json")
        if path is None:
            continue
        data = read_json(path, dict, "a GQA question file (an object: question id -> question)")
        for qid, q in data.items():
            try:
                image, text = str(q["imageId"]), str(q["question"]).strip()
            except (KeyError, TypeError):
                raise DatasetError(f"{path} question {qid} lacks imageId or question: {str(q)[:100]}") from None
            paths.setdefault(image, str(images / f"{image}.jpg"))
            answer = str(q.get("answer", "") or "")
            types = q.get("types") or {}
            questions.append(Question(image, text, answer, split, qid=str(qid), references=(answer,) if answer else (),
                                      answer_type=str(types.get("semantic", "")),
                                      question_type=str(types.get("structural", ""))))
    if not questions:
        raise DatasetError(f"no GQA question file under {root}: expected e.g. testdev_balanced_questions.json in it "
                           f"or in its questions/ folder")
    return VQADataset(name="gqa", source=f"GQA balanced questions under {root}", questions=questions,
                      image_paths=paths, metric="gqa")
