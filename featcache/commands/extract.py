"""`featcache` commands that make and check caches: extract, merge, info, verify, datasets, stats."""

from __future__ import annotations

import click

from .common import dataset_options, int_or_auto, load_dataset_arg, run


def register(main: click.Group) -> None:
    for command in (datasets_cmd, extract, merge, stats, info, verify):
        main.add_command(command)


@click.command("datasets")
def datasets_cmd() -> None:
    """List the registered dataset names."""
    from featcache.datasets import dataset_names

    for name, desc in dataset_names().items():
        click.echo(f"{name:<20} {desc}")
    click.echo(f"{'PATH.csv|PATH.jsonl':<20} any manifest with columns image, question, answer[, split]")


@click.command()
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
@click.option("--writer", type=click.Choice(["auto", "process", "thread"]), default="auto", show_default=True,
              help="Where shards and the final file are written: a forked process (auto on a GPU: the feeding "
              "thread keeps the GIL) or a thread (auto on a CPU: the forward keeps the cores).")
@click.option("--cuda-graphs", is_flag=True, help="GPU: replay the image forward as one CUDA graph per batch (fewer "
              "launches; eager, and said so, where capture fails).")
@click.option("--jpeg-draft", is_flag=True, help="Decode large JPEGs at 1/2-1/8 scale, keeping >= 2x the model's "
              "size (much faster on big photos; features change slightly, see README).")
