"""`folder:DIR`: an image classification dataset as a folder per class (the torchvision ImageFolder and
Hugging Face `imagefolder` convention).

    DIR/cat/001.jpg, DIR/dog/xyz.png ...                 one split, "all"
    DIR/train/cat/001.jpg, DIR/test/cat/002.jpg ...      top-level split folders (train, val, test, ...)
    DIR/metadata.csv (or DIR/<split>/metadata.csv)       optional: file_name plus label and/or split, which
                                                         override what the folders say

An image's key is its path relative to DIR, so keys are stable and unique.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .base import Question, VQADataset, cell_text
from .manifest import IMAGE_EXTENSIONS, LABEL_COLUMNS, read_table

SPLIT_FOLDERS = ("train", "training", "val", "valid", "validation", "dev", "test", "testing")
METADATA = "metadata.csv"


def _images_under(folder: Path) -> tuple[list[Path], int]:
    """Image files below `folder` (any depth, sorted) and how many other files were passed over."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != METADATA]
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    return images, len(files) - len(images)


def _check_inside(image: Path, root: Path) -> None:
    """featcache reads nothing outside the folders a user names: an image (or a class folder) that is a link
    leading out of ROOT is refused, as metadata.csv's `../` is."""
    if not image.resolve().is_relative_to(root.resolve()):
        raise DatasetError(f"folder:{root}: {image} leads outside {root} (to {image.resolve()}); featcache reads "
                           f"nothing outside the folders you name: copy the images into {root}, or name their "
                           f"own folder")


def _metadata(root: Path, folder: Path) -> dict[str, dict]:
    """key -> {label?, split?} from folder/metadata.csv (file_name relative to that folder)."""
    path = folder / METADATA
    if not path.is_file():
        return {}
    out = {}
    for lineno, row in read_table(path):
        name = cell_text(row.get("file_name"))
        if not name:
            raise DatasetError(f"{path}:{lineno}: no file_name; {METADATA} needs a file_name column (the image's "
                               f"path relative to {folder}) and a label and/or split column")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise DatasetError(f"{path}:{lineno}: file_name {name!r} must be a path inside {folder} (relative, "
                               f"without ..)")
        key = (folder / name).relative_to(root).as_posix()
        label = next((str(row[c]).strip() for c in LABEL_COLUMNS if c in row), None)
        out[key] = {k: v for k, v in (("label", label), ("split", cell_text(row.get("split")) or None))
                    if v is not None}
    return out


def load_image_folder(root: str | Path, name: str | None = None) -> VQADataset:
    """A class-per-folder tree as an image classification dataset (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"folder:{root}: no such folder; give the folder that holds one sub-folder per class "
                           f"(or train/ and test/ folders that do)")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_FOLDERS]
    if split_dirs and len(split_dirs) == len(subdirs):
        splits = [(p.name, p) for p in split_dirs]
    elif split_dirs:  # (read as classes, "train" and "test" became labels of one split "all")
        stray = [p.name for p in subdirs if p not in split_dirs]
        raise DatasetError(f"folder:{root} has {', '.join(p.name + '/' for p in split_dirs)} beside other folders "
                           f"({', '.join(stray[:5])}): it is either split folders or class folders. Move "
                           f"{', '.join(stray[:5])} into a split folder, or out of {root}")
    else:
        splits = [("all", root)]
    questions, paths, notes, skipped = [], {}, [], 0
    meta = _metadata(root, root)
    for split, folder in splits:
        if folder != root:
            meta.update(_metadata(root, folder))
        classes = sorted(p for p in folder.iterdir() if p.is_dir())
        loose = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if loose and not meta:
            notes.append(f"{len(loose)} images directly in {folder} (outside a class folder) left out")
        for cls in classes:
            images, other = _images_under(cls)
            skipped += other
            if not images:
                notes.append(f"class folder {cls} has no images")
            for image in images:
                _check_inside(image, root)
                key = image.relative_to(root).as_posix()
                paths[key] = str(image)
                info = meta.get(key, {})
                questions.append(Question(key, "", info.get("label", cls.name), info.get("split", split)))
        for image in loose:
            _check_inside(image, root)
            key = image.relative_to(root).as_posix()
            if key in meta and "label" in meta[key]:
                paths[key] = str(image)
                questions.append(Question(key, "", meta[key]["label"], meta[key].get("split", split)))
    if not questions:
        raise DatasetError(f"folder:{root} holds no images in class folders (extensions "
                           f"{', '.join(IMAGE_EXTENSIONS)}); lay it out as {root}/<class>/<image>, or "
                           f"{root}/train/<class>/<image> and {root}/test/<class>/<image>")
    if skipped:
        notes.append(f"{skipped} files that are not images (by extension) left out")
    listed = sum(1 for k in meta if k not in paths)
    if listed:
        notes.append(f"{listed} files named in {METADATA} were not found under {root}")
    return VQADataset(name=name or root.name, source=f"folder:{root.resolve()}", questions=questions,
                      image_paths=paths, warnings=notes, task="classify")
