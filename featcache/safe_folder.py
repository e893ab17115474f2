"""Every file featcache saves besides the HDF5 cache: a folder of JSON metadata + safetensors tensors.

Loading such a folder cannot run code: JSON is data and safetensors is a flat header plus raw
bytes. Pickle-based files (joblib heads, `torch.save` checkpoints of older featcache versions, or
anything a user is handed) can run arbitrary code when loaded, so they are refused unless the caller
passes `trust_pickle=True` explicitly (the CLI's `--trust-pickle`).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .errors import FeatcacheError, UnsafeFileError

META_FILE = "featcache.json"
TENSORS_FILE = "tensors.safetensors"


def plain(value):
    """JSON-ready copy of value (tuples -> lists, numpy scalars -> Python); anything else is an error."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} as plain JSON metadata")


def save_folder(path: str | Path, meta: dict, tensors: dict) -> Path:
    """Write `path/` (featcache.json + tensors.safetensors) atomically: a reader sees the old folder
    or the new one, never a mix, even if the process dies in between."""
    from safetensors.torch import save_file
    import torch

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FeatcacheError(f"cannot save to {path}: it is a file; give a folder path (featcache saves "
                             f"folders of JSON + safetensors)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    flat = {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v).detach().cpu().contiguous()
            for k, v in tensors.items()}
    save_file(flat, str(tmp / TENSORS_FILE))
    (tmp / META_FILE).write_text(json.dumps(plain(meta), indent=1) + "\n")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def recover_folder(path: str | Path) -> Path | None:
    """`path` after a kill between save_folder's two renames: the new folder (complete before the first rename)
    put in place, else the old one; None when there is nothing. So a resumable state is found whichever
    instant the kill hit."""
    path = Path(path)
    if path.exists():
        return path
    for pattern in (f".{path.name}.tmp-*", f".{path.name}.old-*"):
        for candidate in sorted(path.parent.glob(pattern)):
            if (candidate / META_FILE).is_file() and (candidate / TENSORS_FILE).is_file():
                try:
                    json.loads((candidate / META_FILE).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                os.replace(candidate, path)
                return path
    return None


def describe_file(path: Path) -> str:
    """'a pickle', 'a torch.save archive' or '' for anything else (by content, never by running it; a FIFO or
    device is never opened)."""
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return ""
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return ""
    if head[:1] == b"\x80":  # the PROTO opcode that starts every pickle of protocol 2+ (joblib's too)
        return "a pickle (joblib/pickle)"
    if head == b"PK\x03\x04" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any(n.endswith("data.pkl") for n in zf.namelist()):
                return "a torch.save archive (pickle inside)"
    return ""


def refuse_pickle(path: Path, what: str) -> None:
    """Raise UnsafeFileError for a pickle-based file, with the reason and the two ways on."""
    kind = describe_file(path)
    if not kind:
        raise FeatcacheError(f"{path} is not a featcache {what}: featcache saves those as folders holding "
                             f"{META_FILE} and {TENSORS_FILE} (e.g. the --out of `featcache fit`, a sweep's best/, "
                             f"a fine-tune's best/)")
    raise UnsafeFileError(
        f"{path} is {kind}, not a featcache {what} folder (featcache.json + tensors.safetensors). Loading "
        f"pickle-based files can run arbitrary code, so featcache refuses them by default. If you trust "
        f"where this file came from, pass --trust-pickle (or convert it once: `featcache convert {path} "
        f"--out NEW_FOLDER --trust-pickle`).")


META_MAX_BYTES = 64 << 20
"""A head's or fine-tune's featcache.json: settings, classes, history; 64 MiB is ~1M classes."""


def regular_file(path: Path, what: str) -> None:
    """Only regular files are opened: a FIFO or device would block, or never end."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise FeatcacheError(f"{what} {path} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise FeatcacheError(f"{what} {path} is not a regular file (a FIFO, device or folder); refusing to read it")


def inside(folder: Path, path: Path, what: str) -> None:
    """`path` is a regular file of `folder` itself, not a link out of it."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise FeatcacheError(f"{path} ({what}) does not exist or is a link loop") from None
    if real.parent != folder.resolve():
        raise FeatcacheError(f"{path} ({what}) links outside {folder} (to {real}); refusing to read it")
    regular_file(real, what)


def read_meta(folder: Path) -> dict | None:
    """A folder's featcache.json as a dict, or None where it is absent, not a regular file of the folder, too large
    or not a JSON object: for telling kinds of folders apart without hanging on a FIFO."""
    try:
        path = folder / META_FILE
        inside(folder, path, "folder")
        if path.stat().st_size > META_MAX_BYTES:
            return None
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (FeatcacheError, OSError, ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def load_folder(path: str | Path, formats: tuple[str, ...], what: str) -> tuple[dict, dict]:
    """(metadata, tensors) of a folder written by save_folder whose format is one of `formats`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FeatcacheError(f"{what} {path} does not exist")
    if not path.is_dir():
        regular_file(path, what)
        refuse_pickle(path, what)
    meta_file, tensor_file = path / META_FILE, path / TENSORS_FILE
    if not meta_file.exists() or not tensor_file.exists():
        raise FeatcacheError(f"{path} is not a featcache {what}: it lacks {META_FILE} or {TENSORS_FILE}")
    for f in (meta_file, tensor_file):
        inside(path, f, what)
    if meta_file.stat().st_size > META_MAX_BYTES:
        raise FeatcacheError(f"{meta_file} is {meta_file.stat().st_size} bytes, far more than a {what}'s settings; "
                             f"refusing to read it")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FeatcacheError(f"{meta_file} is damaged (not valid JSON: {str(exc)[:100]}); save the {what} "
                             f"again") from None
    if not isinstance(meta, dict) or meta.get("format") not in formats:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise FeatcacheError(f"{path} holds a {found!r}, not a featcache {what} (expected format "
                             f"{' or '.join(formats)})")
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FeatcacheError(f"{tensor_file} is damaged ({exc}); save the {what} again") from None
    return meta, tensors


def load_pickle(path: str | Path, trust_pickle: bool, what: str):
    """Unpickle a joblib/pickle/torch.save file, only when the caller explicitly trusts it."""
    path = Path(path)
    if not trust_pickle:
        refuse_pickle(path, what)
    if describe_file(path).startswith("a torch.save"):
        import torch

        return torch.load(path, weights_only=False, map_location="cpu")
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:
        raise FeatcacheError(f"{path} is not a readable {what} ({type(exc).__name__}: {exc})") from None


def flatten(prefix: str, state: dict) -> dict:
    """Nested dicts of tensors -> {'prefix.a.b': tensor} (the layout safetensors stores)."""
    out = {}
    for key, value in state.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(flatten(name, value))
        else:
            out[name] = value
    return out


def unflatten(prefix: str, tensors: dict) -> dict:
    """The entries of `tensors` under 'prefix.' with the prefix removed (one level)."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def checked_module(build, state: dict, what: str):
    """`build()`'s module with `state` loaded, its shapes checked first on the meta device (no memory): sizes in a
    folder's JSON (widths, hidden sizes) are only believed when the tensors beside them have those shapes, so
    a crafted `input_layout` of 2e8 allocates nothing."""
    import torch

    with torch.device("meta"):
        probe = build()
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        odd = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        name = odd[0]
        raise ValueError(f"the {what}'s tensors do not match its settings (e.g. {name}: settings give "
                         f"{want.get(name)}, the tensors {have.get(name)})")
    module = build()
    module.load_state_dict(state)
    return module


def check_lora_rank(adapters: dict, rank: int, what: str) -> None:
    """A fine-tune folder's `lora_rank` is believed only when its adapter tensors have that rank (a crafted rank
    of 1e6 would allocate gigabytes before the tensors were read)."""
    def tensors(d: dict, prefix: str = ""):
        for k, v in d.items():
            yield from tensors(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]

    ranks = {int(t.shape[0]) for name, t in tensors(adapters) if "lora_A" in name and getattr(t, "ndim", 0) == 2}
    if not isinstance(rank, int) or isinstance(rank, bool) or ranks != {rank}:
        raise FeatcacheError(f"the {what}'s lora_rank {rank!r} does not match its adapters (ranks "
                             f"{sorted(ranks) or 'none'}); it is damaged or crafted: save it again")
