"""`wds:PATTERN`: WebDataset tar shards on local disk (img2dataset's output, CLIP_benchmark's layout).

    wds:data/{00000..00099}.tar       brace patterns expand (braceexpand, as webdataset does); globs too
    <key>.jpg|png|webp|...            the sample's image (the first image extension present)
    <key>.cls + classnames.txt        image classification: the class index, named by classnames.txt (one name
                                      per line, beside the tars or their folder's parent); without it the
                                      index itself is the label
    <key>.json                        visual question answering: "question" and "answer" (or lists of them)

Members are grouped into samples by webdataset's rule (the key is the member name up to the first dot of
its file name). Each tar is indexed once (member offsets); an image is then read straight from its offset,
so decode workers never unpack a tar. Keys are `<tar path below the tars' common folder, without .tar>/<sample
key>`, stable and unique. A tar's parent
folder named train/val/test gives the split, else "all".
"""

from __future__ import annotations

import glob
import json
import re
import tarfile
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..errors import DatasetError
from ..images.decode import ImageLoadError, decode_image
from .base import Question, VQADataset, cell_text
from .folder import SPLIT_FOLDERS
from .manifest import IMAGE_EXTENSIONS

CLASSNAMES = "classnames.txt"
IMAGE_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def expand(pattern: str) -> list[Path]:
    """The local tar files a pattern names: braces expanded, then globs, in order, each once."""
    try:
        from braceexpand import braceexpand
    except ImportError:
        raise DatasetError("wds: datasets need webdataset (and its braceexpand): pip install 'featcache[data]'") from None
    if "://" in pattern or pattern.startswith("pipe:"):
        raise DatasetError(f"wds:{pattern}: only local tar files are read (featcache reads nothing outside the "
                           f"folders you name); download the shards first")
    files: dict[Path, None] = {}
    for part in braceexpand(pattern):
        matches = sorted(glob.glob(part)) if any(c in part for c in "*?[") else [part]
        for m in matches:
            if Path(m).is_file():
                files[Path(m)] = None
    if not files:
        raise DatasetError(f"wds:{pattern} matches no tar files; check the pattern (e.g. "
                           f"data/{{00000..00009}}.tar) and that the files exist")
    return list(files)


def _sample_key(name: str) -> tuple[str, str]:
    """webdataset's split of a member name: (key, extension); the key keeps the folder, the extension is
    everything after the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def _classnames(tar: Path) -> list[str] | None:
    for folder in (tar.parent, tar.parent.parent):
        path = folder / CLASSNAMES
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetError(f"{path} cannot be read as UTF-8 text ({exc}); it needs one class name per "
                                   f"line") from None
            return [line.strip() for line in text.splitlines() if line.strip()]
    return None


def _index(tar: Path) -> dict[str, dict[str, tarfile.TarInfo]]:
    """sample key -> extension -> member, in the tar's order."""
    with open(tar, "rb") as fh:
        magic = fh.read(6)
    for signature, kind in ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ", "xz"), (b"\x28\xb5\x2f\xfd", "zstd")):
        if magic.startswith(signature):  # (members were indexed on the decompressed stream, read at those offsets)
            raise DatasetError(f"{tar} is a {kind}-compressed tar: featcache reads members at their offsets in the "
                               f"file, which compression moves. Decompress the shards first (e.g. gunzip), then "
                               f"point wds: at the .tar files")
    try:
        with tarfile.open(tar) as tf:
            members = [m for m in tf.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"{tar} is not a readable tar file ({exc}); re-create or remove that shard") from None
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    for m in members:
        key, ext = _sample_key(m.name)
        if ext:
            samples.setdefault(key, {})[ext] = m
    return samples


def _read(tar: Path, member: tarfile.TarInfo) -> bytes:
    with open(tar, "rb") as fh:
        fh.seek(member.offset_data)
        return fh.read(member.size)


