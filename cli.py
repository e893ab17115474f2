"""`featcache` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import sys

import click

from featcache.errors import FeatcacheError


def _run(fn, *args, **kwargs):
    """Call a library function; show a FeatcacheError as a clean message instead of a traceback."""
    try:
        return fn(*args, **kwargs)
    except FeatcacheError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="featcache")
def main() -> None:
    """BLIP-2 features cached once, classifiers trained in seconds."""


@main.command("datasets")
def datasets_cmd() -> None:
    """List the registered dataset names."""
    from featcache.datasets import dataset_names

    for name, desc in dataset_names().items():
        click.echo(f"{name:<20} {desc}")
    click.echo(f"{'PATH.csv|PATH.jsonl':<20} any manifest with columns image, question, answer[, split]")


def dataset_options(fn):
    """--dataset/--root/--images/--seed/--limit and the answer clean-up options, shared by commands."""
    for option in reversed([
        click.option("--dataset", required=True, help="Registered name (see `featcache datasets`) or a CSV/JSONL manifest."),
        click.option("--root", type=click.Path(file_okay=False), help="Dataset folder (DAQUAR)."),
        click.option("--images", type=click.Path(file_okay=False), help="Folder that relative image paths resolve against."),
        click.option("--seed", default=0, show_default=True, help="Seed of the protocol's sampling and splits."),
        click.option("--limit", type=int, help="Only the first N questions (and their images)."),
        click.option("--normalize-answers", is_flag=True, help="Lower-case, strip punctuation, numbers as digits."),
        click.option("--min-count", type=int, default=0, help="Answers rarer than this are folded (--rare)."),
        click.option("--rare", type=click.Choice(["other", "drop"]), default="other", show_default=True),
        click.option("--delimiter", help="CSV manifest delimiter (default: sniffed from the header: , ; tab |)."),
    ]):
        fn = option(fn)
    return fn


def _int_or_auto(value: str, name: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an integer nor auto", param_hint=name) from None


def _delimiter(value: str | None) -> str | None:
    """--delimiter as typed: 'tab' or '\\t' mean a tab."""
    return "\t" if value in ("tab", "\\t") else value


def _dataset(dataset, root, images, seed, limit, normalize_answers, min_count, rare, delimiter):
    from featcache.datasets import fold_rare, load_dataset
    from featcache.datasets import normalize_answers as normalize

    ds = _run(load_dataset, dataset, images=images, root=root, seed=seed, delimiter=_delimiter(delimiter))
    if normalize_answers:
        ds = normalize(ds)
    if min_count:
        ds = _run(fold_rare, ds, min_count, rare)
    for note in ds.warnings:
        click.secho(f"warning: {note}", fg="yellow", err=True)
    return ds.limit(limit)


@main.command()
@dataset_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@click.option("--model", default="Salesforce/blip2-itm-vit-g", show_default=True,
              help="Hub id, local checkpoint folder, or tiny-random (random weights, for trying the pipeline).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--dtype", type=click.Choice(["auto", "float16", "bfloat16", "float32"]), default="auto",
              show_default=True, help="ViT compute dtype (auto: float16 on GPU, float32 on CPU; the Q-Former stays float32).")
@click.option("--batch-size", default="32", show_default=True, help="Images per forward, or auto (GPU: the largest that fits).")
@click.option("--workers", default="auto", show_default=True, help="Image decoding processes, or auto (from the cores).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the ViT (GPU: faster on long runs).")
@click.option("--jpeg-draft", is_flag=True, help="Decode large JPEGs at 1/2-1/8 scale, keeping >= 2x the model's "
              "size (much faster on big photos; features change slightly, see README).")
@click.option("--store-dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--compression", type=click.Choice(["none", "lzf", "gzip"]), default="none", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing file or unfinished run made differently.")
@click.option("--skip-bad", is_flag=True, help="Record unreadable images / empty questions as failed and go on.")
@click.option("--store-vision", is_flag=True, help="Also keep the ViT states (257x1408 per image) for finetune --from-cache.")
@click.option("--shard-size", default=1024, show_default=True, help="Images per shard (on average): the unit of "
              "work, of resuming, and of --shard-index.")
@click.option("--shard-index", type=int, help="Do only shards j with j %% num-shards == this (SLURM arrays, "
              "Kubernetes jobs); then `featcache merge`.")
@click.option("--num-shards", type=int, help="How many --shard-index processes share the run.")
@click.option("--no-merge", is_flag=True, help="Keep the sharded form (OUT.parts/) instead of one file: every "
              "command reads it in place.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: actors across the GPUs (or CPU slots) of a Ray cluster.")
@click.option("--ray-address", help="Ray cluster to join (auto: the running one); default: start a local one.")
@click.option("--gpus-per-worker", default=1.0, show_default=True, help="GPUs per Ray actor (0.5: two per GPU).")
@click.option("--workers-per-node", type=int, help="Ray actors on CPU-only clusters (default: one per CPU).")
@click.option("--max-text-length", default=64, show_default=True,
              help="Question tokens kept; longer questions are cut, counted and flagged in /questions/truncated.")
def extract(dataset, root, images, seed, limit, normalize_answers, min_count, rare, delimiter, out, model, device,
            dtype, batch_size, workers, compile_, jpeg_draft, store_dtype, compression, overwrite, skip_bad,
            store_vision, shard_size, shard_index, num_shards, no_merge, engine, ray_address, gpus_per_worker, workers_per_node,
            max_text_length) -> None:
    """Encode each image and question once with BLIP-2 and write the feature cache."""
    from featcache.extract import extract as run_extract
    from featcache.tiny import TINY_RANDOM, random_weights_warning

    if model == TINY_RANDOM:
        click.secho(random_weights_warning(), fg="yellow", err=True)
    ds = _dataset(dataset, root, images, seed, limit, normalize_answers, min_count, rare, delimiter)
    report = _run(run_extract, ds, out, model=model, device=device, dtype=None if dtype == "auto" else dtype,
                  batch_size=_int_or_auto(batch_size, "--batch-size"), workers=_int_or_auto(workers, "--workers"),
                  compile=compile_, jpeg_draft=jpeg_draft, max_text_length=max_text_length, shard_size=shard_size,
                  shard_index=shard_index, num_shards=num_shards, merge_output=not no_merge, engine=engine,
                  ray_address=ray_address,
                  gpus_per_worker=gpus_per_worker, workers_per_node=workers_per_node,
                  store_dtype=store_dtype, compression=None if compression == "none" else compression,
                  overwrite=overwrite, skip_bad=skip_bad, store_vision=store_vision)
    if report.already_complete:
        click.echo(f"{out} is already complete for these settings; nothing to do (--overwrite to redo).")
        return
    if not report.merged and no_merge and shard_index is None:
        click.echo(f"sharded cache in {out}.parts: {report.shards} shards, {report.n_images} images; every command "
                   f"reads it in place (featcache merge {out}.parts makes one file)")
        return
    if not report.merged:
        click.echo(f"shards {shard_index} mod {num_shards}: {report.shards} shards done ({report.shards_done_before} "
                   f"found finished), {report.images_computed} images encoded in {report.seconds:.1f} s. When every "
                   f"index has run: featcache merge {out}.parts --out {out}")
        return
    click.echo(f"wrote {out}: {report.n_images} images, {report.n_questions} questions "
               f"({report.n_texts} distinct texts); {report.images_computed} images encoded in "
               f"{report.seconds:.1f} s ({report.images_per_second:.1f} img/s)"
               + (f" [resumed: {report.shards_done_before} of {report.shards} shards were done]"
                  if report.shards_done_before else ""))
    if report.truncated_questions:
        click.secho(f"warning: {report.truncated_questions} question(s) were longer than {max_text_length} tokens "
                    f"and were cut (flagged in /questions/truncated), e.g. {report.truncated_examples}; raise "
                    f"--max-text-length to keep them whole", fg="yellow", err=True)
    if report.failed_images or report.failed_questions:
        click.secho(f"failed: {len(report.failed_images)} images, {len(report.failed_questions)} questions "
                    f"(reasons are in /images/error and /questions/error)", fg="yellow")


@main.command()
@click.argument("parts", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="The cache file (default: PARTS without .parts).")
@click.option("--compression", type=click.Choice(["none", "lzf", "gzip"]), default="none", show_default=True)
def merge(parts, out, compression) -> None:
    """Write the single-file cache from a parts folder whose shards are all done (after --shard-index runs)."""
    from featcache.extract import merge_parts

    report = _run(merge_parts, parts, out, None if compression == "none" else compression)
    click.echo(f"wrote {report.path}: {report.n_images} images from {report.shards} shards, {report.n_questions} "
               f"questions")


@main.command()
@click.argument("dataset")
@click.option("--root", type=click.Path(file_okay=False), help="Dataset folder (DAQUAR).")
@click.option("--images", type=click.Path(file_okay=False), help="Folder that relative image paths resolve against.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default="runs/stats", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the PNG plots.")
def stats(dataset, root, images, seed, out) -> None:
    """Counts per split and class, and class-frequency plots (before and after balancing)."""
    from featcache.stats import dataset_stats

    text, plots = _run(dataset_stats, dataset, out, root=root, images=images, seed=seed)
    click.echo(text)
    click.echo("\nplots: " + ", ".join(str(p) for p in plots))


@main.command()
@click.argument("cache", type=click.Path(exists=True))
def info(cache) -> None:
    """Print a cache's metadata, counts and sizes."""
    from featcache.cache import info_text

    click.echo(_run(info_text, cache))


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
def sweep(cache, train_split, eval_split, head_list, views, grid, validation_fraction, jobs, seed, out) -> None:
    """Train every head x view, rank them, and write a report with the best head."""
    from heads.sweep import sweep_to_folder

    rep = _run(sweep_to_folder, cache, out, train_split=train_split, eval_split=eval_split,
               heads=head_list.split(","), views=views.split(","), grid=grid,
               validation_fraction=validation_fraction, n_jobs=jobs, seed=seed)
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
def fit(cache, kind, view, params, train_split, out) -> None:
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
    trained = _run(fit_head, cache, kind, view, parsed, train_split)
    _run(trained.save, out)
    click.echo(f"saved {kind} on view {view} ({len(trained.head.classes_)} classes) to {out}")


