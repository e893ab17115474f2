"""`featcache` commands over finished reports: compare runs, find likely label errors."""

from __future__ import annotations

import click

from .common import run
from .heads import parse_params, report_thumbnails


def register(main: click.Group) -> None:
    for command in (compare, label_issues):
        main.add_command(command)


@click.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Write compare.csv, compare.md, compare.json and "
              "compare.html here.")
def compare(reports, out) -> None:
    """One table across report folders; the first is the baseline, and each other run that scored the same
    questions gets a paired bootstrap interval, a paired t-test and the questions they disagree on most."""
    from heads.compare import compare as compare_reports, markdown

    result = run(compare_reports, list(reports), out)
    click.echo(markdown(result), nl=False)
    if out:
        click.echo(f"written: {out}/compare.html (and .csv, .md, .json)")


@click.command("label-issues")
@click.argument("cache", type=click.Path(exists=True))
@click.option("--view", default="pooled", show_default=True)
@click.option("--head", "kind", default="lr", show_default=True, help="The head whose out-of-fold probabilities judge.")
@click.option("--param", "params", multiple=True, help="Head parameter as name=JSON value (repeatable).")
@click.option("--split", default="train", show_default=True)
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=2))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for label_issues.jsonl and label_issues.html.")
@click.option("--images-from", help="Where the page reads the images (default: the cache's dataset, where it opens).")
@click.option("--images-root", type=click.Path(exists=True, file_okay=False), help="--images-from: its folder.")
def label_issues(cache, view, kind, params, split, folds, out, images_from, images_root) -> None:
    """Likely label errors of a single-label split: cleanlab's find_label_issues on out-of-fold probabilities
    (folds of whole images), shown with their images."""
    import json
    from pathlib import Path

    from featcache import open_cache
    from heads.grids import make_head
    from heads.label_issues import find_label_issues
    from heads.page.render import write_issues_page

    parsed = parse_params(params)
    make_head(kind, parsed)  # an unknown head or parameter is named before any fit
    with run(open_cache, cache) as c:
        attrs = dict(c.attrs)
        issues = run(find_label_issues, c, view, split, lambda: make_head(kind, parsed), folds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "label_issues.jsonl").open("w", encoding="utf-8") as fh:
        for issue in issues:
            fh.write(json.dumps(issue, ensure_ascii=False) + "\n")
    page = write_issues_page(out / "label_issues.html", f"likely label errors in {split} of {cache}", issues,
                             report_thumbnails(cache, images_from, images_root),
                             random_weights=str(attrs.get("model_id", "")).startswith("tiny-random"))
    click.echo(f"{len(issues)} likely label errors in {split} ({kind} on {view}, {folds} folds): "
               f"{out / 'label_issues.jsonl'}; with their images: {page}")

