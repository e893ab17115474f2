"""The single-file cache made from a parts folder: `merge` (after the fact) and `MergedWriter` (as shards finish).

`MergedWriter` takes shard blocks in any order, from their files (checked against their checksums and the
manifest) or from memory as extraction finishes them: `featcache extract`'s writer process appends each shard
to the final file while the next ones compute, so no second pass over the data follows the last shard. The
questions go in last; the file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .answers import string_columns
from .file import CacheWriter, FeatureCache
from .parts import (PAIR_FEATURES, PAIR_INDEX, abandon, human_bytes, missing_shards, no_space, out_of_space,
                    read_manifest, recorded_checksum, sha256_file)
from .parts_check import check_shard, load_npz, member
from ..errors import ExtractError, FeatcacheError

IMAGE_ARRAYS = ("query", "query_proj", "vision")


class MergedWriter:
    """The final file of a parts folder, filled shard by shard (`add_file`, `add`), closed by `finish`."""

    def __init__(self, parts: str | Path, out: str | Path, compression: str | None = None,
                 image_arrays: dict[str, tuple[int, ...]] | None = None,
                 pair_arrays: dict[str, tuple[int, ...]] | None = None, check_space: bool = True,
                 tmp: Path | None = None) -> None:
        """`image_arrays` / `pair_arrays`: the feature shapes, read from the first shard when not given (merge
        after the fact); `check_space`: refuse now if the disk cannot hold the file (an extraction checked
        before its first shard); `tmp`: where the file grows until it is complete (default OUT.tmp)."""
        self.parts, self.out = Path(parts), Path(out)
        self.manifest = manifest = read_manifest(self.parts)
        self.questions = load_npz(self.parts, "questions.npz", "the question table")
        self.text_feats, self.needed = {}, 0
        if manifest["texts_file"]:
            texts = load_npz(self.parts, manifest["texts_file"], "the question texts' features")
            self.text_feats = {k: texts[k] for k in ("text_cls", "text_proj")}
        if check_space:
            self._check_space()
        if image_arrays is None:
            with FeatureCache(member(self.parts, manifest["shards"][0]["file"], "a shard")) as first:
                image_arrays = {k: first.images[k].shape[1:] for k in IMAGE_ARRAYS if k in first.images}
                if "n_pairs" in manifest:
                    pair_arrays = {k: first.pairs[k].shape[1:] for k in PAIR_FEATURES if k in first.pairs}
        self.image_arrays = image_arrays
        self.pair_arrays = pair_arrays if "n_pairs" in manifest else None
        self.entries = {e["start"]: e for e in manifest["shards"]}
        self.errors: dict[int, list[str]] = {}
        self.keys: dict[int, list[str]] = {}
        self.tmp = Path(tmp) if tmp else self.out.with_name(self.out.name + ".tmp")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.benchmark = string_columns(self.questions)
        self.writer = None
        self.writer = CacheWriter(self.tmp, manifest["attrs"], manifest["n_images"], len(self.questions["text"]),
                                  image_arrays, {k: v.shape[1:] for k, v in self.text_feats.items()},
                                  manifest["store_dtype"], compression, question_strings=tuple(self.benchmark),
                                  pair_arrays=self.pair_arrays, n_pairs=manifest.get("n_pairs", 0))

    def _check_space(self) -> None:
        data = sum(member(self.parts, e["file"], "a shard").stat().st_size for e in self.manifest["shards"]
                   if (self.parts / e["file"]).exists()) + sum(v.nbytes for v in self.questions.values()) + \
            sum(v.nbytes for v in self.text_feats.values())
        self.needed = int(1.1 * data) + (1 << 20)  # HDF5's own metadata and chunk indexes on top of the data
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(self.out.parent).free < self.needed:  # found now, not as HDF5 write errors mid-merge
            raise no_space(self.out.parent, self.needed)

    def add_file(self, entry: dict) -> None:
        """A finished shard from its file, checked against its checksum and the manifest first."""
        path = member(self.parts, entry["file"], "a shard")
        if sha256_file(path) != recorded_checksum(self.parts, entry):
            raise ExtractError(f"{path} does not match its checksum: it was damaged after it was written. "
                               f"Delete it (and {path.with_suffix('.json').name}); the extract command "
                               f"recomputes just that shard")
        with FeatureCache(path) as shard:
            check_shard(self.parts, entry, self.manifest, shard.file)
            block = {k: shard.read("images", k) for k in ("key", "error", *self.image_arrays)}
            pairs = {k: shard.read("pairs", k) for k in (*PAIR_INDEX, *self.pair_arrays)} \
                if self.pair_arrays is not None else None
        self.add(entry["start"], block, pairs)

    def add(self, start: int, block: dict, pairs: dict | None = None) -> None:
        """The rows of the shard that starts at image row `start`: key, error and the image features, and its
        block of /pairs (image_row, text, the states) in a question-conditioned cache."""
        entry = self.entries[start]
        self.writer.write("images", start, block)
        if pairs is not None and self.pair_arrays is not None:
            self.writer.write("pairs", entry["pair_start"], pairs)
        self.errors[start] = [str(e) for e in block["error"]]
        self.keys[start] = [str(k) for k in block["key"]]

    @property
    def complete(self) -> bool:
        return len(self.errors) == len(self.entries)

    def finish(self) -> tuple[list[str], list[int]]:
        """The questions (a question of a failed image says so), then the file renamed into place. Returns
        (failed image keys, failed question rows)."""
        if not self.complete:
            raise ExtractError(f"{len(self.entries) - len(self.errors)} shards were not added to {self.out}")
        image_errors = [e for s in sorted(self.errors) for e in self.errors[s]]
        keys = [k for s in sorted(self.keys) for k in self.keys[s]]
        q = self.questions
        row = q["image_row"]
        q_errors = [qe or (f"image failed: {image_errors[r]}" if image_errors[r] else "")
                    for qe, r in zip(q["error"].tolist(), row)]
        self.writer.write("questions", 0, {"text": q["text"].tolist(), "answer": q["answer"].tolist(),
                                           "split": q["split"].tolist(), "image_row": row, "error": q_errors,
                                           "truncated": q["truncated"], **self.benchmark,
                                           **({"pair_row": q["pair_row"]} if self.pair_arrays is not None else {})})
        for name, feats in self.text_feats.items():
            idx = q["text_row"]
            gathered = feats[np.maximum(idx, 0)]
            gathered[idx < 0] = 0
            self.writer.write("questions", 0, {name: gathered})
        self.writer.close()
        self.writer = None
        os.replace(self.tmp, self.out)
        return [k for k, e in zip(keys, image_errors) if e], [i for i, e in enumerate(q_errors) if e]

    def abandon(self) -> None:
        """Drop the half-written file (the parts folder is untouched)."""
        abandon(self.writer, self.tmp)
        self.writer = None


def merge(parts: str | Path, out: str | Path, compression: str | None = None) -> tuple[list[str], list[int]]:
    """`write_merged` in a child process where fork exists: HDF5 that meets a full disk mid-write can crash the
    interpreter (h5py's deallocators fail one after another), and the crash must not take the command, or its
    message, with it. The parts folder is only read, so nothing is lost either way."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        return write_merged(parts, out, compression)
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_merge_child, args=(send, parts, out, compression))
    child.start()
    send.close()
    try:
        outcome = receive.recv()
    except EOFError:
        outcome = None
    child.join()
    if outcome is None:  # the child died without a word
        tmp = Path(out).with_name(Path(out).name + ".tmp")
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(Path(out).parent).free
        raise ExtractError(f"merging {parts} into {out} failed (the writing process ended with status "
                           f"{child.exitcode}; {human_bytes(free)} free in {Path(out).parent}). The parts folder is "
                           f"intact: free some space (or choose another --out) and run `featcache merge {parts}`")
    kind, value = outcome
    if kind == "error":
        raise value
    return value


