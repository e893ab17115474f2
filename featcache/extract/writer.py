"""Where computed batches go: shard buffers, shard files, and the final file, off the feeding process.

The process that feeds the device only copies each batch back (converted to the store dtype on the device,
so half the bytes cross) and hands it over. A writer process (forked at the start of the images stage, where
fork exists) fills the shard buffers, writes each full shard to the parts folder, and appends it to the final
file at once (`featcache.cache.merged.MergedWriter`): numpy and HDF5 work never holds the feeding process's
GIL, and no merge pass over the data follows the last shard. On a CPU, or where fork does not exist, a
background thread writes the shards and the file is merged after them, as before (there the forward or the
decoding needs the cores and the GIL more than the merge pass costs). A shard is still committed atomically before it counts, so an interrupted run
resumes as before; the final file is only renamed into place when complete.
"""

from __future__ import annotations

import bisect
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..cache.merged import MergedWriter
from ..cache.parts import write_shard
from ..errors import ExtractError, FeatcacheError


class ShardBuffers:
    """Per-image features (and per-pair states) collected into shard buffers; `save(spec, arrays, errors[,
    pairs])` gets each shard once every one of its images has been handed over."""

    def __init__(self, specs: list, save: Callable, store_dtype: str, feature_shapes: dict[str, tuple[int, ...]],
                 pairs=None, pair_shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        self.specs = {s.start: s for s in specs}
        self.starts = sorted(self.specs)
        self.save, self.store_dtype, self.feature_shapes = save, store_dtype, feature_shapes
        self.pairs, self.pair_shapes = pairs, pair_shapes or {}
        self.buffers: dict[int, dict] = {}

    def add(self, index: list[int], good: list[int], errors: list[str], feats: dict[str, np.ndarray],
            pair_rows: np.ndarray | None) -> None:
        spec = self.specs[self.starts[bisect.bisect_right(self.starts, index[0]) - 1]]
        n = len(spec.keys)
        buf = self.buffers.get(spec.start) or self._new(spec)
        rows = [index[k] - spec.start for k in good]
        for name, values in feats.items():
            if name in self.pair_shapes:
                buf["pairs"][name][pair_rows - buf["pair_start"]] = values
            else:
                buf["arrays"][name][rows] = values
        for i, err in zip(index, errors):
            buf["errors"][i - spec.start] = err
        buf["filled"] += len(index)
        if buf["filled"] == n:
            if self.pairs is None:
                self.save(spec, buf["arrays"], buf["errors"])
            else:
                self.save(spec, buf["arrays"], buf["errors"], buf["pairs"])
            del self.buffers[spec.start]

    def _new(self, spec) -> dict:
        n = len(spec.keys)
        buf = {"errors": [""] * n, "filled": 0, "pair_start": 0, "pairs": {}, "arrays": {
            name: np.zeros((n, *shape), dtype=self.store_dtype) for name, shape in self.feature_shapes.items()}}
        if self.pairs is not None:  # failed images' pairs stay zero (their questions are marked failed)
            lo, hi = self.pairs.block(spec.start, spec.stop)
            buf["pair_start"] = lo
            buf["pairs"] = {"image_row": self.pairs.image_row[lo:hi], "text": self.pairs.text[lo:hi].tolist(),
                            **{name: np.zeros((hi - lo, *shape), dtype=self.store_dtype)
                               for name, shape in self.pair_shapes.items()}}
        self.buffers[spec.start] = buf
        return buf


class ShardSink:
    """Writes a full shard to the parts folder and, when the run merges, into the final file as well."""

    def __init__(self, parts: Path, attrs: dict, store_dtype: str, merged: MergedWriter | None = None) -> None:
        self.parts, self.attrs, self.store_dtype, self.merged = parts, attrs, store_dtype, merged

    def __call__(self, spec, arrays: dict, errors: list[str], pairs: dict | None = None) -> None:
        write_shard(self.parts, spec, self.attrs, arrays, errors, self.store_dtype, pairs)
        if self.merged is not None:
            self.merged.add(spec.start, {"key": list(spec.keys), "error": errors, **arrays}, pairs)


class _Work:
    """Everything the writing side needs, built where it runs (the writer process or thread)."""

    def __init__(self, specs, parts, attrs, store_dtype, feature_shapes, pairs, pair_shapes, merge_into) -> None:
        self.specs, self.parts, self.attrs, self.store_dtype = specs, parts, attrs, store_dtype
        self.feature_shapes, self.pairs, self.pair_shapes, self.merge_into = feature_shapes, pairs, pair_shapes, merge_into
        self.merged = None
        self.buffers = None

    def start(self) -> None:
        if self.merge_into is not None:
            out, compression = self.merge_into
            self.merged = MergedWriter(self.parts, out, compression, self.feature_shapes,  # grows in the parts
                                       self.pair_shapes or None, check_space=False,  # folder: a crash leaves
                                       tmp=Path(self.parts) / "final.h5.tmp")  # nothing beside OUT
        sink = ShardSink(self.parts, self.attrs, self.store_dtype, self.merged)
        self.buffers = ShardBuffers(self.specs, sink, self.store_dtype, self.feature_shapes, self.pairs,
                                    self.pair_shapes)

    def finish(self):
        """Shards finished by earlier runs (or other processes) copied in from their files, then the questions:
        (failed image keys, failed question rows); None when the run does not merge."""
        if self.merged is None:
            return None
        for entry in self.merged.manifest["shards"]:
            if entry["start"] not in self.merged.errors:
                self.merged.add_file(entry)
        result = self.merged.finish()
        self.merged = None
        return result

    def abandon(self) -> None:
        if self.merged is not None:
            self.merged.abandon()
            self.merged = None


def _error(exc: BaseException, work: _Work) -> FeatcacheError:
    if isinstance(exc, FeatcacheError):
        return exc
    from ..cache.parts import no_space, out_of_space

    if isinstance(exc, (OSError, RuntimeError)) and out_of_space(exc):
        folder = Path(work.merge_into[0]).parent if work.merge_into else work.parts
        return no_space(folder, sum(int(np.prod(s)) for s in work.feature_shapes.values()))
    return ExtractError(f"writing the shards failed: {type(exc).__name__}: {exc}")


def _child(work: _Work, inbox, outbox, parent_ends) -> None:
    """The writer process: batches from `inbox` until ("close", finish); the outcome or the error to `outbox`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes us in order
    for end in parent_ends:  # inherited by the fork: without closing them the parent's death would go unseen
        end.close()
    code = 0
    try:
        work.start()
        pending: queue.Queue = queue.Queue(maxsize=16)

        def receive() -> None:  # reads the pipe while the main thread writes HDF5 (recv releases the GIL)
            while True:
                try:
                    item = inbox.recv()
                except (EOFError, OSError):
                    item = ("gone",)
                pending.put(item)
                if item[0] != "batch":
                    return

        threading.Thread(target=receive, daemon=True).start()
        while True:
            item = pending.get()
            if item[0] == "batch":
                work.buffers.add(*item[1:])
            elif item[0] == "close":
                outbox.send(("done", work.finish() if item[1] else None))
                if not item[1]:
                    work.abandon()
                break
            else:  # the parent died: keep the committed shards, drop the unfinished final file
                work.abandon()
                break
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        work.abandon()
        try:
            outbox.send(("error", _error(exc, work)))
        except Exception:  # noqa: BLE001
            code = 1
    finally:
        os._exit(code)  # no atexit handlers or deallocators of the parent's objects (CUDA, loaders) in this fork


class ShardWriter:
    """The feeding process's side: copy each batch back in a background thread, then hand it to the writer
    process (or thread). At most `depth` batches wait, which bounds the memory held for them."""

    def __init__(self, specs: list, parts: Path, attrs: dict, store_dtype: str,
                 feature_shapes: dict[str, tuple[int, ...]], pairs=None, pair_shapes: dict | None = None,
                 merge_into: tuple[Path, str | None] | None = None, process: bool | None = None, depth: int = 2,
                 on_gpu: bool = False) -> None:
        """`process` None: a writer process on a GPU (`on_gpu`), a thread on a CPU, where the forward needs every
        core (measured on 2 cores, tiny model: from 15% slower to 3% faster than the thread); a process only where fork
        exists (Linux). `merge_into` (out, compression) is honoured by a writer process; with a thread the caller
        merges after the last shard."""
        import torch

        self.dtype = getattr(torch, store_dtype)
        self.depth = depth
        self.work = _Work(specs, parts, attrs, store_dtype, feature_shapes, pairs, pair_shapes or {}, merge_into)
        can_fork = "fork" in mp.get_all_start_methods() and sys.platform.startswith("linux")
        self.process = can_fork and (on_gpu if process is None else process)
        if not self.process:  # a thread appending to the final file contends with decoding for the GIL (about
            self.work.merge_into = None  # 10% slower on 2 cores): the file is merged after, as before
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="featcache-copy-back")
        self.pending: deque[Future] = deque()
        self.outcome = None
        self.child = None
        self.closed = False
        if self.process:
            ctx = mp.get_context("fork")
            child_in, self.inbox = ctx.Pipe(duplex=False)
            self.outbox, child_out = ctx.Pipe(duplex=False)
            self.child = ctx.Process(target=_child, args=(self.work, child_in, child_out, (self.inbox, self.outbox)),
                                     daemon=True)
            self.child.start()
            child_in.close()
            child_out.close()
        else:
            self.work.start()

    def submit(self, index: list[int], good: list[int], errors: list[str], feats: dict,
               pair_rows: np.ndarray | None = None) -> None:
        """Hand over one batch (rows `index` of one shard; feats: device tensors of the good images, and of the
        pairs `pair_rows` of those images)."""
        self._raise_if_failed()
        self.pending.append(self.pool.submit(self._hand_over, index, good, errors, feats, pair_rows))
        while len(self.pending) > self.depth:
            self.pending.popleft().result()

    def _hand_over(self, index, good, errors, feats, pair_rows) -> None:
        arrays = {k: v.to(self.dtype).cpu().numpy() for k, v in feats.items()}  # waits for this batch's kernels
        if self.process:
            try:
                self.inbox.send(("batch", index, good, errors, arrays, pair_rows))
            except (BrokenPipeError, OSError):
                self._raise_if_failed(wait=True)
                raise
        else:
            self.work.buffers.add(index, good, errors, arrays, pair_rows)

    def _raise_if_failed(self, wait: bool = False) -> None:
        if self.process and (wait or self.outbox.poll()):
            try:
                kind, value = self.outbox.recv()
            except EOFError:
                raise ExtractError(f"the writer process ended unexpectedly (status {self.child.exitcode}); the "
                                   f"finished shards are kept, and the same command resumes") from None
            if kind == "error":
                raise value
            self.outcome = value

    def close(self, finish: bool = True):
        """Wait for every handed-over batch (so finished shards are on disk); with `finish`, complete the final
        file and return (failed image keys, failed question rows), or None when the run does not merge."""
        self.closed = True
        try:
            while self.pending:
                self.pending.popleft().result()
        except BaseException:
            finish = False
            raise
        finally:
            self.pool.shutdown(wait=True)
            if self.process:
                self._close_child(finish)
            elif finish:
                self.outcome = self.work.finish()
            else:
                self.work.abandon()
        return self.outcome

    def _close_child(self, finish: bool) -> None:
        try:
            self.inbox.send(("close", finish))
        except (BrokenPipeError, OSError):
            pass
        try:
            self._raise_if_failed(wait=True)
        finally:
            self.inbox.close()
            self.child.join()
