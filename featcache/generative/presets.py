"""Zero-shot settings as published, so a run says exactly how it decoded and can be reproduced.

Users of LAVIS cannot reproduce BLIP-2's zero-shot VQA figures largely because the prompt and decoding are not
recorded with the result (LAVIS issues #99, #239, #352, #511, #534). `blip2` is LAVIS's own evaluation setting
for BLIP-2 zero-shot VQAv2, OK-VQA and GQA (lavis/projects/blip2/eval/*_zeroshot_*_eval.yaml with
Blip2OPT / Blip2T5.predict_answers): the prompt "Question: {} Short answer:", beam search with 5 beams, at most
10 new tokens, min_length 1, length penalty 0 for OPT and -1 for Flan-T5 (predict_answers' defaults; the task
passes none), no lemmatizer (the configs' default), 224-pixel images (the checkpoints' own preprocessing). The
raw generated text is what is scored: the benchmark's evaluator normalises it (featcache.scoring).
"""

from __future__ import annotations

from ..errors import ZeroShotError

PRESETS = {
    "blip2": {"method": "generate", "prompt": "Question: {} Short answer:", "num_beams": 5, "max_new_tokens": 10,
              "min_length": 1, "length_penalty": {"decoder_only": 0.0, "encoder_decoder": -1.0},
              "source": "LAVIS lavis/projects/blip2/eval/{vqav2,okvqa,gqa}_zeroshot_*_eval.yaml + predict_answers"},
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise ZeroShotError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def length_penalty_for(value, decoder_only: bool) -> float:
    """A preset's length penalty, which depends on the language model (OPT: decoder only; Flan-T5: not)."""
    if isinstance(value, dict):
        return float(value["decoder_only" if decoder_only else "encoder_decoder"])
    return float(value)
