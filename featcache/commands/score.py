"""`featcache score`: a benchmark's results file scored by the benchmark's own rules (featcache.scoring)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import run


def register(main: click.Group) -> None:
    main.add_command(score)


@click.group()
def score() -> None:
    """Score a results file as the benchmark's official script does."""


@score.command("vqa")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--annotations", required=True, type=click.Path(dir_okay=False),
              help="The split's annotation file, e.g. v2_mscoco_val2014_annotations.json (OK-VQA's and VizWiz's "
                   "VQA-format files too).")
@click.option("--questions", type=click.Path(dir_okay=False),
              help="Its question file, e.g. v2_OpenEnded_mscoco_val2014_questions.json: checked to match.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the evaluator's fields (accuracy, evalQA, evalQuesType, evalAnsType) as JSON.")
def score_vqa(results, annotations, questions, out) -> None:
    """VQA accuracy of RESULTS ([{"question_id", "answer"}]) exactly as the official VQA evaluator computes it:
    overall, per answer type and per question type, 0-100, two decimals."""
    from featcache.scoring.vqa import score_vqa_files

    scores = run(score_vqa_files, results, annotations, questions)
    acc = scores["accuracy"]
    click.echo(f"Overall Accuracy is: {acc['overall']:.2f}")
    click.echo("Per Answer Type Accuracy is the following:")
    for kind, value in sorted(acc["perAnswerType"].items()):
        click.echo(f"  {kind} : {value:.2f}")
    click.echo(f"({len(acc['perQuestionType'])} question types: see --out)" if not out else "")
    if scores["empty_predictions"]:
        click.secho(f"warning: {scores['empty_predictions']} predictions normalise to nothing (scored 0)",
                    fg="yellow", err=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
        click.echo(f"scores: {out}")
