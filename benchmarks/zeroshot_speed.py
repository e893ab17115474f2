"""Zero-shot speed per question: `rank` (the prompt's keys and values computed once, all candidates in
one batch) against one `generate` call (4 new tokens) and against the naive way (one full language-model
forward of image tokens + prompt + candidate per candidate), all from cached query states.

    python benchmarks/zeroshot_speed.py --size tiny --questions 20
    python benchmarks/zeroshot_speed.py --size real --questions 3      # OPT-2.7b dimensions, ~11 GB of RAM
    python benchmarks/zeroshot_speed.py --size real --device cuda --dtype bfloat16 --questions 64 --candidates 13,100
    python benchmarks/zeroshot_speed.py --size real --lm t5 --device cuda --dtype bfloat16    # flan-t5-xl dims

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

from _generative import peak_gpu_gib, random_lm, sync  # noqa: E402  (benchmarks/, first on sys.path)
from _results import save_result  # noqa: E402

EASY_VQA_ANSWERS = ["blue", "brown", "circle", "gray", "green", "no", "rectangle", "red", "teal", "triangle",
                    "yellow", "yes", "black"]
QUESTIONS = ["what color is the shape?", "is there a red shape in the image?", "what shape is in the image?",
             "does the image contain a circle?", "is the triangle blue?"]


WORDS = ["red", "blue", "green", "circle", "square", "yes", "no", "two", "three", "cat", "dog", "left", "table"]


def candidates(n: int) -> list[str]:
    """Easy-VQA's 13 answers, then DAQUAR-like phrases up to n."""
    extra = [f"{WORDS[i % len(WORDS)]} {WORDS[(i // len(WORDS)) % len(WORDS)]}" for i in range(max(0, n - 13))]
    return (EASY_VQA_ANSWERS + list(dict.fromkeys(a for a in extra if a not in EASY_VQA_ANSWERS)))[:n]


@torch.inference_mode()
def generate_matches_model_generate(lm: GenerativeLM, prompt: str) -> bool:
    """generate_answers from the image tokens equals Blip2ForConditionalGeneration.generate on the pixels."""
    side = lm.model.config.vision_config.image_size
    pixels = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1)).to(lm.device, lm.dtype)
    image_token = lm.model.config.image_token_index
    ids = [image_token] * lm.model.config.num_query_tokens + lm.tokenizer(prompt).input_ids
    input_ids = torch.tensor([ids], device=lm.device)
    stop = {}
    if lm.decoder_only:
        stop["eos_token_id"] = [lm.tokenizer("\n", add_special_tokens=False).input_ids[-1], lm.tokenizer.eos_token_id]
    reference = lm.model.generate(pixel_values=pixels, input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                  max_new_tokens=4, do_sample=False, num_beams=1, **stop)
    new = reference[0, input_ids.shape[1]:] if lm.decoder_only else reference[0]
    expected = lm.tokenizer.decode(new, skip_special_tokens=True).strip().split("\n")[0].strip()
    tokens = lm.model.get_image_features(pixel_values=pixels).pooler_output
    return generate_answers(lm, tokens, [prompt], max_new_tokens=4) == [expected]


@torch.inference_mode()
def naive(lm: GenerativeLM, tokens: torch.Tensor, prompts: list[str], answers: list[str]) -> np.ndarray:
    cands = answer_tokens(lm, answers)
    out = np.empty((len(prompts), len(cands)))
    for i, prompt in enumerate(prompts):
        prefix = _prefix(lm, tokens[i], prompt)
        for j, ids in enumerate(cands):
            if not lm.decoder_only:  # T5: the whole encoder-decoder forward per candidate
                labels = torch.tensor([ids], device=lm.device)
                logits = lm.lm(inputs_embeds=prefix, labels=labels).logits[0]
                ids_t = torch.tensor(ids, device=lm.device)
                out[i, j] = float(torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)), ids_t].sum())
                continue
            embeds = torch.cat([prefix, lm.embed(torch.tensor([ids]))], 1)
            logits = lm.lm(inputs_embeds=embeds).logits[0, prefix.shape[1] - 1:-1]
            out[i, j] = float(torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)),
                                                                     torch.tensor(ids, device=lm.device)].sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--lm", choices=["opt", "t5"], default="opt")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--candidates", default="13", help="Comma-separated candidate counts for rank.")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    t = time.perf_counter()
    lm = random_lm(args.lm, args.size, args.device, args.dtype)
    build_s = time.perf_counter() - t
    n = args.questions
    prompts = [PAPER_PROMPT.format(QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]
    query = torch.randn(n, 32, lm.model.config.qformer_config.hidden_size, generator=torch.Generator().manual_seed(0))
    tokens = lm.project(query.to(lm.device))
    score_answers(lm, tokens[:1], prompts[:1], EASY_VQA_ANSWERS)  # warm-up
    generate_answers(lm, tokens[:1], prompts[:1])

    def timed(fn):
        sync(lm.device)
        start = time.perf_counter()
        value = fn()
        sync(lm.device)
        return value, (time.perf_counter() - start) / n

    _, generate_s = timed(lambda: generate_answers(lm, tokens, prompts, max_new_tokens=4))
    result = {
        "benchmark": "zeroshot_speed", "size": args.size, "lm": args.lm, "device": args.device, "dtype": args.dtype,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        "machine": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "questions": n,
        "lm_parameters_m": round(sum(p.numel() for p in lm.lm.parameters()) / 1e6, 1), "build_s": round(build_s, 1),
        "prompt_tokens": len(lm.tokenizer(prompts[0]).input_ids) + 32,
        "generate_s_per_question": round(generate_s, 4), "rank": [],
        "generate_equals_model_generate": generate_matches_model_generate(lm, prompts[0]),
    }
    for k in (int(c) for c in args.candidates.split(",")):
        answers = candidates(k)
        ranked, rank_s = timed(lambda: score_answers(lm, tokens, prompts, answers))
        reference, naive_s = timed(lambda: naive(lm, tokens, prompts, answers))
        result["rank"].append({
            "candidates": len(answers), "rank_s_per_question": round(rank_s, 4),
            "naive_s_per_question": round(naive_s, 4), "rank_over_generate": round(rank_s / generate_s, 2),
            "naive_over_rank": round(naive_s / rank_s, 2),
            "rank_equals_naive_max_abs_diff": float(np.abs(ranked - reference).max())})
    result.update(peak_gpu_gib=peak_gpu_gib(lm.device), command="python " + " ".join(sys.argv))
    for k, v in result.items():
        print(f"{k}: {v}")
    tag = "" if args.lm == "opt" else "_t5"
    save_result(result, args.out, f"zeroshot_speed_{args.size}{tag}_{args.device.split(':')[0]}.json")


if __name__ == "__main__":
    main()