TRUST_PICKLE = click.option("--trust-pickle", is_flag=True,
                            help="Also load pickle-based files (joblib heads, featcache 0.1 .pt checkpoints). "
                                 "Loading a pickle can run arbitrary code: only for files from a source you trust.")


@main.command()
@click.argument("head", type=click.Path(exists=True))
@click.argument("cache", type=click.Path(exists=True))
@click.option("--split", default="test", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: next to the head).")
@TRUST_PICKLE
def evaluate(head, cache, split, out, trust_pickle) -> None:
    """Metrics, per-class table and confusion matrix of a saved head on a cache split."""
    from pathlib import Path

    from featcache import open_cache
    from heads.report import write_report
    from heads.sweep import evaluate_head
    from heads.trained import TrainedHead

    trained = _run(TrainedHead.load, head, trust_pickle)
    metrics = _run(evaluate_head, trained, cache, split)
    with _run(open_cache, cache) as c:
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
        todo = _run(read_pairs, pairs, _delimiter(delimiter))
    elif image and question is not None:
        todo = [(image, question)]
    else:
        raise click.UsageError("give --image and --question, or --pairs CSV")
    results, random_weights = _run(predict_saved, head_path, todo, model=model, device=device, top_k=top_k,
                                   trust_pickle=trust_pickle)
    if random_weights:
        click.secho("RANDOM WEIGHTS (tiny-random): these answers mean nothing.", fg="red", bold=True)
    for r in results:
        alts = ", ".join(f"{a} {p:.2f}" for a, p in r["top_k"])
        click.echo(f"{r['image']} | {r['question']} -> {r['answer']} ({r['probability']:.2f})   top-{top_k}: {alts}")


