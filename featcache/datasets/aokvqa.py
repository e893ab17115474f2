"""A-OKVQA from its official files under --root: aokvqa_v1p0_{train,val,test}.json (in --root or its aokvqa/
folder) and the COCO 2017 images {train2017,val2017,test2017}/{image_id:012d}.jpg (in --root or its coco/ folder).
Each question keeps its id, its 10 direct answers, its 4 choices (the label is the correct one) and whether its
direct answer is difficult (answer_type "difficult", left out of direct-answer scoring as the official script
does). test has no answers: predicted, not scored."""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .base import Question, VQADataset
from .official_files import first_file, read_json


def load_aokvqa(root: str | Path | None, version: str = "v1p0") -> VQADataset:
    if root is None:
        raise DatasetError(f"aokvqa needs --root DIR: the folder holding aokvqa_{version}_{{train,val,test}}.json and "
                           f"the COCO 2017 image folders train2017/ val2017/ test2017/")
    root = Path(root).expanduser()
    questions, paths = [], {}
    for split in ("train", "val", "test"):
        path = first_file(root / f"aokvqa_{version}_{split}.json", root / "aokvqa" / f"aokvqa_{version}_{split}.json")
        if path is None:
            continue
        data = read_json(path, list, "an A-OKVQA split file (a list of questions)")
        folder = next((f for f in (root / f"{split}2017", root / "coco" / f"{split}2017") if f.is_dir()),
                      root / f"{split}2017")
        for i, q in enumerate(data):
            try:
                qid, image_id, text, choices = str(q["question_id"]), int(q["image_id"]), str(q["question"]), q["choices"]
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{path} question {i} lacks question_id, image_id, question or choices") from None
            key = f"{split}2017/{image_id:012d}"
            paths.setdefault(key, str(folder / f"{image_id:012d}.jpg"))
            correct = q.get("correct_choice_idx")
            if correct is not None and not 0 <= int(correct) < len(choices):
                raise DatasetError(f"{path} question {qid}: correct_choice_idx {correct} is outside its "
                                   f"{len(choices)} choices")
            questions.append(Question(key, text.strip(), str(choices[int(correct)]) if correct is not None else "", split,
                                      qid=qid, references=tuple(str(a) for a in q.get("direct_answers") or ()),
                                      answer_type="difficult" if q.get("difficult_direct_answer") else "",
                                      choices=tuple(str(c) for c in choices)))
    if not questions:
        raise DatasetError(f"no A-OKVQA file under {root}: expected e.g. aokvqa_{version}_val.json in it or in aokvqa/")
    return VQADataset(name="aokvqa", source=f"A-OKVQA {version} files under {root}", questions=questions,
                      image_paths=paths, metric="aokvqa")
