"""`featcache` commands of the CPU side: sweep, fit, evaluate, predict, plot umap, convert."""

from __future__ import annotations

import click

from .common import TRUST_PICKLE, delimiter_arg, run


def register(main: click.Group) -> None:
    for command in (sweep, fit, evaluate, predict, plot, convert):
        main.add_command(command)


MIN_ANSWER_COUNT = click.option(
    "--min-answer-count", type=click.IntRange(min=1),
    help="On a benchmark cache: the answer vocabulary is the answers seen this often in the training split "
         "[default: the benchmark's rule: 9 (normalised) for VQAv2 / OK-VQA, 1 for GQA and A-OKVQA]; training "
         "questions outside it are left out, none is in evaluation.")


def report_page_options(command):
    """--umap, --images-from, --images-root: what report.html draws beyond the tables."""
    command = click.option("--images-root", type=click.Path(exists=True, file_okay=False),
                           help="--images-from: the dataset's folder (DAQUAR, the benchmarks).")(command)
    command = click.option("--images-from", help="Where report.html's gallery reads the images (a dataset name, "
                           "folder:, wds: or a manifest) [default: the dataset the cache was extracted from, where it "
                           "can be opened here; else the gallery shows image keys].")(command)
    return click.option("--umap", "umap_points", default=0, show_default=True, type=click.IntRange(min=0),
                        help="Points in report.html's UMAP of the features (e.g. 1500; 0: none; ~20 s).")(command)


def report_thumbnails(cache_path, images_from, images_root):
    from featcache import open_cache
    from featcache.workflows.thumbnails import thumbnailer

    with run(open_cache, cache_path) as c:
        attrs = dict(c.attrs)
    thumbnails, note = thumbnailer(attrs, images_from, images_root)
    if note:
        click.echo(note, err=True)
    return thumbnails


@click.command()
@click.argument("cache", type=click.Path(exists=True))
@click.option("--train-split", default="train", show_default=True)
@click.option("--eval-split", default="test", show_default=True)
@click.option("--heads", "head_list", default="lr,mlp,lgbm,knn,attnpool", show_default=True,
              help="Comma-separated: lr, mlp, lgbm, knn (weighted k-nearest neighbours), attnpool (attention-pooling "
                   "probe over the query tokens: fitted on the token views itc, full, image_proj, mm only).")
@click.option("--views", default="auto", show_default=True, help="Comma-separated: itc, pooled, full, sim, image, "
              "image_proj; auto: pooled,itc on a cache with questions, image,image_proj on an image classification one.")
@click.option("--grid", default="small", show_default=True, help="small, default, probe (the linear probe: lr over "
              "C = 1e-6..1e6), or a JSON file {head: [params]}.")