@main.command()
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
def finetune(dataset, root, images, limit, from_cache, model, out, view, epochs, batch_size, grad_accum, lr, l1,
             lora_rank, lora_vision, hidden, batch_norm, dropout, patience, amp, gradient_checkpointing, init_head,
             device, workers, seed, overwrite, trust_pickle) -> None:
    """LoRA on the Q-Former + classifier (GPU mode; runs on CPU too, slowly). Resumes an interrupted run."""
    import json

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
    backbone = _run(load_backbone, model, device=device)
    source = _run(CachedSource, from_cache) if from_cache else LiveSource(
        _run(load_dataset, dataset, images=images, root=root, seed=seed, limit=limit), backbone.preprocessor)
    config = FinetuneConfig(view=view, epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, lr=lr, l1=l1,
                            lora_rank=lora_rank, lora_alpha=lora_rank, lora_vision=lora_vision,
                            hidden_sizes=hidden_sizes, batch_norm=batch_norm, dropout=dropout,
                            patience=patience, amp=amp, gradient_checkpointing=gradient_checkpointing, seed=seed)
    rep = _run(run_finetune, source, out, backbone, config, init_head=init_head, overwrite=overwrite, workers=workers,
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

    path = _run(plot_umap, source, out, cache=cache, view=view, split=split, per_class=per_class, seed=seed,
                trust_pickle=trust_pickle)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the safe copy.")
@TRUST_PICKLE
def convert(source, out, trust_pickle) -> None:
    """Re-save a pickle-based head or fine-tune checkpoint (featcache 0.1) as a safe JSON + safetensors folder."""
    from featcache.persist import convert_legacy

    click.echo(f"wrote {_run(convert_legacy, source, out, trust_pickle)}")


@main.command()
@click.argument("cache", type=click.Path(exists=True))
def verify(cache) -> None:
    """Read every byte of a cache, checking the per-chunk checksums; exit 1 if anything is damaged."""
    from featcache.cache import verify as run_verify

    problems = _run(run_verify, cache)
    if problems:
        raise click.ClickException(f"{cache} is damaged:\n  " + "\n  ".join(problems)
                                   + "\nCopy it again, or re-create it with `featcache extract ... --overwrite`.")
    click.echo(f"{cache}: every dataset read back and its checksums matched")


@main.command()
@click.option("--model", default="Salesforce/blip2-itm-vit-g", show_default=True,
              help="Hub id, checkpoint folder, or tiny-random.")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--limit", type=int, help="Only about N questions (a real model on CPU is slow).")
def demo(model, out, limit) -> None:
    """Extract Easy-VQA, sweep heads, write the report and plots."""
    from featcache.demo import run_demo

    echo = lambda m: click.secho(m, fg="red" if "RANDOM" in m else None, bold="RANDOM" in m)  # noqa: E731
    r = _run(run_demo, model, out, limit, echo)
    for row in r["rows"]:
        click.echo(f"  {row['head']:>5} {row['view']:<7} accuracy {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}")
    if r["random_weights"]:
        click.secho("RANDOM WEIGHTS: the figures above test the pipeline; as accuracy they mean nothing.",
                    fg="red", bold=True)
    click.echo(f"report: {r['report']}\nconfusion: {r['confusion']}\numap: {r['umap']}\nbest head: {r['best']}")


if __name__ == "__main__":
    sys.exit(main())
