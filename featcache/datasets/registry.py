"""Datasets by name (`featcache datasets` lists them) or by manifest path: the registry of protocols."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DatasetError
from .base import VQADataset
from .aokvqa import load_aokvqa
from .daquar import load_daquar, load_daquar_18, load_daquar_paper
from .easyvqa import load_easy_vqa, load_easy_vqa_balanced, load_easy_vqa_labels, load_easy_vqa_paper
from .folder import load_image_folder
from .gqa import load_gqa
from .manifest import load_manifest
from .vizwiz import load_vizwiz
from .vqa_benchmarks import load_vqa_benchmark, with_minival


@dataclass(frozen=True)
class Protocol:
    load: Callable[..., VQADataset]
    description: str
    base: str | None = None
    """The unbalanced dataset this protocol is drawn from (for before/after statistics)."""
    leaks: bool = False


def protocols() -> dict[str, Protocol]:
    return {
        "easy-vqa": Protocol(lambda root, seed: load_easy_vqa(),
                             "Easy-VQA, official image-disjoint train/test (38,575 / 9,673 questions)"),
        "easy-vqa-balanced": Protocol(lambda root, seed: load_easy_vqa_balanced(seed),
                                      "yes/no downsampled as in the paper (16,905), split by image", "easy-vqa"),
        "easy-vqa-paper": Protocol(lambda root, seed: load_easy_vqa_paper(seed),
                                   "the paper's question-level split (LEAKS: images in both splits)", "easy-vqa", True),
        "easy-vqa-shapes": Protocol(lambda root, seed: load_easy_vqa_labels("shape"),
                                    "image classification: Easy-VQA's images by shape (3 classes, official split)"),
        "easy-vqa-colors": Protocol(lambda root, seed: load_easy_vqa_labels("color"),
                                    "image classification: Easy-VQA's images by colour (8 classes, official split)"),
        "vqav2": Protocol(lambda root, seed: load_vqa_benchmark(root, "vqav2"),
                          "VQAv2 from its official files (--root DIR): 10 human answers per question, scored by the "
                          "official evaluator; train/val (+ test-dev/test, predicted)"),
        "vqav2-minival": Protocol(lambda root, seed: with_minival(load_vqa_benchmark(root, "vqav2"), seed),
                                  "VQAv2 with val cut by image into minival (12% of its images, --seed) and nominival",
                                  "vqav2"),
        "okvqa": Protocol(lambda root, seed: load_vqa_benchmark(root, "okvqa"),
                          "OK-VQA from its official VQA-format files (--root DIR), scored as VQAv2"),
        "gqa": Protocol(lambda root, seed: load_gqa(root),
                        "GQA balanced questions (--root DIR), exact-match accuracy, binary / open, as eval.py"),
        "aokvqa": Protocol(lambda root, seed: load_aokvqa(root),
                           "A-OKVQA v1.0 (--root DIR): multiple choice and direct answer, as allenai/aokvqa scores"),
        "vizwiz": Protocol(lambda root, seed: load_vizwiz(root),
                           "VizWiz-VQA (--root DIR): 10 answers per image, scored as the VizWiz evaluation (accuracy, "
                           "unanswerable AP / F1)"),
        "daquar": Protocol(lambda root, seed: load_daquar(root), "DAQUAR, all answers, split by image (--root DIR)"),
        "daquar-18": Protocol(lambda root, seed: load_daquar_18(root, seed),
                              "the paper's 18 classes, image-disjoint stratified split, train-only augmentation",
                              "daquar"),
        "daquar-paper": Protocol(lambda root, seed: load_daquar_paper(root, seed),
                                 "the paper's 18 classes, augmented before a question split (LEAKS)", "daquar", True),
    }


def dataset_names() -> dict[str, str]:
    """Registered names with a one-line description."""
    return {name: p.description for name, p in protocols().items()}


def load_dataset(name_or_path: str, images: str | None = None, limit: int | None = None, root: str | None = None,
                 seed: int = 0, delimiter: str | None = None, hf_config: str | None = None,
                 columns: dict[str, str] | None = None) -> VQADataset:
    """A registered dataset by name (DAQUAR needs `root`), `folder:DIR` (a folder per class), `hf:ID_OR_DIR` (a
    Hugging Face dataset; `hf_config`, and `columns` role -> column name for image/question/answer/label),
    `wds:PATTERN` (WebDataset tar shards), or a
    CSV/JSONL manifest by path (image, question, answer; or image, label for image classification)."""
    registry = protocols()
    if name_or_path in registry:
        ds = registry[name_or_path].load(root, seed)
    elif name_or_path.startswith("folder:"):
        ds = load_image_folder(name_or_path.removeprefix("folder:"))
    elif name_or_path.startswith("wds:"):
        from .wds import load_webdataset

        ds = load_webdataset(name_or_path.removeprefix("wds:"))
    elif name_or_path.startswith("hf:"):
        from .hf import load_hf

        given = {f"{role}_column": c for role, c in (columns or {}).items() if c}
        ds = load_hf(name_or_path.removeprefix("hf:"), hf_config, **given)
    elif Path(name_or_path).suffix.lower() in (".csv", ".jsonl", ".ndjson") or Path(name_or_path).exists():
        ds = load_manifest(name_or_path, images=images, delimiter=delimiter)
    else:
        raise DatasetError(f"unknown dataset {name_or_path!r}: use one of {sorted(registry)}, folder:DIR "
                           f"(a folder per class), hf:ID_OR_DIR (a Hugging Face dataset), wds:PATTERN (tar shards), or a path to a CSV/JSONL "
                           f"manifest")
    return ds.limit(limit)