@click.option("--store-dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--compression", type=click.Choice(["none", "lzf", "gzip"]), default="none", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing file or unfinished run made differently.")
@click.option("--skip-bad", is_flag=True, help="Record unreadable images / empty questions as failed and go on.")
@click.option("--store-vision", is_flag=True, help="Also keep the ViT states (257x1408 per image) for finetune --from-cache.")
@click.option("--shard-size", default=1024, show_default=True, type=click.IntRange(min=1), help="Images per shard (on average): the unit of "
              "work, of resuming, and of --shard-index.")
@click.option("--shard-index", type=click.IntRange(min=0), help="Do only shards j with j % num-shards == this (SLURM arrays, "
              "Kubernetes jobs); then `featcache merge`.")
@click.option("--num-shards", type=click.IntRange(min=1), help="How many --shard-index processes share the run.")
@click.option("--no-merge", is_flag=True, help="Keep the sharded form (OUT.parts/) instead of one file: every "
              "command reads it in place.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: actors across the GPUs (or CPU slots) of a Ray cluster.")
@click.option("--ray-address", help="Ray cluster to join (auto: the running one); default: start a local one.")
@click.option("--gpus-per-worker", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="GPUs per Ray actor (0.5: two per GPU).")
@click.option("--workers-per-node", type=click.IntRange(min=1), help="Ray actors on CPU-only clusters (default: one per CPU).")
@click.option("--max-text-length", default=64, show_default=True,
              help="Question tokens kept; longer questions are cut, counted and flagged in /questions/truncated.")
@click.option("--features", type=click.Choice(["unimodal", "multimodal"]), default="unimodal", show_default=True,
              help="unimodal: the queries see the image only (the paper's). multimodal: also the query states with "
              "each question read beside the queries (/pairs; views mm, mm_pooled): BLIP-2 retrieval checkpoints "
              "and InstructBLIP.")
@click.option("--mm-store", type=click.Choice(["full", "pooled"]), default="full", show_default=True,
              help="multimodal: keep the 32 states per question (49 KB in fp16) or only their mean (1.5 KB).")
@click.option("--mm-prompt", default="{}", show_default=True,
              help="multimodal: what the Q-Former reads, {} standing for the question (InstructBLIP: the prompt you "
              "answer with, e.g. 'Question: {} Short answer:').")
@click.option("--from-vision", type=click.Path(exists=True),
              help="Take the ViT states from this --store-vision cache of the same model instead of running the ViT.")
def extract(dataset, root, images, seed, limit, normalize_answers, min_count, rare, delimiter, hf_config, image_column,
            question_column, answer_column, label_column, out, model, device,
            dtype, batch_size, workers, compile_, jpeg_draft, store_dtype, compression, overwrite, skip_bad,
            store_vision, shard_size, shard_index, num_shards, no_merge, engine, ray_address, gpus_per_worker, workers_per_node,
            max_text_length, features, mm_store, mm_prompt, from_vision, cuda_graphs, writer) -> None:
    """Encode each image and question once with BLIP-2 and write the feature cache."""
    from featcache.extract import extract as run_extract
    from featcache.models.names import TINY_RANDOM, random_weights_warning

    if model.startswith(TINY_RANDOM):
        click.secho(random_weights_warning(model), fg="yellow", err=True)
    ds = load_dataset_arg(dataset, root, images, seed, limit, normalize_answers, min_count, rare, delimiter, hf_config,
                          image_column, question_column, answer_column, label_column)
    from featcache.extract import Compute, Features, Spread, Storage

    compute = Compute(device=device, dtype=None if dtype == "auto" else dtype,
                      batch_size=int_or_auto(batch_size, "--batch-size"), workers=int_or_auto(workers, "--workers", 0),
                      compile=compile_, jpeg_draft=jpeg_draft, max_text_length=max_text_length, cuda_graphs=cuda_graphs,
                      writer=writer)
    storage = Storage(store_dtype=store_dtype, compression=None if compression == "none" else compression,
                      shard_size=shard_size, store_vision=store_vision, overwrite=overwrite, skip_bad=skip_bad)
    spread = Spread(engine=engine, ray_address=ray_address, gpus_per_worker=gpus_per_worker,
                    workers_per_node=workers_per_node, shard_index=shard_index, num_shards=num_shards,
                    merge_output=not no_merge)
    report = run(run_extract, ds, out, model=model, compute=compute, storage=storage, spread=spread,
                 features=Features(kind=features, mm_store=mm_store, mm_prompt=mm_prompt, from_vision=from_vision))
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
    rows = (f"{report.n_questions} labelled rows (image classification)" if ds.task == "classify" else
            f"{report.n_questions} questions ({report.n_texts} distinct texts)")
    click.echo(f"wrote {out}: {report.n_images} images, {rows}; {report.images_computed} images encoded in "
               f"{report.seconds:.1f} s from start to end, model loading and writing included "
               f"({report.images_per_second:.1f} img/s; the bar's rate counts the image forward alone)"
               + (f" [resumed: {report.shards_done_before} of {report.shards} shards were done]"
                  if report.shards_done_before else ""))
    if report.cuda_graphs.startswith("off"):
        click.secho(f"note: --cuda-graphs {report.cuda_graphs}; the image forward ran eagerly", fg="yellow", err=True)
    if report.n_pairs:
        click.echo(f"question-conditioned ({mm_store}): {report.n_pairs} distinct (image, question) pairs in /pairs, "
                   f"views mm{' and mm_pooled' if mm_store == 'full' else '_pooled'}")
    if report.truncated_questions:
        click.secho(f"warning: {report.truncated_questions} question(s) were longer than {max_text_length} tokens "
                    f"and were cut (flagged in /questions/truncated), e.g. {report.truncated_examples}; raise "
                    f"--max-text-length to keep them whole", fg="yellow", err=True)
    if report.failed_images or report.failed_questions:
        click.secho(f"failed: {len(report.failed_images)} images, {len(report.failed_questions)} questions "
                    f"(reasons are in /images/error and /questions/error)", fg="yellow")


@click.command()
@click.argument("parts", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="The cache file (default: PARTS without .parts).")
@click.option("--compression", type=click.Choice(["none", "lzf", "gzip"]), default="none", show_default=True)
def merge(parts, out, compression) -> None:
    """Write the single-file cache from a parts folder whose shards are all done (after --shard-index runs)."""
    from featcache.extract import merge_parts

    report = run(merge_parts, parts, out, None if compression == "none" else compression)
    click.echo(f"wrote {report.path}: {report.n_images} images from {report.shards} shards, {report.n_questions} "
               f"questions")


@click.command()
@click.argument("dataset")
@click.option("--root", type=click.Path(file_okay=False), help="Dataset folder (DAQUAR).")
@click.option("--images", type=click.Path(file_okay=False), help="Folder that relative image paths resolve against.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default="runs/stats", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the PNG plots.")
def stats(dataset, root, images, seed, out) -> None:
    """Counts per split and class, and class-frequency plots (before and after balancing)."""
    from featcache.datasets.stats import dataset_stats

    text, plots = run(dataset_stats, dataset, out, root=root, images=images, seed=seed)
    click.echo(text)
    click.echo("\nplots: " + ", ".join(str(p) for p in plots))


@click.command()
@click.argument("cache", type=click.Path(exists=True))
def info(cache) -> None:
    """Print a cache's metadata, counts and sizes."""
    from featcache.cache import info_text

    click.echo(run(info_text, cache))


@click.command()
@click.argument("cache", type=click.Path(exists=True))
def verify(cache) -> None:
    """Read every byte of a cache, checking the per-chunk checksums; exit 1 if anything is damaged."""
    from featcache.cache import verify as run_verify

    problems = run(run_verify, cache)
    if problems:
        raise click.ClickException(f"{cache} is damaged:\n  " + "\n  ".join(problems)
                                   + "\nCopy it again, or re-create it with `featcache extract ... --overwrite`.")
    click.echo(f"{cache}: every dataset read back and its checksums matched")
