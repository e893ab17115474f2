"""`featcache finetune`: LoRA on the Q-Former + classifier, or with --generative on the language model."""

from __future__ import annotations

import click

from . import generative as generative_commands
from .common import TRUST_PICKLE, run


def register(main: click.Group) -> None:
    main.add_command(finetune)


@click.command()
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
@click.option("--limit", type=click.IntRange(min=1), help="Only about N questions.")
@click.option("--from-cache", "from_cache", type=click.Path(exists=True),
              help="Train from a cache made with extract --store-vision: the ViT never runs.")
@click.option("--model", default="Salesforce/blip2-itm-vit-g", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, metrics).")
@click.option("--view", type=click.Choice(["itc", "pooled"]), default="itc", show_default=True)
@click.option("--eval-split", default="test", show_default=True,
              help="The split evaluated once with the best epoch (a benchmark's val, testdev or test-dev); on a "
                   "benchmark the summary gives its own figures and OUT/submission.json its results file.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--l1", default=0.01, show_default=True, type=click.FloatRange(min=0))
@click.option("--lora-rank", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--lora-vision", is_flag=True, help="LoRA on the ViT too (then it runs with gradients).")
@click.option("--hidden", default="5012,2056,1024,512", show_default=True,
              help="Classifier hidden sizes, comma-separated (default: the paper's).")
@click.option("--batch-norm/--no-batch-norm", default=True, show_default=True, help="BatchNorm after each hidden ReLU.")
@click.option("--dropout", default=0.5, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Dropout after each hidden layer.")
@click.option("--patience", default=3, show_default=True, type=click.IntRange(min=1), help="Early stopping on validation accuracy.")
@click.option("--amp", type=click.Choice(["float16", "bfloat16"]), help="Autocast on GPU.")
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--init-head", type=click.Path(exists=True), help="Start from an MLP head (folder) fitted on the cache.")
@click.option("--device", default="auto", show_default=True)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True)
@TRUST_PICKLE
@click.pass_context
def finetune(ctx, generative, recipe, prompt, lora_qformer, dataset, root, images, limit, from_cache, model, out, view,
             eval_split, epochs,
             batch_size, grad_accum, lr, l1, lora_rank, lora_vision, hidden, batch_norm, dropout, patience, amp,
             gradient_checkpointing, init_head, device, workers, seed, overwrite, trust_pickle) -> None:
    """LoRA on the Q-Former + classifier (GPU mode; runs on CPU too, slowly), or with --generative on a
    generative BLIP-2's language model. Resumes an interrupted run."""
    import json

    if generative:
        return generative_commands.finetune_generative_cmd(ctx, recipe, prompt, from_cache, model, out, device, overwrite)
    if any(ctx.get_parameter_source(n).name != "DEFAULT" for n in ("prompt", "recipe", "lora_qformer")):
        raise click.UsageError("--recipe, --prompt and --lora-qformer belong to --generative")

    from featcache.datasets import load_dataset
    from featcache.finetune import CachedSource, FinetuneConfig, LiveSource
    from featcache.finetune import finetune as run_finetune
    from featcache.models.backbone import load_backbone

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
                            patience=patience, amp=amp, gradient_checkpointing=gradient_checkpointing, seed=seed,
                            eval_split=eval_split)
    rep = run(run_finetune, source, out, backbone, config, init_head=init_head, overwrite=overwrite, workers=workers,
               trust_pickle=trust_pickle)
    summary = {"best_validation_accuracy": rep.best_validation_accuracy, "evaluated_split": eval_split,
               "test": rep.test_metrics,
               "epochs_run": rep.epochs_run, "resumed_from_epoch": rep.resumed_from_epoch,
               "samples_per_second": rep.samples_per_second}
    (rep.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    from featcache.workflows.finetune_report import write_finetune_report

    files = run(write_finetune_report, rep, source, backbone.provenance(), config,
                f"fine-tune of {backbone.model_id} ({view}) on {eval_split}")
    if rep.submission is not None:
        (rep.out / "submission.json").write_text(json.dumps(rep.submission) + "\n", encoding="utf-8")
        click.echo(f"results file ({eval_split}, the benchmark's format): {rep.out / 'submission.json'}")
    if model == "tiny-random":
        click.secho("RANDOM WEIGHTS (tiny-random): these accuracies mean nothing.", fg="red", bold=True)
    click.echo(json.dumps(summary, indent=1))
    click.echo(f"best checkpoint: {rep.out / 'best'}  metrics: {rep.out / 'metrics.jsonl'}")
    if files is not None:
        click.echo(f"report: {files['html']}")
