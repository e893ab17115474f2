"""One or two examples per command, shown at the end of its --help (click's epilog) and checked against the command
line by tests/test_docs.py. Kept in one place so that every command has them and they read alike."""

from __future__ import annotations

import click

EXAMPLES: dict[str, list[str]] = {
    "extract": ["featcache extract --dataset easy-vqa --model Salesforce/blip2-itm-vit-g --out easy.h5",
                "featcache extract --dataset folder:photos/ --model tiny-random --device cpu --out photos.h5"],
    "merge": ["featcache merge easy.h5.parts"],
    "info": ["featcache info easy.h5"],
    "verify": ["featcache verify easy.h5"],
    "stats": ["featcache stats easy-vqa --out stats/"],
    "datasets": ["featcache datasets"],
    "sweep": ["featcache sweep easy.h5 --heads lr,mlp,knn,attnpool --views pooled,itc --out runs/sweep",
              "featcache sweep photos.h5 --train-split all --eval-split all --test-fraction 0.2 --out runs/photos"],
    "fit": ["featcache fit easy.h5 --head mlp --view itc --param preset=compact --out heads/mlp"],
    "evaluate": ["featcache evaluate runs/sweep/best easy.h5 --split test --out runs/eval"],
    "predict": ["featcache predict --head runs/sweep/best --image photo.jpg --question \"what color is it?\"",
                "featcache predict --head runs/sweep/best --dataset easy-vqa --split test --limit 20 --out pred.csv"],
    "plot umap": ["featcache plot umap runs/sweep/best --cache easy.h5 --out umap.png"],
    "convert": ["featcache convert old-head.joblib --out heads/converted --trust-pickle"],
    "compare": ["featcache compare runs/lr runs/knn --out runs/compare"],
    "label-issues": ["featcache label-issues photos.h5 --view image --head mlp --out runs/issues"],
    "finetune": ["featcache finetune --dataset easy-vqa --model Salesforce/blip2-itm-vit-g --out runs/ft",
                 "featcache finetune --generative --recipe lora-vqa-report --from-cache opt.h5 "
                 "--model Salesforce/blip2-opt-2.7b --out runs/lora"],
    "zeroshot": ["featcache zeroshot opt.h5 --model Salesforce/blip2-opt-2.7b --method rank --out runs/zs"],
    "caption": ["featcache caption opt.h5 --model Salesforce/blip2-opt-2.7b --out captions.csv "
                "--references refs.csv"],
    "score vqa": ["featcache score vqa results.json --annotations v2_mscoco_val2014_annotations.json"],
    "score gqa": ["featcache score gqa results.json --questions testdev_balanced_questions.json"],
    "score aokvqa": ["featcache score aokvqa predictions.json --dataset aokvqa_v1p0_val.json"],
    "score vizwiz": ["featcache score vizwiz results.json --annotations Annotations/val.json"],
    "demo": ["featcache demo --model tiny-random --out runs/demo"],
}


def attach(group: click.Group, prefix: str = "") -> None:
    """Set each command's epilog from EXAMPLES (`\\b` keeps the lines as written)."""
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            attach(command, f"{path} ")
        elif path in EXAMPLES:
            command.epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[path])