class TarLocators(Mapping[str, str]):
    """key -> "TAR::OFFSET::SIZE::MEMBER", held as columns (tar number, offset, size, member names in one
    UTF-8 blob) beside the sorted keys, so 10M tar members cost ~50 bytes each beside their key instead of a
    dict of 10M locator strings (~170 bytes each); a locator string is made when asked
    (benchmarks/sources.py measures a 10M-key plan)."""

    def __init__(self, tars: list[str], keys: list[str], tar_ids: array, offsets: array, sizes: array,
                 members: bytearray, member_ends: array) -> None:
        import numpy as np

        self._order = np.argsort(np.array(keys, dtype=object), kind="stable")
        self._keys = [keys[i] for i in self._order]
        for a, b in zip(self._keys, self._keys[1:]):
            if a == b:
                raise DatasetError(f"wds: sample key {a!r} occurs twice; keep one copy of each sample")
        self._tars = tars
        self._tar = np.frombuffer(tar_ids, dtype=np.int32) if len(keys) else np.zeros(0, np.int32)
        self._offset = np.frombuffer(offsets, dtype=np.int64) if len(keys) else np.zeros(0, np.int64)
        self._size = np.frombuffer(sizes, dtype=np.int64) if len(keys) else np.zeros(0, np.int64)
        self._ends = np.frombuffer(member_ends, dtype=np.int64) if len(keys) else np.zeros(0, np.int64)
        self._blob = bytes(members)

    def _row(self, key: str) -> int:
        i = bisect_left(self._keys, key)
        if i == len(self._keys) or self._keys[i] != key:
            raise KeyError(key)
        return int(self._order[i])

    def __getitem__(self, key: str) -> str:
        r = self._row(key)
        member = self._blob[int(self._ends[r - 1]) if r else 0:int(self._ends[r])].decode()
        return f"{self._tars[self._tar[r]]}::{self._offset[r]}::{self._size[r]}::{member}"

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        i = bisect_left(self._keys, key)
        return i < len(self._keys) and self._keys[i] == key

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


_LOCATOR = re.compile(r"^(?P<tar>.*?)::(?P<offset>\d+)::(?P<size>\d+)::(?P<member>.*)$", re.S)


def parse_locator(locator: str) -> tuple[str, str, str, str]:
    """(tar, offset, size, member) of "TAR::OFFSET::SIZE::MEMBER": the tar path is the shortest prefix followed by
    two numbers, so a folder named with "::" (or a member) does not shift the fields."""
    match = _LOCATOR.match(locator)
    if match is None:
        raise ImageLoadError(f"{locator[:80]!r} is not a tar member locator (TAR::OFFSET::SIZE::MEMBER)")
    return match["tar"], match["offset"], match["size"], match["member"]


class TarImages:
    """Opens "TAR::OFFSET::SIZE::MEMBER" locators by reading the member's bytes at its offset (picklable)."""

    def __init__(self) -> None:
        self._versions: dict[str, str] = {}

    def open(self, locator: str, draft_size: int | None = None):
        tar, offset, size, member = parse_locator(locator)
        try:
            with open(tar, "rb") as fh:
                fh.seek(int(offset))
                data = fh.read(int(size))
        except OSError as exc:
            raise ImageLoadError(f"{tar} member {member}: cannot be read ({exc})") from None
        if len(data) != int(size):
            raise ImageLoadError(f"{tar} member {member}: the tar is shorter than its index says (changed or cut "
                                 f"since it was listed); rerun on the current file")
        return decode_image(data, f"{tar} member {member}", draft_size)

    def identity(self, locator: str) -> str:
        """The locator plus its tar's size and modification time: a rewritten tar is another source."""
        tar = parse_locator(locator)[0]
        if tar not in self._versions:
            try:
                stat = Path(tar).stat()
                self._versions[tar] = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                self._versions[tar] = ""
        return f"{locator}@{self._versions[tar]}"

    def missing(self, locators: list[str]) -> list[str]:
        return [loc for loc in locators if not Path(parse_locator(loc)[0]).is_file()]