def _merge_child(send, parts, out, compression) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # HDF5's complaints on a full disk: the parent says what happened, in one line
    try:
        send.send(("ok", write_merged(parts, out, compression)))
    except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
        try:
            send.send(("error", exc if isinstance(exc, FeatcacheError)
                       else ExtractError(f"merging {parts} failed: {type(exc).__name__}: {exc}")))
        except Exception:  # noqa: BLE001
            pass
    finally:
        send.close()
        os._exit(0)  # no atexit, no deallocators of a broken HDF5 file


def write_merged(parts: str | Path, out: str | Path, compression: str | None = None) -> tuple[list[str], list[int]]:
    """Write the single-file cache from a parts folder whose shards are all finished: /images from the shards in
    plan order (each checked against its checksum), /questions from questions.npz and the text features."""
    parts, out = Path(parts), Path(out)
    manifest = read_manifest(parts)
    missing = missing_shards(parts, manifest)
    if missing:
        raise ExtractError(f"{len(missing)} of {len(manifest['shards'])} shards in {parts} are not finished yet "
                           f"(e.g. {missing[0]['file']}); finish them (the extract commands that write this "
                           f"folder resume) before merging")
    merged = MergedWriter(parts, out, compression)
    try:
        for entry in manifest["shards"]:
            merged.add_file(entry)
        return merged.finish()
    except (OSError, RuntimeError) as exc:
        merged.abandon()
        if out_of_space(exc):
            raise no_space(out.parent, merged.needed) from None
        raise
    except BaseException:
        merged.abandon()
        raise
