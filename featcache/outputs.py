"""Outputs checked before compute is spent, and written so a failure at the last step loses nothing.

A command that computes for minutes and then finds its output folder read-only (or the disk full) must say so
before it starts; one whose final write still fails keeps what it computed in the system's temporary folder
and names it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import FeatcacheError


def _probe(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".featcache-probe-") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise FeatcacheError(f"cannot write {what} in {folder} ({exc.strerror or exc}); choose another place or "
                             f"free space first (nothing was computed)") from None


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """`path` can be written: its folder exists or can be made, and takes a small file; it is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise FeatcacheError(f"{option} {path} is a folder; give a file path (e.g. {path / 'out.csv'})")
    _probe(path.parent if str(path.parent) else Path("."), f"{option} {path.name}")
    return path


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """`path` is (or can be made) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FeatcacheError(f"{option} {path} is a file; give a folder")
    _probe(path, f"{option} {path}")
    return path


def write_or_rescue(path: Path, write, what: str) -> Path:
    """`write(target)` into `path` through a temporary sibling renamed at the end; when that fails (disk full,
    folder gone read-only), into the system's temporary folder instead, then a message naming both."""
    tmp = path.with_name(path.name + ".partial")
    try:
        write(tmp)
        tmp.replace(path)
        return path
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fd, rescue = tempfile.mkstemp(prefix=f"featcache-{path.stem}-", suffix=path.suffix)
        os.close(fd)
        try:
            write(Path(rescue))
        except OSError:
            Path(rescue).unlink(missing_ok=True)
            raise FeatcacheError(f"cannot write {what} to {path} ({exc.strerror or exc}), nor to the temporary "
                                 f"folder: free space and rerun") from None
        raise FeatcacheError(f"cannot write {what} to {path} ({exc.strerror or exc}); they were saved to {rescue} "
                             f"instead: move that file where you want it") from None


def swap_in_folder(new: Path, out: Path) -> None:
    """Put folder `new` at `out` in two renames; an older `out` is moved aside first, then removed, so `out` is
    always one whole run's files (a kill leaves the old folder, or the new one)."""
    import shutil

    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
