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
    if scores.get("repeated_results"):
        click.secho(f"warning: {scores['repeated_results']} results repeat a question id; the last answer of each "
                    f"counts, as the official evaluator takes it", fg="yellow", err=True)
    if scores["empty_predictions"]:
        click.secho(f"warning: {scores['empty_predictions']} predictions normalise to nothing (scored 0)",
                    fg="yellow", err=True)
    _write(out, scores)


@score.command("gqa")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--questions", required=True, type=click.Path(dir_okay=False),
              help="The split's question file, e.g. testdev_balanced_questions.json.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the scores as JSON.")
def score_gqa(results, questions, out) -> None:
    """GQA accuracy of RESULTS ([{"questionId", "prediction"}]) as the official eval.py computes it: exact match
    over the balanced questions, binary / open, per structural and semantic type (percentages)."""
    from featcache.scoring.gqa import score_gqa_files

    scores = run(score_gqa_files, results, questions)
    click.echo(f"Binary: {scores['binary']:.2f}%\nOpen: {scores['open']:.2f}%\nAccuracy: {scores['accuracy']:.2f}% "
               f"({scores['n']} balanced questions)")
    if scores.get("unknown_ids"):
        click.secho(f"warning: {scores['unknown_ids']} predictions name question ids not in {questions} (ignored)",
                    fg="yellow", err=True)
    _write(out, scores)


@score.command("aokvqa")
@click.argument("predictions", type=click.Path(dir_okay=False))
@click.option("--dataset", "split_file", required=True, type=click.Path(dir_okay=False),
              help="The split's file, e.g. aokvqa_v1p0_val.json.")
@click.option("--strict", is_flag=True, help="Refuse missing predictions and multiple-choice answers that are not "
              "one of the question's choices (the script's strict mode) instead of scoring them 0.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the scores as JSON.")
def score_aokvqa(predictions, split_file, strict, out) -> None:
    """A-OKVQA multiple-choice and direct-answer accuracy of PREDICTIONS ({question_id: {"multiple_choice",
    "direct_answer"}}) as allenai/aokvqa's eval_predictions.py computes them."""
    from featcache.scoring.aokvqa import score_aokvqa_files

    scores = run(score_aokvqa_files, predictions, split_file, strict)
    for kind, name in (("multiple_choice", "MC"), ("direct_answer", "DA")):
        if scores[kind] is not None:
            missing = scores[f"{kind}_missing"]
            click.echo(f"{name} {scores[kind]}" + (f"  ({missing} questions without a prediction scored 0)" if missing else ""))
    if scores.get("multiple_choice_not_a_choice"):
        click.secho(f"warning: {scores['multiple_choice_not_a_choice']} multiple-choice predictions are not one of "
                    f"their question's choices (scored 0; --strict refuses them)", fg="yellow", err=True)
    if scores["unknown_ids"]:
        click.secho(f"warning: {scores['unknown_ids']} predictions name question ids not in {split_file} (ignored)",
                    fg="yellow", err=True)
    _write(out, scores)


@score.command("vizwiz")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--annotations", required=True, type=click.Path(dir_okay=False),
              help="The split's annotation file, e.g. Annotations/val.json.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the scores (with evalQA per image) as JSON.")
def score_vizwiz(results, annotations, out) -> None:
    """VizWiz-VQA accuracy of RESULTS ([{"image", "answer"[, "answerable"]}]) as the VizWiz evaluation computes it
    (overall and per answer type), and the average precision / F1 of "unanswerable" (from "answerable"
    probabilities where the results have them, else from the answers)."""
    from featcache.scoring.vizwiz import score_vizwiz_files

    scores = run(score_vizwiz_files, results, annotations)
    if "accuracy" in scores:
        acc = scores["accuracy"]
        click.echo(f"Overall Accuracy is: {acc['overall']:.2f}")
        for kind, value in sorted(acc["perAnswerType"].items()):
            click.echo(f"  {kind} : {value:.2f}")
    if "unanswerability" in scores:
        u = scores["unanswerability"]
        click.echo(f"Unanswerable: average precision {u['average_precision']:.2f}, F1 {u['f1_score']:.2f} "
                   f"(answerable probabilities from the {scores['answerable_from']})")
    if scores["unknown_images"]:
        click.secho(f"warning: {scores['unknown_images']} predictions name images not in {annotations} (ignored)",
                    fg="yellow", err=True)
    _write(out, scores)


def _write(out, scores: dict) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
        click.echo(f"scores: {out}")