@click.option("--validation-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1), help="Parallel fits (joblib).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report folder (written as OUT.partial/ and renamed when complete; a rerun resumes it).")
@click.option("--stream", is_flag=True, help="Leave the images on disk and read them block by block: for caches "
              "larger than memory (same results as in memory).")
@MIN_ANSWER_COUNT
@click.option("--vocabulary-splits", help="On a benchmark cache: count the vocabulary over these splits, e.g. "
              "train,val (VQAv2's 3,129 answers, for a test-dev submission); warns when it holds the evaluated split.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: each view x head group of candidates runs as a Ray task (the cache on storage every node "
                   "mounts); the report is the one a local sweep writes.")
@click.option("--ray-address", help="A running Ray cluster to join (default: start one on this machine).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="For a cache with one split (an image folder without train/ and test/): evaluate on this seeded, "
                   "image-disjoint, class-stratified fraction of it (give the same --train-split and --eval-split).")
@click.option("--overwrite", is_flag=True, help="Replace an existing report folder at --out.")
@report_page_options
def sweep(cache, train_split, eval_split, head_list, views, grid, validation_fraction, jobs, seed, out,
          stream, min_answer_count, vocabulary_splits, engine, ray_address, test_fraction, overwrite, umap_points,
          images_from, images_root) -> None:
    """Train every head x view, choose and rank on validation, and write a report with the best head."""
    from heads.sweep import sweep_to_folder

    runner = None
    if engine == "ray":
        from featcache.workflows.ray_sweep import ray_runner

        runner = run(ray_runner, ray_address)
    thumbnails = report_thumbnails(cache, images_from, images_root)
    rep = run(sweep_to_folder, cache, out, train_split=train_split, eval_split=eval_split, runner=runner,
              thumbnails=thumbnails, umap=umap_points, overwrite=overwrite, test_fraction=test_fraction,
               heads=head_list.split(","), views=None if views == "auto" else views.split(","), grid=grid,
               validation_fraction=validation_fraction, n_jobs=jobs, seed=seed, stream=stream,
               min_answer_count=min_answer_count,
               vocabulary_splits=vocabulary_splits.split(",") if vocabulary_splits else None)
    result, files, best = rep.result, rep.files, rep.best
    if rep.note != "fresh":
        click.echo(f"sweep started {rep.note}")
    if result.warning:
        click.secho(f"warning: {result.warning}", fg="yellow", bold=True, err=True)
    if result.best.random_weights:
        click.secho("RANDOM WEIGHTS (tiny-random): the accuracies below mean nothing.", fg="red", bold=True)
    if result.benchmark:
        from heads.benchmarks import FIGURE_NAMES

        b = result.benchmark
        click.echo(f"answer vocabulary: {b['vocabulary']} answers seen >= {b['min_answer_count']} times in "
                   f"{'+'.join(b['vocabulary_splits'])}; best reachable {FIGURE_NAMES[b['metric']]} " +
                   ", ".join(f"{s} {v:.2f}" for s, v in b["coverage"].items()))
        if b.get("warning"):
            click.secho(f"warning: {b['warning']}", fg="yellow", err=True)
    for r in result.rows:
        vqa = f"{FIGURE_NAMES[r['benchmark']['metric']]} {r['benchmark']['primary']:.2f}  " if r.get("benchmark") else ""
        click.echo(f"{r['head']:>8} {r['view']:<10} {vqa}acc {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
                   f"fit {r['fit_s']:.1f}s  {r['params']}")
    click.echo(f"report: {files['html']}  best head: {best}")


@click.command()
@click.argument("cache", type=click.Path(exists=True))
@click.option("--head", "kind", default="lr", show_default=True, help="lr, mlp, lgbm, knn or attnpool.")
@click.option("--view", default="pooled", show_default=True)
@click.option("--param", "params", multiple=True, help="Head parameter as name=JSON value, e.g. C=0.1 (repeatable); "
              "preset=reference|compact for the mlp.")
@click.option("--train-split", default="train", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to save the head to (JSON + safetensors).")
@click.option("--stream", is_flag=True, help="Leave the images on disk and read them block by block: for caches "
              "larger than memory (same results as in memory).")
@MIN_ANSWER_COUNT
def fit(cache, kind, view, params, train_split, out, stream, min_answer_count) -> None:
    """Train one head on one view of a cache."""
    from heads.sweep import fit_head

    parsed = parse_params(params)
    trained = run(fit_head, cache, kind, view, parsed, train_split, stream, min_answer_count)
    run(trained.save, out)
    click.echo(f"saved {kind} on view {view} ({len(trained.head.classes_)} classes) to {out}")


@click.command()
@click.argument("head", type=click.Path(exists=True))
@click.argument("cache", type=click.Path(exists=True))
@click.option("--split", default="test", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: next to the head).")
@TRUST_PICKLE
@click.option("--stream", is_flag=True, help="Leave the images on disk and read them block by block: for caches "
              "larger than memory (same results as in memory).")
@report_page_options
def evaluate(head, cache, split, out, trust_pickle, stream, umap_points, images_from, images_root) -> None:
    """Metrics, per-class table and confusion matrix of a saved head on a cache split."""
    from pathlib import Path

    from featcache import open_cache
    from heads.report import write_report
    from heads.sweep import evaluate_head
    from heads.trained import TrainedHead

    trained = run(TrainedHead.load, head, trust_pickle)
    metrics = run(evaluate_head, trained, cache, split, stream, keep_outputs=True)
    outputs = metrics.pop("outputs", None)  # (the predictions made once, for the metrics and the report)
    with run(open_cache, cache) as c:
        attrs = dict(c.attrs)
    out = out or str(Path(head).with_suffix("")).rstrip("/") + f"_{split}"
    if metrics.get("unscored"):  # a benchmark split without answers (test-dev): the results file only
        import json

        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "submission.json").write_text(json.dumps(metrics["submission"]) + "\n")
        click.echo(f"{split} has no answers in the cache (predicted, not scored): {metrics['n']} predictions in "
                   f"{Path(out) / 'submission.json'}, the benchmark's results format for its evaluation server")
        return
    from heads.predictions import head_records

    with run(open_cache, cache) as c:
        samples, umap = run(head_records, trained, c, split, umap_points, outputs=outputs)
    files = write_report(out, metrics, attrs, f"{Path(head).name} on {split} of {cache}", samples=samples,
                         thumbnails=report_thumbnails(cache, images_from, images_root), umap=umap)
    if trained.random_weights:
        click.secho("RANDOM WEIGHTS (tiny-random): this accuracy means nothing.", fg="red", bold=True)
    if "benchmark" in metrics:
        from heads.benchmarks import FIGURE_NAMES, SCORERS, breakdown

        b = metrics["benchmark"]
        click.echo(f"{FIGURE_NAMES[b['metric']]} {b['primary']:.2f}  ({breakdown(b)}; {SCORERS[b['metric']]})  "
                   f"results file: {files['submission']}")
    click.echo(f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
               f"balanced {metrics['balanced_accuracy']:.4f}  (n={metrics['n']})\nreport: {files['html']}")


@click.command()
@click.option("--head", "head_path", required=True, type=click.Path(exists=True),
              help="A head folder (fit, sweep) or a fine-tune checkpoint folder (finetune's best/).")
@click.option("--model", help="Backbone (default: the one the head's cache was made with).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="One image...")
@click.option("--question", help="...and its question (not for an image classification head).")
@click.option("--pairs", type=click.Path(exists=True, dir_okay=False), help="Or a CSV/JSONL with columns image, question (image alone for an image classification head).")
@click.option("--delimiter", help="--pairs CSV delimiter (default: sniffed).")
@click.option("--dataset", help="Or every row of a dataset (a name, folder:, hf:, wds: or a manifest), e.g. the "
              "images of a tar set; with --split, --limit, --images.")
@click.option("--split", help="--dataset: only this split.")
@click.option("--limit", type=click.IntRange(min=1), help="--dataset: only the first N rows.")
@click.option("--images", type=click.Path(file_okay=False), help="--dataset: where relative image paths resolve.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the predictions to this CSV (image, question, "
              "answer, probability, top_k, and the dataset's own answer) instead of printing them.")
@click.option("--submission", type=click.Path(dir_okay=False), help="--dataset a benchmark (vqav2, okvqa, gqa, "
              "aokvqa): also write the predictions in its results format (JSON) for its evaluator or server.")
@click.option("--root", type=click.Path(file_okay=False), help="--dataset: its folder (DAQUAR, the benchmarks).")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--skip-bad", is_flag=True, help="Answer the other rows when an image is missing or unreadable; those "
              "rows get no answer and their error (an `error` column in --out).")
@click.option("--device", default="auto", show_default=True)
@TRUST_PICKLE
def predict(head_path, model, image, question, pairs, delimiter, dataset, split, limit, images, submission, root, out,
            top_k, skip_bad, device, trust_pickle) -> None:
    """Answer new (image, question) pairs with a saved head; runs the backbone, no cache needed."""
    from featcache.datasets import load_dataset
    from featcache.datasets.pairs import read_pairs, write_predictions
    from featcache.workflows.predict import predict_saved

    ds, reference = None, None
    if dataset:
        ds = run(load_dataset, dataset, images=images, root=root)
        rows = [q for q in ds.questions if split is None or q.split == split][:limit]
        if not rows:
            raise click.UsageError(f"{dataset} has no rows in split {split!r}")
        todo, reference = [(q.image, q.text) for q in rows], [q.answer for q in rows]
    elif pairs:
        todo = run(read_pairs, pairs, delimiter_arg(delimiter))
    elif image:
        todo = [(image, question or "")]  # an image classification head needs no question
    else:
        raise click.UsageError("give --image (and --question, unless the head classifies images), --pairs CSV, "
                               "or --dataset")
    if submission and (ds is None or not any(q.qid for q in rows)):
        raise click.UsageError("--submission needs --dataset a benchmark whose questions have ids (vqav2, okvqa, gqa, "
                               "aokvqa, or a hub table with question_id)")
    every = submission and ds.metric == "aokvqa"  # multiple choice needs every answer's probability
    results, random_weights = run(predict_saved, head_path, todo, model=model, device=device,
                                   top_k=10**9 if every else top_k, trust_pickle=trust_pickle, dataset=ds,
                                   skip_bad=skip_bad)
    failed = [r for r in results if "error" in r]
    if failed:
        click.secho(f"{len(failed)} of {len(results)} rows not answered (unreadable images), e.g. {failed[0]['error']}",
                    fg="yellow", err=True)
    if random_weights:
        click.secho("RANDOM WEIGHTS (tiny-random): these answers mean nothing.", fg="red", bold=True)
    if submission:
        import json
        from pathlib import Path

        from featcache.workflows.predict import results_file

        Path(submission).write_text(json.dumps(results_file(results, rows, ds.metric or "vqa")) + "\n")
        click.echo(f"wrote {len(results)} predictions in the {ds.metric or 'vqa'} results format to {submission}")
        results = [{**r, "top_k": r["top_k"][:top_k]} for r in results]
    if out:
        click.echo(f"wrote {len(results)} predictions to {run(write_predictions, out, results, reference)}")
        return
    for r in results:
        if "error" in r:
            click.echo(f"{r['image']} | {r['question']} -> (not answered: {r['error']})")
            continue
        alts = ", ".join(f"{a} {p:.2f}" for a, p in r["top_k"])
        click.echo(f"{r['image']} | {r['question']} -> {r['answer']} ({r['probability']:.2f})   top-{top_k}: {alts}")


@click.group()
def plot() -> None:
    """Plots of caches and heads."""


@plot.command("umap")
@click.argument("source", type=click.Path(exists=True))
@click.option("--cache", type=click.Path(exists=True), help="Features to embed (when SOURCE is a head).")
@click.option("--view", default="pooled", show_default=True, help="View to plot (when SOURCE is a cache).")
@click.option("--split", default="test", show_default=True)
@click.option("--per-class", default=300, show_default=True, type=click.IntRange(min=1), help="Class-balanced subsample size.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file.")
@TRUST_PICKLE
def plot_umap_cmd(source, cache, view, split, per_class, seed, out, trust_pickle) -> None:
    """2-D UMAP of a cache view, or of a head's learned representation (SOURCE a head folder), by class."""
    from heads.plots import plot_umap

    path = run(plot_umap, source, out, cache=cache, view=view, split=split, per_class=per_class, seed=seed,
                trust_pickle=trust_pickle)
    click.echo(f"wrote {path}")


@click.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the safe copy.")
@TRUST_PICKLE
def convert(source, out, trust_pickle) -> None:
    """Re-save a pickle-based head or fine-tune checkpoint (the first file format) as a safe JSON + safetensors folder."""
    from featcache.workflows.convert import convert_legacy

    click.echo(f"wrote {run(convert_legacy, source, out, trust_pickle)}")


def parse_params(params) -> dict:
    """--param NAME=JSON values (a list becomes a tuple, as hidden_sizes wants)."""
    import json

    parsed = {}
    for p in params:
        name, eq, value = p.partition("=")
        if not eq or not name.strip():
            raise click.BadParameter(f"{p!r} is not NAME=VALUE, e.g. C=0.1 or hidden_sizes=[512]", param_hint="--param")
        name = name.strip()
        try:
            parsed[name] = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            parsed[name] = value
        if isinstance(parsed[name], list):
            parsed[name] = tuple(parsed[name])
    return parsed
