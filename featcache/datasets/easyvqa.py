"""Easy-VQA from the `easy-vqa` PyPI package (64 px shapes; official image-disjoint train/test)."""

from __future__ import annotations

from .base import Question, VQADataset


def load_easy_vqa() -> VQADataset:
    """The official split: 38,575 train / 9,673 test questions over 4,000 / 1,000 images."""
    import easy_vqa

    questions: list[Question] = []
    paths: dict[str, str] = {}
    for split, get_q, get_p in (("train", easy_vqa.get_train_questions, easy_vqa.get_train_image_paths),
                                ("test", easy_vqa.get_test_questions, easy_vqa.get_test_image_paths)):
        texts, answers, image_ids = get_q()
        for image_id, path in get_p().items():
            paths[f"{split}/{image_id}"] = path  # ids restart per split: qualify them
        questions += [Question(f"{split}/{i}", t, a, split) for t, a, i in zip(texts, answers, image_ids)]
    return VQADataset(name="easy-vqa", source=f"easy-vqa package {_version()}", questions=questions,
                      image_paths=paths, answers=list(easy_vqa.get_answers()))


def _version() -> str:
    from importlib.metadata import version

    return version("easy-vqa")
