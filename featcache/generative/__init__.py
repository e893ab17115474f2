"""The generative BLIP-2 (OPT / Flan-T5 language model) as a classifier and captioner, from the cache.

    zeroshot.py      rank / generate / itc / itm over an answer vocabulary (`featcache zeroshot`)
    rank.py          each candidate answer scored by the language model after the prompt; free generation
    answers.py       VQA answer normalisation and mapping generations onto the vocabulary
    itm.py           the retrieval checkpoint's image-text matching head
    finetune.py      LoRA on the language model, trained from cached query states (`finetune --generative`)
    caption.py, caption_metrics.py   captions and their COCO metrics (`featcache caption`)
    report.py        zero-shot results in the sweep's report format

The model itself (GenerativeLM) is loaded by featcache.models.generative.
"""
