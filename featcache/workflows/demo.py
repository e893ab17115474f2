"""`make demo`: extract Easy-VQA -> sweep heads -> report and plots, as a new user would run them."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelLoadError
from ..models.names import TINY_RANDOM, random_weights_warning

HUB_HELP = ("The demo needs BLIP-2 weights. Two ways on:\n"
            "  make demo MODEL=/path/to/checkpoint   # a folder saved with save_pretrained / `hf download`\n"
            "  make demo MODEL=tiny-random           # a tiny RANDOM model: runs the whole pipeline, accuracy means nothing\n"
            "  make demo MODEL=tiny-random-opt       # a tiny RANDOM generative model: zero-shot + heads in one report")


def run_demo(model: str, out: str | Path, limit: int | None = None, echo=print) -> dict:
    from heads.grids import DEFAULT_HEADS
    from heads.plots import plot_umap
    from heads.sweep import sweep_to_folder

    from ..cache import open_cache
    from ..cache.views import default_views
    from ..datasets import load_dataset
    from ..extract import extract
    from ..models.backbone import load_backbone
    from ..models.generative import is_generative_checkpoint

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if model.startswith(TINY_RANDOM):
        echo(random_weights_warning(model))
    try:
        backbone = load_backbone(model)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{exc}\n\n{HUB_HELP}") from None
    ds = load_dataset("easy-vqa", limit=limit)
    cache = out / f"easy-vqa-{backbone.fingerprint}.h5"  # one cache per model: a rerun reuses it
    echo(f"[1/3] extracting {len(ds.questions)} questions / {len(ds.images())} images with {backbone.model_id} "
         f"on {backbone.device} -> {cache}")
    extract(ds, cache, model=backbone)
    zeroshot_rows = []
    if is_generative_checkpoint(model):  # no text path: heads see the image only; the language model answers
        from heads.evaluate import all_labels, prediction_metrics

        from ..generative.report import zeroshot_row
        from ..generative.zeroshot import zeroshot

        for method in ("rank", "generate"):
            echo(f"[2/3] zero-shot {method} with {model}'s language model, from the cache")
            z = zeroshot(cache, model, method, split="test")
            zeroshot_rows.append(zeroshot_row(z, prediction_metrics(z.y, z.pred, all_labels(z.y, z.vocabulary),
                                                                    z.seconds)))
    with open_cache(cache) as c:
        views = default_views(c)  # pooled and itc; a generative checkpoint's cache has the image view only
    if (out / "report").exists():  # a second demo (another model?) keeps the first one's report, once
        import shutil

        shutil.rmtree(out / "report.previous", ignore_errors=True)
        (out / "report").rename(out / "report.previous")
        echo(f"the previous demo's report is now in {out / 'report.previous'}")
    echo(f"[2/3] sweeping heads x views {views} on the cache (CPU)")
    from .thumbnails import thumbnailer

    with open_cache(cache) as c:
        thumbnails, _ = thumbnailer(dict(c.attrs))  # the easy-vqa package's images, in the page's gallery
    rep = sweep_to_folder(cache, out / "report", "featcache demo: Easy-VQA", heads=list(DEFAULT_HEADS),
                          views=views, grid="small", extra_rows=zeroshot_rows, thumbnails=thumbnails, umap=1500)
    result, files, best = rep.result, rep.files, rep.best
    echo("[3/3] UMAP of the best head's representation")
    umap_png = plot_umap(best, out / "report" / "umap.png", cache=cache)
    return {"cache": cache, "report": files["report"], "html": files["html"], "confusion": files["confusion"], "umap": umap_png,
            "best": best, "rows": sorted(result.rows + zeroshot_rows, key=lambda r: -r["accuracy"]),
            "random_weights": model.startswith(TINY_RANDOM)}
