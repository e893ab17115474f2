"""`featcache` commands of the generative BLIP-2: zeroshot, caption, and finetune --generative (from cli.finetune)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import run


def register(main: click.Group) -> None:
    main.add_command(zeroshot_cmd)
    main.add_command(caption_cmd)


@click.command("zeroshot")
@click.argument("cache", required=False, type=click.Path(exists=True))
@click.option("--model", required=True, help="rank/generate: the generative checkpoint that made CACHE (e.g. "
              "Salesforce/blip2-opt-2.7b, or tiny-random-opt / tiny-random-t5: RANDOM weights); itc: the "
              "retrieval checkpoint that made it.")
@click.option("--method", type=click.Choice(["rank", "generate", "itc", "itm"]), default="rank", show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option("--prompt", help="rank/generate prompt with {} for the question [default: 'Question: {} Answer:'; "
              "InstructBLIP: the cache's --mm-prompt, the text its Q-Former read].")
@click.option("--length-norm", is_flag=True, help="rank: divide each answer's log-likelihood by its tokens.")
@click.option("--max-new-tokens", default=4, show_default=True, type=click.IntRange(min=1), help="generate: tokens to generate.")
@click.option("--num-beams", default=1, show_default=True, type=click.IntRange(min=1), help="generate: beam search width (1: greedy).")
@click.option("--length-penalty", default=1.0, show_default=True, help="generate: beam search length penalty.")
@click.option("--min-length", default=0, show_default=True, type=click.IntRange(min=0), help="generate: generate()'s min_length.")
@click.option("--preset", type=click.Choice(["blip2"]), help="The published zero-shot setting, recorded in the report: "
              "blip2 = LAVIS's BLIP-2 VQA evaluation (generate, 'Question: {} Short answer:', 5 beams, 10 new tokens, "
              "min_length 1, length penalty 0 for OPT / -1 for Flan-T5); overrides --method and the decoding options.")
@click.option("--map-model", help="generate: a retrieval checkpoint whose ITC text embedding maps answers that "
              "match no vocabulary answer to the nearest one (reported apart as 'mapped').")
@click.option("--template", type=click.Choice(["answer", "picture", "photo", "statement", "ensemble"]),
              help="itc/itm: the text each answer is embedded as [default: picture for itc (photo on an image "
              "classification cache), statement for itm]; ensemble: CLIP's 7 ImageNet templates averaged (itc).")
@click.option("--templates", "templates_file", type=click.Path(exists=True, dir_okay=False),
              help="itc: templates from a file, one per line with {} for the class name, averaged per class.")
@click.option("--dataset", help="Without CACHE: extract a cache of this dataset with --model first (see "
              "--save-cache). itm, when CACHE holds no ViT states (--store-vision): the dataset CACHE was extracted "
              "from, whose images are encoded again.")
@click.option("--save-cache", type=click.Path(dir_okay=False), help="Without CACHE: keep the extracted cache here "
              "(default: a temporary file, deleted after the report).")
@click.option("--root", type=click.Path(file_okay=False), help="With --dataset: its folder (DAQUAR).")
@click.option("--images", type=click.Path(file_okay=False), help="With --dataset: where relative image paths resolve.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions of the split.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report folder (as `sweep` writes).")
def zeroshot_cmd(cache, model, method, split, prompt, length_norm, max_new_tokens, num_beams, length_penalty,
                 min_length, preset, map_model, template, templates_file, dataset, save_cache, root, images, limit,
                 device, out) -> None:
    """Answer the questions of CACHE (or of --dataset, extracted first) without training, over the answer
    vocabulary, and report as `sweep` does."""
    import tempfile

    from featcache.datasets import load_dataset
    from featcache.extract import Compute, Features, Storage, extract
    from featcache.generative.finetune import base_model_of
    from featcache.generative.report import write_zeroshot_report
    from featcache.generative.zeroshot import read_templates, zeroshot

    if not cache and not dataset:
        raise click.UsageError("give a CACHE, or --dataset to extract one first")
    from featcache.outputs import check_output_folder

    run(check_output_folder, Path(out).parent if str(Path(out).parent) else Path("."), "--out's folder")
    if Path(out).exists() and not Path(out).is_dir():
        raise click.UsageError(f"--out {out} is a file; give a report folder")
    if templates_file:
        if template:
            raise click.UsageError("give --template or --templates, not both")
        template = run(read_templates, templates_file)
    ds = run(load_dataset, dataset, images=images, root=root) if dataset else None
    with tempfile.TemporaryDirectory(prefix="featcache-zeroshot-") as tmp:
        if not cache:
            cache = save_cache or str(Path(tmp) / "cache.h5")
            click.echo(f"extracting {dataset} with {base_model_of(model)} into {cache} first")
            conditioned = {}
            from featcache.models.instructblip import is_instructblip
            from featcache.models.names import resolve_model

            if is_instructblip(resolve_model(base_model_of(model))):  # its Q-Former reads the prompt it answers
                from featcache.generative.presets import preset as published  # with
                from featcache.generative.rank import PAPER_PROMPT

                conditioned = dict(features=Features(kind="multimodal", mm_prompt=prompt or (
                    published(preset)["prompt"] if preset else PAPER_PROMPT)))
            run(extract, ds, cache, model=base_model_of(model), compute=Compute(device=device),
                storage=Storage(store_vision=method == "itm"), **conditioned)
        result = run(zeroshot, cache, model, method=method, split=split, prompt=prompt, length_norm=length_norm,
                     max_new_tokens=max_new_tokens, map_model=map_model, template=template, device=device,
                     limit=limit, dataset=ds, num_beams=num_beams, length_penalty=length_penalty,
                     min_length=min_length, preset=preset)
        files, row = run(write_zeroshot_report, result, cache, out)
    rows = "images" if result.settings.get("task") == "classify" else "questions"
    if base_model_of(model).startswith("tiny-random"):
        click.secho(f"RANDOM WEIGHTS ({base_model_of(model)}): this accuracy means nothing.", fg="red", bold=True)
    counts = "".join(f"  {k} {v}" for k, v in result.counts.items())
    if row.get("benchmark"):
        from heads.benchmarks import FIGURE_NAMES, breakdown

        b = row["benchmark"]
        click.echo(f"{FIGURE_NAMES[b['metric']]} {b['primary']:.2f}  ({breakdown(b)})  results file: "
                   f"{files['submission']}")
    if result.settings.get("prompt"):
        decoding = {k: result.settings[k] for k in ("num_beams", "max_new_tokens", "min_length", "length_penalty")
                    if k in result.settings}
        click.echo(f"prompt template: {result.settings['prompt']!r} (the question fills {{}}); decoding {decoding}")
    click.echo(f"zeroshot-{result.method}  acc {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}  "
               f"({row['questions']} {rows}, {result.images_per_s:.1f} images/s){counts}\nreport: {files['report']}")


_SHARED = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "l1": "l1", "lora_rank": "lora_rank",
           "patience": "patience", "amp": "amp", "seed": "seed", "eval_split": "eval_split"}
_CLASSIFIER_ONLY = ("dataset", "view", "grad_accum", "lora_vision", "hidden", "batch_norm", "dropout",
                    "gradient_checkpointing", "init_head", "trust_pickle")


def finetune_generative_cmd(ctx: click.Context, recipe: str, prompt: str | None, from_cache: str | None, model: str,
                            out: str, device: str, overwrite: bool) -> None:
    """The recipe's settings, overridden by the options given on the command line (not their defaults)."""
    import json
    from dataclasses import replace

    from featcache.generative.finetune import RECIPES, finetune_generative

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")

    if not from_cache:
        raise click.UsageError("--generative trains from a cache: give --from-cache CACHE, made by `featcache "
                               "extract --model` with the same generative checkpoint")
    wrong = [f"--{n.replace('_', '-')}" for n in _CLASSIFIER_ONLY if given(n)]
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)} belong to the classifier fine-tune, not --generative")
    if not given("model"):
        raise click.UsageError("--generative needs --model: the generative checkpoint that made the cache "
                               "(e.g. Salesforce/blip2-opt-2.7b, or tiny-random-opt: RANDOM weights)")
    overrides = {field: ctx.params[name] for name, field in _SHARED.items() if given(name)}
    if "lora_rank" in overrides and recipe == "lora-vqa-report":
        overrides["lora_alpha"] = 2 * overrides["lora_rank"]  # the report's alpha = 2 x rank
    if prompt:
        overrides["prompt"] = prompt
    if ctx.params["lora_qformer"]:
        overrides["lora_qformer"] = True
    config = replace(RECIPES[recipe], **overrides)
    rep = run(finetune_generative, from_cache, out, model, config, device=device, overwrite=overwrite)
    summary = {"recipe": recipe, "config": config.identity() | {"epochs": config.epochs},
               "best_validation_rank_accuracy": rep.best_validation_accuracy, "test_rank_accuracy": rep.test_accuracy,
               "epochs_run": rep.epochs_run, "resumed_from_epoch": rep.resumed_from_epoch,
               "samples_per_second": rep.samples_per_second, "lora_targets": rep.targets,
               "evaluated_split": config.eval_split,
               **({"test_benchmark": rep.test_benchmark} if rep.test_benchmark else {})}
    (rep.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if rep.submission is not None:
        (rep.out / "submission.json").write_text(json.dumps(rep.submission) + "\n", encoding="utf-8")
        click.echo(f"results file ({config.eval_split}, the benchmark's format): {rep.out / 'submission.json'}")
    if model.startswith("tiny-random"):
        click.secho(f"RANDOM WEIGHTS ({model}): these accuracies mean nothing.", fg="red", bold=True)
    click.echo(json.dumps(summary, indent=1))
    click.echo(f"best adapters: {rep.out / 'best'}  (featcache zeroshot CACHE --model {rep.out / 'best'} "
               f"--method rank|generate --out REPORT)")


@click.command("caption")
@click.argument("cache", required=False, type=click.Path(exists=True))
@click.option("--dataset", help="Caption a dataset's images (the ViT runs) instead of a CACHE's (it does not).")
@click.option("--root", type=click.Path(file_okay=False), help="With --dataset: its folder (DAQUAR).")
@click.option("--images", type=click.Path(file_okay=False), help="With --dataset: where relative image paths resolve.")
@click.option("--model", required=True, help="A generative BLIP-2 (e.g. Salesforce/blip2-opt-2.7b; tiny-random-opt: "
              "RANDOM weights), or a `finetune --generative` best/ folder; with CACHE, the checkpoint that made it.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Captions file, .csv or .jsonl.")
@click.option("--prompt", default="", help="Text the caption continues (e.g. 'a photo of'); not part of the output.")
@click.option("--num-beams", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--max-new-tokens", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--min-new-tokens", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--length-penalty", default=1.0, show_default=True)
@click.option("--repetition-penalty", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--sample", is_flag=True, help="Nucleus sampling (with --top-p, --temperature, --seed) instead of beams.")
@click.option("--top-p", default=0.9, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--seed", default=0, show_default=True)
@click.option("--references", type=click.Path(exists=True, dir_okay=False),
              help="Reference captions (CSV image,caption or JSONL; several per image): score BLEU, METEOR, ROUGE-L, "
                   "CIDEr (and BERTScore with --bertscore-model) into OUT.metrics.json.")
@click.option("--bertscore-model", help="With --references: a BERTScore model (hub id, or a local folder).")
@click.option("--bertscore-layers", type=click.IntRange(min=1), help="Its layer to use (needed for models bert-score does not know).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True)
def caption_cmd(cache, dataset, root, images, model, out, prompt, num_beams, max_new_tokens, min_new_tokens,
                length_penalty, repetition_penalty, sample, top_p, temperature, seed, references, bertscore_model,
                bertscore_layers, limit, batch_size, device) -> None:
    """Write a caption per image of CACHE or --dataset; with --references, score them."""
    import json

    from featcache.datasets import load_dataset
    from featcache.generative.caption import CaptionSettings, caption, read_captions
    from featcache.generative.caption_metrics import caption_scores
    from featcache.generative.finetune import base_model_of

    if bool(cache) == bool(dataset):
        raise click.UsageError("give a CACHE or --dataset (not both)")
    settings = CaptionSettings(prompt=prompt, num_beams=num_beams, max_new_tokens=max_new_tokens,
                               min_new_tokens=min_new_tokens, length_penalty=length_penalty,
                               repetition_penalty=repetition_penalty, do_sample=sample, top_p=top_p,
                               temperature=temperature, seed=seed)
    ds = run(load_dataset, dataset, images=images, root=root) if dataset else None
    refs = run(read_captions, references) if references else None  # a bad file is found before the captions
    path = run(caption, model, out, cache=cache, dataset=ds, settings=settings, device=device, batch_size=batch_size,
               limit=limit)
    random_weights = base_model_of(model).startswith("tiny-random")
    click.echo(f"captions: {path}")
    result = None
    if references:
        result = run(caption_scores, {k: v[0] for k, v in read_captions(path).items()}, refs,
                     bertscore_model=bertscore_model, bertscore_layers=bertscore_layers)
        result.update(random_weights=random_weights, references=str(references))
        metrics = Path(str(path) + ".metrics.json")
        metrics.write_text(json.dumps(result, indent=1) + "\n")
        click.echo("  ".join(f"{k} {v:.4f}" for k, v in result["scores"].items()) + f"  ({result['images']} images)")
        for name, why in result["unavailable"].items():
            click.secho(f"{name}: not computed: {why}", fg="yellow", err=True)
        click.echo(f"metrics: {metrics}")
    page = _captions_page(path, cache, ds, refs, result, model, random_weights)
    click.echo(f"page: {page}")
    if random_weights:
        click.secho(f"RANDOM WEIGHTS ({base_model_of(model)}): these captions and scores mean nothing.", fg="red",
                    bold=True)


def _captions_page(path, cache, dataset, references, scores, model, random_weights):
    """OUT.html beside the captions: each image with its caption (and references, scores)."""
    import json
    from pathlib import Path

    from featcache.generative.caption import read_captions
    from featcache.workflows.thumbnails import thumbnailer, thumbnails_of
    from heads.page.render import write_captions_page

    note = ""
    if dataset is not None:
        thumbnails = thumbnails_of(dataset)
    else:
        from featcache import open_cache

        with run(open_cache, cache) as c:
            thumbnails, note = thumbnailer(dict(c.attrs))
    settings_file = Path(str(path)).with_name(Path(path).name + ".settings.json")
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {"model": model}
    captions = {k: v[0] for k, v in read_captions(path).items()}
    return write_captions_page(Path(str(path) + ".html"), f"captions by {model}", captions, references, scores,
                               settings, thumbnails, note, random_weights)


