"""`featcache` commands of the generative BLIP-2: zeroshot."""

from __future__ import annotations

import click

from cli_common import run


def register(main: click.Group) -> None:
    main.add_command(zeroshot_cmd)


@click.command("zeroshot")
@click.argument("cache", type=click.Path(exists=True))
@click.option("--model", required=True, help="rank/generate: the generative checkpoint that made CACHE (e.g. "
              "Salesforce/blip2-opt-2.7b, or tiny-random-opt / tiny-random-t5: RANDOM weights); itc: the "
              "retrieval checkpoint that made it.")
@click.option("--method", type=click.Choice(["rank", "generate", "itc"]), default="rank", show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option("--prompt", help="rank/generate prompt with {} for the question [default: 'Question: {} Answer:'].")
@click.option("--length-norm", is_flag=True, help="rank: divide each answer's log-likelihood by its tokens.")
@click.option("--max-new-tokens", default=4, show_default=True, help="generate: tokens to generate.")
@click.option("--map-model", help="generate: a retrieval checkpoint whose ITC text embedding maps answers that "
              "match no vocabulary answer to the nearest one (reported apart as 'mapped').")
@click.option("--template", type=click.Choice(["answer", "picture", "statement"]), default="picture",
              show_default=True, help="itc: the text each answer is embedded as.")
@click.option("--limit", type=int, help="Only the first N questions of the split.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report folder (as `sweep` writes).")
def zeroshot_cmd(cache, model, method, split, prompt, length_norm, max_new_tokens, map_model, template, limit, device,
                 out) -> None:
    """Answer a cache's questions without training, over its answer vocabulary, and report as `sweep` does."""
    from featcache.generative.report import write_zeroshot_report
    from featcache.generative.zeroshot import zeroshot

    result = run(zeroshot, cache, model, method=method, split=split, prompt=prompt, length_norm=length_norm,
                 max_new_tokens=max_new_tokens, map_model=map_model, template=template, device=device, limit=limit)
    files, row = run(write_zeroshot_report, result, cache, out)
    if model.startswith("tiny-random"):
        click.secho("RANDOM WEIGHTS (tiny-random): this accuracy means nothing.", fg="red", bold=True)
    counts = "".join(f"  {k} {v}" for k, v in result.counts.items())
    click.echo(f"zeroshot-{method}  acc {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}  "
               f"({row['questions']} questions, {result.images_per_s:.1f} images/s){counts}\nreport: {files['report']}")
