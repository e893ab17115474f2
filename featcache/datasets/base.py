"""The one dataset shape every command uses: questions that point at images by key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..images import load_image


@dataclass(frozen=True)
class Question:
    image: str
    """Key of the image (unique within the dataset; an augmented copy gets a key of its own)."""
    text: str
    answer: str
    split: str


@dataclass
class VQADataset:
    """Questions plus where their images live. `images()` lists each image once."""

    name: str
    source: str
    questions: list[Question]
    image_paths: dict[str, str]
    answers: list[str] = field(default_factory=list)
    """The answer vocabulary when the dataset defines one (else derived from the questions)."""

    def images(self) -> list[str]:
        """Unique image keys, in order of first use."""
        return list(dict.fromkeys(q.image for q in self.questions))

    def open_image(self, key: str):
        """A decoded RGB image; raises ImageLoadError naming the file."""
        return load_image(self.image_paths[key])

    def limit(self, n: int | None) -> "VQADataset":
        """The first `n` questions (and only their images): for quick runs."""
        if n is None or n >= len(self.questions):
            return self
        qs = self.questions[:n]
        keys = set(q.image for q in qs)
        return replace(self, questions=qs, image_paths={k: v for k, v in self.image_paths.items() if k in keys},
                       source=f"{self.source} (first {n} questions)")

    def digest(self) -> str:
        """Hash of the question table: a resumed run must see the same questions."""
        h = hashlib.sha256()
        for q in self.questions:
            h.update("\x1f".join((q.image, q.text, q.answer, q.split)).encode())
            h.update(b"\x1e")
        return h.hexdigest()[:16]

    def missing_images(self) -> list[str]:
        """Keys whose file does not exist (checked before any compute is spent)."""
        return [k for k in self.images() if not Path(self.image_paths[k]).is_file()]