def load_webdataset(pattern: str) -> VQADataset:
    """Tar shards as a dataset: image classification with .cls labels, or VQA from .json (module docstring)."""
    import os

    tars = expand(pattern)
    root = Path(os.path.commonpath([str(t.resolve().parent) for t in tars]))
    questions, notes, no_image, total = [], [], 0, 0
    keys, tar_ids, offsets, sizes, blob, ends = [], array("i"), array("q"), array("q"), bytearray(), array("q")
    task = None
    for t, tar in enumerate(tars):
        total += tar.stat().st_size
        split = tar.parent.name if tar.parent.name.lower() in SPLIT_FOLDERS else "all"
        names = _classnames(tar)
        for sample, members in _index(tar).items():
            image_ext = next((e for e in members if e in IMAGE_EXTS), None)
            if image_ext is None:
                no_image += 1
                continue
            m = members[image_ext]
            key = f"{tar.resolve().relative_to(root).with_suffix('').as_posix()}/{sample}"
            keys.append(key)
            tar_ids.append(t)
            offsets.append(m.offset_data)
            sizes.append(m.size)
            blob += m.name.encode()
            ends.append(len(blob))
            if "json" in members:
                meta = _json(tar, members["json"])
                for q, a in _pairs(meta, f"{tar} member {members['json'].name}"):
                    questions.append(Question(key, q, a, split))
                task = task or "vqa"
            elif "cls" in members:
                questions.append(Question(key, "", _label(tar, members["cls"], names), split))
                task = task or "classify"
            else:
                raise DatasetError(f"{tar}: sample {sample!r} has an image but neither a .cls label nor a .json with "
                                   f"question/answer (members: {sorted(members)})")
            if (task == "vqa") != ("json" in members):
                raise DatasetError(f"{tar}: sample {sample!r} mixes tasks: some samples have .json questions, others "
                                   f".cls labels; keep one kind per dataset")
    if not questions:
        raise DatasetError(f"wds:{pattern}: no sample with an image ({', '.join(IMAGE_EXTS)}) in {len(tars)} tar(s)")
    if no_image:
        notes.append(f"{no_image} samples without an image member left out")
    paths = TarLocators([str(t) for t in tars], keys, tar_ids, offsets, sizes, blob, ends)
    return VQADataset(name=Path(tars[0]).parent.name or "webdataset", questions=questions, image_paths=paths,
                      source=f"wds:{pattern} ({len(tars)} tars, {total} bytes)", warnings=notes, task=task,
                      reader=TarImages())


def _json(tar: Path, member: tarfile.TarInfo) -> dict:
    try:
        meta = json.loads(_read(tar, member).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{tar} member {member.name}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{tar} member {member.name}: a JSON {type(meta).__name__}, not an object")
    return meta


def _pairs(meta: dict, where: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a sample's JSON: one question and its answer, or lists of each, as long as each
    other; an answer may be VQAv2's list of human answers ({"answer": ...} objects or strings)."""
    qs = meta.get("question")
    ans = meta.get("answer", meta.get("answers", ""))
    if qs is None:
        raise DatasetError(f"{where}: no \"question\" in the sample's JSON; a VQA sample needs question and answer")
    if isinstance(qs, list):  # several questions: as many answers (one list of human answers each, or a text each)
        if not isinstance(ans, list) or len(ans) != len(qs):
            raise DatasetError(f"{where}: {len(qs)} questions but "
                               f"{len(ans) if isinstance(ans, list) else 1} answers; give one answer per question")
        return [(_question(q, where), _text(a, where)) for q, a in zip(qs, ans)]
    return [(_question(qs, where), _text(ans, where))]


def _question(q, where: str) -> str:
    if isinstance(q, (list, dict)):
        raise DatasetError(f"{where}: a question must be text, got a JSON {type(q).__name__} {str(q)[:60]}")
    return cell_text(q)


def _text(answer, where: str = "") -> str:
    """An answer as text; a list of human answers gives their most common one (VQAv2's {"answer": ...} objects
    or plain strings)."""
    if isinstance(answer, list):
        from collections import Counter

        texts = [_text(a, where) for a in answer]
        texts = [t for t in texts if t]
        return Counter(texts).most_common(1)[0][0] if texts else ""
    if isinstance(answer, dict):
        if "answer" not in answer:
            raise DatasetError(f"{where}: an answer object needs an \"answer\" field, got {str(answer)[:60]}")
        return _text(answer["answer"], where)
    return cell_text(answer)


def _label(tar: Path, member: tarfile.TarInfo, names: list[str] | None) -> str:
    raw = _read(tar, member).decode("utf-8", "replace").strip()
    if names is None:
        return raw
    try:
        index = int(raw)
    except ValueError:
        raise DatasetError(f"{tar} member {member.name}: {raw!r} is not a class index (an integer line of "
                           f"{CLASSNAMES})") from None
    if not 0 <= index < len(names):
        raise DatasetError(f"{tar} member {member.name}: class {index} is outside {CLASSNAMES} ({len(names)} names, "
                           f"0..{len(names) - 1})")
    return names[index]
