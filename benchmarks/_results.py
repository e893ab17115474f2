"""Where every benchmark's figures go: printed, and saved as JSON under benchmarks/results/."""

from __future__ import annotations

import json
from pathlib import Path


def save_result(result: dict, out: str | Path, name: str) -> Path:
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {path}")
    return path
