"""`featcache` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import sys

import click

import cli_extract
import cli_generative
from cli_common import TRUST_PICKLE, delimiter_arg, run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="featcache")
def main() -> None:
    """BLIP-2 features cached once, classifiers trained in seconds."""


cli_extract.register(main)
cli_generative.register(main)


@main.command()
@click.argument("cache", type=click.Path(exists=True))
@click.option("--train-split", default="train", show_default=True)
@click.option("--eval-split", default="test", show_default=True)
@click.option("--heads", "head_list", default="lr,mlp,lgbm", show_default=True, help="Comma-separated: lr, mlp, lgbm.")
@click.option("--views", default="pooled,itc", show_default=True, help="Comma-separated: itc, pooled, full, sim, image.")
@click.option("--grid", default="small", show_default=True, help="small, default, or a JSON file {head: [params]}.")
@click.option("--validation-fraction", default=0.1, show_default=True)
@click.option("--jobs", default=1, show_default=True, help="Parallel fits (joblib).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report folder (written as OUT.partial/ and renamed when complete; a rerun resumes it).")
@click.option("--stream", is_flag=True, help="Leave the images on disk and read them block by block: for caches "
              "larger than memory (same results as in memory).")
def sweep(cache, train_split, eval_split, head_list, views, grid, validation_fraction, jobs, seed, out,
          stream) -> None:
    """Train every head x view, rank them, and write a report with the best head."""
    from heads.sweep import sweep_to_folder

    rep = run(sweep_to_folder, cache, out, train_split=train_split, eval_split=eval_split,
               heads=head_list.split(","), views=views.split(","), grid=grid,
               validation_fraction=validation_fraction, n_jobs=jobs, seed=seed, stream=stream)
    result, files, best = rep.result, rep.files, rep.best
    if rep.note != "fresh":
        click.echo(f"sweep started {rep.note}")
    if result.best.random_weights:
        click.secho("RANDOM WEIGHTS (tiny-random): the accuracies below mean nothing.", fg="red", bold=True)
    for r in result.rows:
        click.echo(f"{r['head']:>5} {r['view']:<7} acc {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
                   f"fit {r['fit_s']:.1f}s  {r['params']}")
    click.echo(f"report: {files['report']}  best head: {best}")


@main.command()
@click.argument("cache", type=click.Path(exists=True))
@click.option("--head", "kind", default="lr", show_default=True, help="lr, mlp or lgbm.")
@click.option("--view", default="pooled", show_default=True)
@click.option("--param", "params", multiple=True, help="Head parameter as name=JSON value, e.g. C=0.1 (repeatable); "
              "preset=reference|compact for the mlp.")
@click.option("--train-split", default="train", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to save the head to (JSON + safetensors).")
@click.option("--stream", is_flag=True, help="Leave the images on disk and read them block by block: for caches "
              "larger than memory (same results as in memory).")
def fit(cache, kind, view, params, train_split, out, stream) -> None:
    """Train one head on one view of a cache."""
    import json

    from heads.sweep import fit_head

    parsed = {}
    for p in params:
        name, eq, value = p.partition("=")
        if not eq or not name.strip():
            raise click.BadParameter(f"{p!r} is not NAME=VALUE, e.g. C=0.1 or hidden_sizes=[512]", param_hint="--param")
        name = name.strip()
        try:
            parsed[name] = json.loads(value)
        except json.JSONDecodeError:
            parsed[name] = value
        if isinstance(parsed[name], list):
            parsed[name] = tuple(parsed[name])
    trained = run(fit_head, cache, kind, view, parsed, train_split, stream)
    run(trained.save, out)
    click.echo(f"saved {kind} on view {view} ({len(trained.head.classes_)} classes) to {out}")


@main.command()
@click.argument("head", type=click.Path(exists=True))
@click.argument("cache", type=click.Path(exists=True))
@click.option("--split", default="test", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: next to the head).")
@TRUST_PICKLE
@click.option("--stream", is_flag=True, help="Leave the images on disk and read them block by block: for caches "
              "larger than memory (same results as in memory).")
def evaluate(head, cache, split, out, trust_pickle, stream) -> None:
    """Metrics, per-class table and confusion matrix of a saved head on a cache split."""
    from pathlib import Path

    from featcache import open_cache
    from heads.report import write_report
    from heads.sweep import evaluate_head
    from heads.trained import TrainedHead

    trained = run(TrainedHead.load, head, trust_pickle)
    metrics = run(evaluate_head, trained, cache, split, stream)
    with run(open_cache, cache) as c:
        attrs = dict(c.attrs)
    out = out or str(Path(head).with_suffix("")).rstrip("/") + f"_{split}"
    files = write_report(out, metrics, attrs, f"{Path(head).name} on {split} of {cache}")
    if trained.random_weights:
        click.secho("RANDOM WEIGHTS (tiny-random): this accuracy means nothing.", fg="red", bold=True)
    click.echo(f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
               f"balanced {metrics['balanced_accuracy']:.4f}  (n={metrics['n']})\nreport: {files['report']}")


@main.command()
@click.option("--head", "head_path", required=True, type=click.Path(exists=True),
              help="A head folder (fit, sweep) or a fine-tune checkpoint folder (finetune's best/).")
@click.option("--model", help="Backbone (default: the one the head's cache was made with).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="One image...")
@click.option("--question", help="...and its question.")
@click.option("--pairs", type=click.Path(exists=True, dir_okay=False), help="Or a CSV/JSONL with columns image, question.")
@click.option("--delimiter", help="--pairs CSV delimiter (default: sniffed).")
@click.option("--top-k", default=3, show_default=True)
@click.option("--device", default="auto", show_default=True)
@TRUST_PICKLE
def predict(head_path, model, image, question, pairs, delimiter, top_k, device, trust_pickle) -> None:
    """Answer new (image, question) pairs with a saved head; runs the backbone, no cache needed."""
    from featcache.predict import predict_saved, read_pairs

    if pairs:
        todo = run(read_pairs, pairs, delimiter_arg(delimiter))
    elif image and question is not None:
        todo = [(image, question)]
    else:
        raise click.UsageError("give --image and --question, or --pairs CSV")
    results, random_weights = run(predict_saved, head_path, todo, model=model, device=device, top_k=top_k,
                                   trust_pickle=trust_pickle)
    if random_weights:
        click.secho("RANDOM WEIGHTS (tiny-random): these answers mean nothing.", fg="red", bold=True)
    for r in results:
        alts = ", ".join(f"{a} {p:.2f}" for a, p in r["top_k"])
        click.echo(f"{r['image']} | {r['question']} -> {r['answer']} ({r['probability']:.2f})   top-{top_k}: {alts}")


@main.command()
@click.option("--generative", is_flag=True, help="LoRA on a generative BLIP-2's language model (OPT / Flan-T5) from "
              "--from-cache; --recipe picks the settings, options given explicitly override them.")
@click.option("--recipe", type=click.Choice(["paper-baseline", "lora-vqa-report"]), default="lora-vqa-report",
              show_default=True, help="--generative: the BLIP-2 Classifier paper's baseline or the LoRA-VQA report's.")
@click.option("--prompt", help="--generative: prompt with {} for the question [default: the recipe's].")
@click.option("--lora-qformer", is_flag=True, help="--generative: LoRA on the Q-Former too (needs a --store-vision "
              "cache: the Q-Former then reruns on the cached ViT states).")
@click.option("--dataset", help="Registered name or manifest (live: images through the frozen ViT).")
@click.option("--root", type=click.Path(file_okay=False), help="Dataset folder (DAQUAR).")
@click.option("--images", type=click.Path(file_okay=False), help="Folder that relative image paths resolve against.")
@click.option("--limit", type=int, help="Only about N questions.")
@click.option("--from-cache", "from_cache", type=click.Path(exists=True),
              help="Train from a cache made with extract --store-vision: the ViT never runs.")
@click.option("--model", default="Salesforce/blip2-itm-vit-g", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, metrics).")
@click.option("--view", type=click.Choice(["itc", "pooled"]), default="itc", show_default=True)
@click.option("--epochs", default=10, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--grad-accum", default=1, show_default=True)
@click.option("--lr", default=1e-4, show_default=True)
@click.option("--l1", default=0.01, show_default=True)
@click.option("--lora-rank", default=8, show_default=True)
@click.option("--lora-vision", is_flag=True, help="LoRA on the ViT too (then it runs with gradients).")
@click.option("--hidden", default="5012,2056,1024,512", show_default=True,
              help="Classifier hidden sizes, comma-separated (default: the paper's).")
@click.option("--batch-norm/--no-batch-norm", default=True, show_default=True, help="BatchNorm after each hidden ReLU.")
@click.option("--dropout", default=0.5, show_default=True, help="Dropout after each hidden layer.")
@click.option("--patience", default=3, show_default=True, help="Early stopping on validation accuracy.")
@click.option("--amp", type=click.Choice(["float16", "bfloat16"]), help="Autocast on GPU.")
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--init-head", type=click.Path(exists=True), help="Start from an MLP head (folder) fitted on the cache.")
@click.option("--device", default="auto", show_default=True)
@click.option("--workers", default=2, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True)
@TRUST_PICKLE
@click.pass_context
def finetune(ctx, generative, recipe, prompt, lora_qformer, dataset, root, images, limit, from_cache, model, out, view, epochs,
             batch_size, grad_accum, lr, l1, lora_rank, lora_vision, hidden, batch_norm, dropout, patience, amp,
             gradient_checkpointing, init_head, device, workers, seed, overwrite, trust_pickle) -> None:
    """LoRA on the Q-Former + classifier (GPU mode; runs on CPU too, slowly), or with --generative on a
    generative BLIP-2's language model. Resumes an interrupted run."""
    import json

    if generative:
        return cli_generative.finetune_generative_cmd(ctx, recipe, prompt, from_cache, model, out, device, overwrite)
    if any(ctx.get_parameter_source(n).name != "DEFAULT" for n in ("prompt", "recipe", "lora_qformer")):
        raise click.UsageError("--recipe, --prompt and --lora-qformer belong to --generative")

    from featcache.backbone import load_backbone
    from featcache.datasets import load_dataset
    from featcache.finetune import CachedSource, FinetuneConfig, LiveSource
    from featcache.finetune import finetune as run_finetune

    if bool(dataset) == bool(from_cache):
        raise click.UsageError("give exactly one of --dataset or --from-cache")
    try:
        hidden_sizes = tuple(int(h) for h in hidden.split(","))
    except ValueError:
        raise click.BadParameter(f"{hidden!r} is not comma-separated integers, e.g. 5012,2056,1024,512",
                                 param_hint="--hidden") from None
    backbone = run(load_backbone, model, device=device)
    source = run(CachedSource, from_cache) if from_cache else LiveSource(
        run(load_dataset, dataset, images=images, root=root, seed=seed, limit=limit), backbone.preprocessor)
    config = FinetuneConfig(view=view, epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, lr=lr, l1=l1,
                            lora_rank=lora_rank, lora_alpha=lora_rank, lora_vision=lora_vision,
                            hidden_sizes=hidden_sizes, batch_norm=batch_norm, dropout=dropout,
                            patience=patience, amp=amp, gradient_checkpointing=gradient_checkpointing, seed=seed)
    rep = run(run_finetune, source, out, backbone, config, init_head=init_head, overwrite=overwrite, workers=workers,
               trust_pickle=trust_pickle)
    summary = {"best_validation_accuracy": rep.best_validation_accuracy, "test": rep.test_metrics,
               "epochs_run": rep.epochs_run, "resumed_from_epoch": rep.resumed_from_epoch,
               "samples_per_second": rep.samples_per_second}
    (rep.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if model == "tiny-random":
        click.secho("RANDOM WEIGHTS (tiny-random): these accuracies mean nothing.", fg="red", bold=True)
    click.echo(json.dumps(summary, indent=1))
    click.echo(f"best checkpoint: {rep.out / 'best'}  metrics: {rep.out / 'metrics.jsonl'}")


@main.group()
def plot() -> None:
    """Plots of caches and heads."""


@plot.command("umap")
@click.argument("source", type=click.Path(exists=True))
@click.option("--cache", type=click.Path(exists=True), help="Features to embed (when SOURCE is a head).")
@click.option("--view", default="pooled", show_default=True, help="View to plot (when SOURCE is a cache).")
@click.option("--split", default="test", show_default=True)
@click.option("--per-class", default=300, show_default=True, help="Class-balanced subsample size.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file.")
@TRUST_PICKLE
def plot_umap_cmd(source, cache, view, split, per_class, seed, out, trust_pickle) -> None:
    """2-D UMAP of a cache view, or of a head's learned representation (SOURCE a head folder), by class."""
    from heads.plots import plot_umap

    path = run(plot_umap, source, out, cache=cache, view=view, split=split, per_class=per_class, seed=seed,
                trust_pickle=trust_pickle)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the safe copy.")
@TRUST_PICKLE
def convert(source, out, trust_pickle) -> None:
    """Re-save a pickle-based head or fine-tune checkpoint (featcache 0.1) as a safe JSON + safetensors folder."""
    from featcache.persist import convert_legacy

    click.echo(f"wrote {run(convert_legacy, source, out, trust_pickle)}")


@main.command()
@click.option("--model", default="Salesforce/blip2-itm-vit-g", show_default=True,
              help="Hub id, checkpoint folder, or tiny-random.")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--limit", type=int, help="Only about N questions (a real model on CPU is slow).")
def demo(model, out, limit) -> None:
    """Extract Easy-VQA, sweep heads, write the report and plots."""
    from featcache.demo import run_demo

    echo = lambda m: click.secho(m, fg="red" if "RANDOM" in m else None, bold="RANDOM" in m)  # noqa: E731
    r = run(run_demo, model, out, limit, echo)
    for row in r["rows"]:
        click.echo(f"  {row['head']:>5} {row['view']:<7} accuracy {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}")
    if r["random_weights"]:
        click.secho("RANDOM WEIGHTS: the figures above test the pipeline; as accuracy they mean nothing.",
                    fg="red", bold=True)
    click.echo(f"report: {r['report']}\nconfusion: {r['confusion']}\numap: {r['umap']}\nbest head: {r['best']}")


if __name__ == "__main__":
    sys.exit(main())
