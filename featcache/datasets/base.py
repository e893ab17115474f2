"""The one dataset shape every command uses: questions that point at images by key.

Image classification is the same shape without questions: one row per image whose text is empty and
whose answer is the image's label (`task="classify"`), so extraction, views, heads and reports serve
both tasks."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..images.decode import load_image


def cell_text(value) -> str:
    """A table cell as text: None (and a float NaN, pandas' empty cell) is empty; every other value, 0 and False
    included, is its text. (`str(value or "")` made an answer or label 0 vanish.)"""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


@dataclass(frozen=True)
class Question:
    image: str
    """Key of the image (unique within the dataset; an augmented copy gets a key of its own)."""
    text: str
    answer: str
    split: str
    qid: str = ""
    """The benchmark's question id (VQAv2's integer as text), where it has one: results files name it."""
    references: tuple[str, ...] = ()
    """Every human answer (VQAv2: 10), for the benchmark's own accuracy; `answer` is the single training label."""
    answer_type: str = ""
    """VQA: yes/no, number, other. GQA: the semantic type. A-OKVQA: "difficult" where the direct answer is."""
    question_type: str = ""
    """VQA: e.g. "what color is the". GQA: the structural type (query: open; else binary)."""
    choices: tuple[str, ...] = ()
    """A-OKVQA: the multiple-choice options (the answer is the correct one)."""



@dataclass
class VQADataset:
    """Questions plus where their images live. `images()` lists each image once."""

    name: str
    source: str
    questions: list[Question]
    image_paths: Mapping[str, str]
    """image key -> its file, or a locator the `reader` opens (a dict, or a columnar mapping for tars)."""
    answers: list[str] = field(default_factory=list)
    """The answer vocabulary when the dataset defines one (else derived from the questions)."""
    augmented: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Augmented image key -> (source image key, seed): decoded as a seeded random transform of the source."""
    warnings: list[str] = field(default_factory=list)
    """Counted oddities met while loading (duplicates, answers outside the vocabulary...), never silent."""
    metric: str = ""
    """The benchmark whose scoring applies (featcache.scoring): "vqa" (VQAv2, OK-VQA), "gqa", "aokvqa", "vizwiz"; "" for
    plain accuracy."""
    task: str = "vqa"
    """"vqa": questions about images; "classify": one row per image, no question, the answer is its label."""
    reader: object | None = None
    """For images that are not files (parquet cells, tar members): opens an `image_paths` entry (a locator such
    as "hf:train/17") with `open(locator, draft_size)` and lists unreadable ones with `missing(locators)`."""

    def images(self) -> list[str]:
        """Unique image keys, in order of first use."""
        return list(dict.fromkeys(q.image for q in self.questions))

    def open_image(self, key: str, draft_size: int | None = None):
        """A decoded RGB image (augmented if the key is an augmented copy); ImageLoadError names the file."""
        ref = self.image_paths[key]
        image = self.reader.open(ref, draft_size) if self.reader is not None else load_image(ref, draft_size)
        if key in self.augmented:
            from .augment import augment

            image = augment(image, self.augmented[key][1])
        return image

    def image_identity(self, key: str) -> str:
        """What the image of `key` is made from, for the shard digest: its locator, plus, where a reader can
        say, the version of what it reads (a parquet split's fingerprint, a tar's size and mtime), so a
        changed source recomputes the shards it touches."""
        ref = self.image_paths[key]
        identity = getattr(self.reader, "identity", None)
        return identity(ref) if identity is not None else ref

    def limit(self, n: int | None) -> "VQADataset":
        """About `n` questions for quick runs: the first ones of each split, in the splits' proportions
        (so a limited run still has train and test)."""
        if n is None or n >= len(self.questions):
            return self
        sizes: dict[str, int] = {}
        for q in self.questions:
            sizes[q.split] = sizes.get(q.split, 0) + 1
        quota = {s: max(1, round(n * c / len(self.questions))) for s, c in sizes.items()}
        taken: dict[str, int] = {}
        qs = []
        for q in self.questions:
            if taken.get(q.split, 0) < quota[q.split]:
                taken[q.split] = taken.get(q.split, 0) + 1
                qs.append(q)
        keys = set(q.image for q in qs)
        return replace(self, questions=qs, image_paths={k: v for k, v in self.image_paths.items() if k in keys},
                       augmented={k: v for k, v in self.augmented.items() if k in keys},
                       source=f"{self.source} (limited to {len(qs)} questions)")

    def digest(self) -> str:
        """Hash of the question table: a resumed run must see the same questions."""
        h = hashlib.sha256()
        for q in self.questions:
            h.update("\x1f".join((q.image, q.text, q.answer, q.split, str(self.augmented.get(q.image, "")))).encode())
            if q.qid or q.references:  # benchmark fields enter only where present: older digests stay the same
                h.update("\x1f".join((q.qid, *q.references, q.answer_type, q.question_type, *q.choices)).encode())
            h.update(b"\x1e")
        return h.hexdigest()[:16]

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> answer -> number of questions."""
        out: dict[str, dict[str, int]] = {}
        for q in self.questions:
            per = out.setdefault(q.split, {})
            per[q.answer] = per.get(q.answer, 0) + 1
        return out

    def missing_images(self) -> list[str]:
        """Keys whose file (or embedded image) does not exist, checked before any compute is spent."""
        if self.reader is not None:
            gone = set(self.reader.missing([self.image_paths[k] for k in self.images()]))
            return [k for k in self.images() if self.image_paths[k] in gone]
        return [k for k in self.images() if not Path(self.image_paths[k]).is_file()]
