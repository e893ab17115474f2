"""What a run checks before it writes anything: the output's folder, the lock that keeps two runs off one output,
other runs' shard locks before --overwrite clears their work, and text the cache could not store."""

from __future__ import annotations

import fcntl
import os
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ExtractError


def check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():  # the folder the user named for the output: made, as `--out runs/x/c.h5` expects
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise ExtractError(f"cannot write {out}: folder {parent} cannot be made ({exc.strerror})") from None
    if not parent.is_dir():
        raise ExtractError(f"cannot write {out}: {parent} is not a folder (choose another --out)")
    if not os.access(parent, os.W_OK):
        raise ExtractError(f"cannot write {out}: folder {parent} is not writable (choose another --out)")
    if out.is_dir():
        raise ExtractError(f"cannot write {out}: it is a folder; --out must be a file path such as {out}/cache.h5")


def lock(parts: Path, name: str, out: Path):
    """An exclusive lock on parts/name for this process's lifetime (the OS drops it if the process dies)."""
    try:
        fh = open(parts / name, "a+")
    except OSError as exc:
        raise ExtractError(f"cannot write the lock file {parts / name} ({exc.strerror}): {parts} is not writable or "
                           f"its disk is full; free some space or choose another --out") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise ExtractError(f"another featcache extract or merge is writing {out} ({holder}); two runs on one output would "
                           f"race. Wait for it to finish or stop it, then run this command again.") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, started {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        fh.flush()
    except OSError as exc:
        fh.close()
        raise ExtractError(f"cannot write the lock file {parts / name} ({exc.strerror}); free some space in "
                           f"{parts.parent} or choose another --out") from None
    return fh


def check_storable(i: int, q) -> None:
    """Refuse, before any compute, text the cache cannot store: HDF5 strings end at a NUL, and UTF-8 has no
    unpaired surrogate (a JSON "\\ud800"); both were found only at the merge, after all the work, naming no row."""
    for name in ("image", "text", "answer", "split", "qid"):
        value = getattr(q, name, "")
        if not isinstance(value, str) or not value:
            continue
        if "\x00" in value:
            raise ExtractError(f"question row {i} (image {q.image!r}): its {name} holds a NUL character; remove it "
                               f"from the dataset")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ExtractError(f"question row {i} (image {q.image!r}): its {name} holds an unpaired surrogate "
                               f"({value.encode('utf-8', 'backslashreplace')[:60]!r}), which UTF-8 cannot store; fix "
                               f"that row of the dataset") from None


def refuse_if_other_locks(parts: Path, out: Path) -> None:
    """Refuse while a `--shard-index` worker holds its lock in `parts` (its shards would be deleted under it)."""
    for path in sorted(parts.glob("lock-*")):
        try:
            with open(path, "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
        except BlockingIOError:
            raise ExtractError(f"a --shard-index worker is writing {out} ({path.name} is held); --overwrite would "
                               f"delete its shards. Wait for it to finish or stop it, then run this command "
                               f"again.") from None
        except OSError:
            continue


