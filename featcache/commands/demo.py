"""`featcache demo` (what `make demo` runs): Easy-VQA -> extract -> sweep -> report and plots."""

from __future__ import annotations

import click

from .common import run


def register(main: click.Group) -> None:
    main.add_command(demo)


@click.command()
@click.option("--model", default="Salesforce/blip2-itm-vit-g", show_default=True,
              help="Hub id, checkpoint folder, or tiny-random.")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--limit", type=click.IntRange(min=1), help="Only about N questions (a real model on CPU is slow).")
def demo(model, out, limit) -> None:
    """Extract Easy-VQA, sweep heads, write the report and plots."""
    from featcache.workflows.demo import run_demo

    echo = lambda m: click.secho(m, fg="red" if "RANDOM" in m else None, bold="RANDOM" in m)  # noqa: E731
    r = run(run_demo, model, out, limit, echo)
    for row in r["rows"]:
        click.echo(f"  {row['head']:>8} {row['view']:<10} accuracy {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}")
    if r["random_weights"]:
        click.secho("RANDOM WEIGHTS: the figures above test the pipeline; as accuracy they mean nothing.",
                    fg="red", bold=True)
    click.echo(f"report: {r['report']}\nconfusion: {r['confusion']}\numap: {r['umap']}\nbest head: {r['best']}\n"
               f"open in a browser: {r['html']}")
