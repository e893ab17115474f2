"""Benchmark scoring exactly as the field scores it, in pure Python (no torch, no cache): a report, a sweep and
`featcache score` all call these, so a figure printed anywhere equals the official script's.

    vqa.py     VQAv2 / OK-VQA accuracy: the official evaluator (GT-Vision-Lab/VQA), its answer
               normalisation and quirks, per question, per answer type and per question type; soft scores
               and the answer vocabulary rule built on it
    vizwiz.py  VizWiz-VQA: the VizWiz evaluation's accuracy (its own normalisation rules) and the average
               precision / F1 of "unanswerable"
    gqa.py     GQA: the official eval.py's accuracy, binary / open, per structural and semantic type
    aokvqa.py  A-OKVQA: allenai/aokvqa's multiple-choice and direct-answer accuracy
    files.py   reading the benchmarks' JSON files, with messages that name the file
"""

from .vqa import (evaluate_vqa, normalize_answer, question_accuracy, score_vqa_files, soft_scores, vqa_accuracy_of,
                  vqa_vocabulary)

__all__ = ["evaluate_vqa", "normalize_answer", "question_accuracy", "score_vqa_files", "soft_scores", "vqa_accuracy_of",
           "vqa_vocabulary"]
