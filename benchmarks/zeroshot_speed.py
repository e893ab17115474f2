"""Zero-shot speed per question: `rank` (the prompt's keys and values computed once, all candidates in
one batch) against one `generate` call (4 new tokens) and against the naive way (one full language-model
forward of image tokens + prompt + candidate per candidate), all from cached query states.

    python benchmarks/zeroshot_speed.py --size tiny --questions 20
    python benchmarks/zeroshot_speed.py --size real --questions 3      # OPT-2.7b dimensions, ~11 GB of RAM

Targets: rank over Easy-VQA's 13 answers <= 2x one generate call, and >= 5x faster than the naive way.
`real` is a random-init Blip2ForConditionalGeneration whose language model has blip2-opt-2.7b's
dimensions (2560 x 32 layers, 50,272 tokens; the vision side is tiny: the cache stands in for it);
its tokenizer is the tiny test tokenizer, so prompts are a few tokens shorter than GPT-2's.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

from featcache.models.generative import GenerativeLM
from featcache.generative.rank import PAPER_PROMPT, _prefix, answer_tokens, generate_answers, score_answers

from _generative import random_opt  # noqa: E402  (benchmarks/, first on sys.path)
from _results import save_result  # noqa: E402

EASY_VQA_ANSWERS = ["blue", "brown", "circle", "gray", "green", "no", "rectangle", "red", "teal", "triangle",
                    "yellow", "yes", "black"]
QUESTIONS = ["what color is the shape?", "is there a red shape in the image?", "what shape is in the image?",
             "does the image contain a circle?", "is the triangle blue?"]


def build(size: str, device: str) -> GenerativeLM:
    return random_opt(size, device)


@torch.inference_mode()
def naive(lm: GenerativeLM, tokens: torch.Tensor, prompts: list[str], answers: list[str]) -> np.ndarray:
    cands = answer_tokens(lm, answers)
    out = np.empty((len(prompts), len(cands)))
    for i, prompt in enumerate(prompts):
        prefix = _prefix(lm, tokens[i], prompt)
        for j, ids in enumerate(cands):
            embeds = torch.cat([prefix, lm.embed(torch.tensor([ids]))], 1)
            logits = lm.lm(inputs_embeds=embeds).logits[0, prefix.shape[1] - 1:-1]
            out[i, j] = float(torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)), torch.tensor(ids)].sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    t = time.perf_counter()
    lm = build(args.size, args.device)
    build_s = time.perf_counter() - t
    n = args.questions
    prompts = [PAPER_PROMPT.format(QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]
    query = torch.randn(n, 32, lm.model.config.qformer_config.hidden_size, generator=torch.Generator().manual_seed(0))
    tokens = lm.project(query)
    score_answers(lm, tokens[:1], prompts[:1], EASY_VQA_ANSWERS)  # warm-up
    generate_answers(lm, tokens[:1], prompts[:1])

    def timed(fn):
        start = time.perf_counter()
        value = fn()
        return value, (time.perf_counter() - start) / n

    ranked, rank_s = timed(lambda: score_answers(lm, tokens, prompts, EASY_VQA_ANSWERS))
    _, generate_s = timed(lambda: generate_answers(lm, tokens, prompts, max_new_tokens=4))
    reference, naive_s = timed(lambda: naive(lm, tokens, prompts, EASY_VQA_ANSWERS))
    result = {
        "benchmark": "zeroshot_speed", "size": args.size, "device": args.device, "machine": platform.platform(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "questions": n, "candidates": len(EASY_VQA_ANSWERS),
        "lm_parameters_m": round(sum(p.numel() for p in lm.lm.parameters()) / 1e6, 1), "build_s": round(build_s, 1),
        "prompt_tokens": len(lm.tokenizer(prompts[0]).input_ids) + 32,
        "rank_s_per_question": round(rank_s, 4), "generate_s_per_question": round(generate_s, 4),
        "naive_s_per_question": round(naive_s, 4), "rank_over_generate": round(rank_s / generate_s, 2),
        "naive_over_rank": round(naive_s / rank_s, 2),
        "rank_equals_naive_max_abs_diff": float(np.abs(ranked - reference).max()),
        "command": "python " + " ".join(sys.argv),
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    save_result(result, args.out, f"zeroshot_speed_{args.size}_{args.device}.json")


if __name__ == "__main__":
    main()
