"""Dataset statistics: counts per split and class, and the paper's class-frequency bar chart and box
plot, before and after a protocol's balancing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .base import VQADataset

MAX_BARS = 40


def stats_text(ds: VQADataset) -> str:
    counts = ds.counts()
    images = {s: len({q.image for q in ds.questions if q.split == s}) for s in counts}
    shared = set.intersection(*[{q.image.split("#")[0] for q in ds.questions if q.split == s} for s in counts]) \
        if len(counts) > 1 else set()
    lines = [f"{ds.name}: {len(ds.questions)} questions, {len(ds.images())} images "
             f"({len(ds.augmented)} augmented), {len({q.answer for q in ds.questions})} classes",
             f"source: {ds.source}"]
    for s, per in counts.items():
        lines.append(f"  {s:<8} {sum(per.values()):>7} questions {images[s]:>6} images")
    lines.append(f"  images (or their augmented copies) in more than one split: {len(shared)}")
    totals = Counter(q.answer for q in ds.questions)
    splits = list(counts)
    lines.append("")
    lines.append(f"  {'answer':<20}" + "".join(f"{s:>9}" for s in splits) + f"{'total':>9}")
    for answer, n in totals.most_common(MAX_BARS):
        lines.append(f"  {answer[:20]:<20}" + "".join(f"{counts[s].get(answer, 0):>9}" for s in splits) + f"{n:>9}")
    if len(totals) > MAX_BARS:
        lines.append(f"  ... and {len(totals) - MAX_BARS} more answers")
    missing = ds.missing_images()
    notes = ds.warnings + ([f"{len(missing)} images have no file (e.g. {ds.image_paths[missing[0]]})"] if missing else [])
    lines += ["", *[f"warning: {w}" for w in notes]] if notes else []
    return "\n".join(lines)


def plot_class_frequencies(datasets: dict[str, VQADataset], out_dir: str | Path) -> list[Path]:
    """Bar chart (one panel per dataset) and box plot of per-class counts; returns the PNG paths."""
    from ..plotting import pyplot, save_figure

    plt = pyplot()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = "_".join(datasets)
    fig, axes = plt.subplots(len(datasets), 1, figsize=(11, 3.6 * len(datasets)), squeeze=False)
    for ax, (label, ds) in zip(axes[:, 0], datasets.items()):
        top = Counter(q.answer for q in ds.questions).most_common(MAX_BARS)
        ax.bar(range(len(top)), [n for _, n in top], color="#4C72B0")
        ax.set_xticks(range(len(top)))
        ax.set_xticklabels([a for a, _ in top], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("questions")
        shown = "" if len(top) == len({q.answer for q in ds.questions}) else f" (top {MAX_BARS})"
        ax.set_title(f"{label}: class frequencies{shown}")
    bar = save_figure(fig, out / f"{name}_class_frequency.png")

    fig, ax = plt.subplots(figsize=(2.2 + 2.0 * len(datasets), 4.2))
    ax.boxplot([list(Counter(q.answer for q in ds.questions).values()) for ds in datasets.values()])
    ax.set_xticks(range(1, len(datasets) + 1))
    ax.set_xticklabels(list(datasets))
    ax.set_ylabel("questions per class")
    ax.set_yscale("log")
    ax.set_title("class-size distribution")
    box = save_figure(fig, out / f"{name}_class_boxplot.png")
    return [bar, box]


def dataset_stats(name: str, out_dir: str | Path, root: str | None = None, images: str | None = None,
                  seed: int = 0) -> tuple[str, list[Path]]:
    """Text report and plots for a dataset and, for a balancing protocol, its unbalanced base."""
    from .registry import load_dataset, protocols

    ds = load_dataset(name, images=images, root=root, seed=seed)
    shown = {}
    base = protocols().get(name)
    if base is not None and base.base:
        shown[f"{base.base} (before)"] = load_dataset(base.base, root=root, seed=seed)
    shown[name] = ds
    text = "\n\n".join(stats_text(d) for d in shown.values())
    return text, plot_class_frequencies({k.split(" ")[0]: v for k, v in shown.items()}, out_dir)
