"""What the command modules share: error display, common options and argument parsing."""

from __future__ import annotations

import click

from featcache.errors import FeatcacheError


def run(fn, *args, **kwargs):
    """Call a library function; show a FeatcacheError as a clean message instead of a traceback."""
    try:
        return fn(*args, **kwargs)
    except FeatcacheError as exc:
        raise click.ClickException(str(exc)) from None


class Commands(click.Group):
    """The `featcache` group: an error that is not a FeatcacheError (a bug, or an input nobody foresaw) still reaches
    the user as one message naming what failed and how to report it, never as a raw traceback
    (FEATCACHE_DEBUG=1 shows it)."""

    def invoke(self, ctx: click.Context):
        import os

        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit, SystemExit,
                KeyboardInterrupt):
            raise
        except MemoryError:
            raise click.ClickException("out of memory: the input needs more memory than this machine has free; use a "
                                       "smaller --batch-size, --limit, or --stream where the command has them") from None
        except Exception as exc:  # noqa: BLE001 (the point: nothing unforeseen leaves as a traceback)
            if os.environ.get("FEATCACHE_DEBUG"):
                raise
            import sys

            command = " ".join(["featcache", *sys.argv[1:]])
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {str(exc)[:300] or '(no message)'}\n"
                f"This is featcache failing to check its input or a bug: nothing you did should end here. Please "
                f"report it with the command ({command}); FEATCACHE_DEBUG=1 shows the traceback."
            ) from None


TRUST_PICKLE = click.option("--trust-pickle", is_flag=True,
                            help="Also load pickle-based files (joblib heads, .pt checkpoints of the first file format). "
                                 "Loading a pickle can run arbitrary code: only for files from a source you trust.")


def dataset_options(fn):
    """--dataset/--root/--images/--seed/--limit and the answer clean-up options, shared by commands."""
    for option in reversed([
        click.option("--dataset", required=True, help="Registered name (see `featcache datasets`), folder:DIR (a "
                     "folder per class), hf:ID_OR_DIR (a Hugging Face dataset), wds:PATTERN (WebDataset tars), or a CSV/JSONL "
                     "manifest."),
        click.option("--root", type=click.Path(file_okay=False), help="Dataset folder (DAQUAR)."),
        click.option("--images", type=click.Path(file_okay=False), help="Folder that relative image paths resolve against."),
        click.option("--seed", default=0, show_default=True, help="Seed of the protocol's sampling and splits."),
        click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions (and their images)."),
        click.option("--normalize-answers", is_flag=True, help="Lower-case, strip punctuation, numbers as digits."),
        click.option("--min-count", type=click.IntRange(min=0), default=0, help="Answers rarer than this are folded (--rare)."),
        click.option("--rare", type=click.Choice(["other", "drop"]), default="other", show_default=True),
        click.option("--delimiter", help="CSV manifest delimiter (default: sniffed from the header: , ; tab |)."),
        click.option("--hf-config", help="hf: datasets: the configuration (subset) to load."),
        click.option("--image-column", help="hf: datasets: the image column [default: found by name, e.g. image]."),
        click.option("--question-column", help="hf: datasets: the question column [default: question]."),
        click.option("--answer-column", help="hf: datasets: the answer column [default: multiple_choice_answer, "
                     "answer, answers...]; a list of human answers gives its most common one."),
        click.option("--label-column", help="hf: datasets without questions: the class label column [default: label]."),
    ]):
        fn = option(fn)
    return fn


def int_or_auto(value: str, name: str, minimum: int = 1) -> int | str:
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an integer nor auto", param_hint=name) from None
    if number < minimum:
        raise click.BadParameter(f"{number} is below {minimum}; give at least {minimum}, or auto", param_hint=name)
    return number


def delimiter_arg(value: str | None) -> str | None:
    """--delimiter as typed: 'tab' or '\\t' mean a tab."""
    return "\t" if value in ("tab", "\\t") else value


def load_dataset_arg(dataset, root, images, seed, limit, normalize_answers, min_count, rare, delimiter, hf_config=None,
                     image_column=None, question_column=None, answer_column=None, label_column=None):
    from featcache.datasets import fold_rare, load_dataset
    from featcache.datasets import normalize_answers as normalize

    columns = {"image": image_column, "question": question_column, "answer": answer_column, "label": label_column}
    ds = run(load_dataset, dataset, images=images, root=root, seed=seed, delimiter=delimiter_arg(delimiter),
             hf_config=hf_config, columns=columns)
    if normalize_answers:
        ds = normalize(ds)
    if min_count:
        ds = run(fold_rare, ds, min_count, rare)
    for note in ds.warnings:
        click.secho(f"warning: {note}", fg="yellow", err=True)
    return ds.limit(limit)
