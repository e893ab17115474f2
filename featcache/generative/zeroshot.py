"""`featcache zeroshot`: a cache's questions answered without training, scored like a sweep.

- rank: every vocabulary answer scored by a generative BLIP-2's language model (featcache.generative.rank),
  from the cache's query states: the ViT never runs.
- generate: free generation, matched to the vocabulary after VQA normalisation; the rest mapped by the
  ITC text embedding of a retrieval checkpoint when `map_model` is given (counted apart as "mapped").
- itc: a retrieval cache's query projections against the ITC text embeddings of prompt templates
  (answer alone, "a picture of {answer}", "a photo of a {answer}.", "Question: {question} Answer: {answer}",
  or an ensemble of templates averaged per class as CLIP does), max over queries. On an image
  classification cache this is zero-shot classification over the class names.
- itm: the retrieval checkpoint's image-text matching head over (image, template) pairs
  (featcache.generative.itm), from cached ViT states or the dataset's images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..cache import open_cache
from heads.threads import on_idle_cores

from ..errors import CacheFormatError, ModelLoadError, ZeroShotError

ITC_TEMPLATES = {"answer": "{answer}", "picture": "a picture of {answer}", "photo": "a photo of a {answer}.",
                 "statement": "Question: {question} Answer: {answer}"}
ENSEMBLE = ("itap of a {answer}.", "a bad photo of the {answer}.", "a origami {answer}.", "a photo of the large {answer}.",
            "a {answer} in a video game.", "art of the {answer}.", "a photo of the small {answer}.")
"""CLIP's 7-template ImageNet ensemble (the CLIP repository's prompt-engineering notebook), for `--template ensemble`."""
METHODS = ("rank", "generate", "itc", "itm")
DEFAULT_TEMPLATE = {"itc": "picture", "itm": "statement"}


@dataclass
class ZeroShotResult:
    method: str
    model: str
    y: np.ndarray
    pred: np.ndarray
    vocabulary: list[str]
    seconds: float
    settings: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    """generate: how many answers matched exactly, were mapped, or stayed unmatched."""
    rows: np.ndarray | None = None
    """The cache rows of the questions answered (for the benchmark's own scoring)."""
    raw: list[str] | None = None
    """generate: the text as generated, which a benchmark scores (its evaluator normalises it)."""
    choices: list[str] | None = None
    """rank on A-OKVQA: the likeliest of each question's own choices (multiple choice)."""

    @property
    def images_per_s(self) -> float:
        return self.settings.get("images", 0) / self.seconds if self.seconds else 0.0


def _questions(cache, split):
    splits = cache.strings("questions", "split")
    mask = cache.strings("questions", "error") == ""
    if split is not None:
        mask &= np.isin(splits, [split] if isinstance(split, str) else split)
        if not mask.any():
            raise CacheFormatError(f"no usable questions in split {split!r}; splits: {sorted(set(splits))}")
    idx = np.flatnonzero(mask)
    return idx, cache.strings("questions", "text")[idx], cache.strings("questions", "answer")[idx], \
        cache.array("questions", "image_row")[idx]


@on_idle_cores
def zeroshot(cache_path, model: str, method: str = "rank", split: str | None = "test", prompt: str | None = None,
             vocabulary: list[str] | None = None, length_norm: bool = False, max_new_tokens: int = 4,
             map_model: str | None = None, template: str | list[str] | None = None, device: str = "auto", dtype: str | None = None,
             limit: int | None = None, batch_size: int = 64, dataset=None, num_beams: int = 1,
             length_penalty: float | dict = 1.0, min_length: int = 0, preset: str | None = None,
             progress: bool = True) -> ZeroShotResult:
    """Answer the questions of `split` zero-shot over `vocabulary` (default: every answer in the cache).
    `model` may be a generative fine-tune's folder (`finetune --generative`): its prompt is then the default.
    `dataset` (a VQADataset): where itm finds the images when the cache holds no ViT states. `preset` (e.g.
    "blip2", featcache.generative.presets) sets the published method, prompt and decoding; every setting used is
    recorded in the result."""
    if preset is not None:
        from .presets import preset as published

        chosen = published(preset)
        method, prompt = chosen["method"], prompt or chosen["prompt"]
        num_beams, max_new_tokens = chosen["num_beams"], chosen["max_new_tokens"]
        min_length, length_penalty = chosen["min_length"], chosen["length_penalty"]
    if method not in METHODS:
        raise ZeroShotError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "itc" and prompt is not None:
        from .rank import check_prompt

        check_prompt(prompt)
    with open_cache(cache_path) as cache:
        idx, texts, y, rows = _questions(cache, split)
        if limit:
            idx, texts, y, rows = idx[:limit], texts[:limit], y[:limit], rows[:limit]
        vocab = sorted(set(vocabulary or cache.strings("questions", "answer")))
        started = time.perf_counter()
        classify = cache.attrs.get("task") == "classify"
        template = template or ("photo" if classify and method == "itc" else DEFAULT_TEMPLATE.get(method, "picture"))
        forms = template_forms(template)
        if classify and any("{question}" in f for f in forms):
            raise ZeroShotError(f"{cache.path} is an image classification cache (no questions); use a template "
                                f"without {{question}}, e.g. photo or ensemble")
        if method == "itm" and len(forms) != 1:
            raise ZeroShotError("--method itm takes one template; ensembles are for itc")
        if method == "itc":
            pred, settings, counts = _itc(cache, model, texts, rows, vocab, forms, device, batch_size)
        elif method == "itm":
            pred, settings, counts = _itm(cache, model, texts, rows, vocab, forms[0], device, dataset)
        else:
            decoding = {"num_beams": num_beams, "length_penalty": length_penalty, "min_length": min_length}
            choices = None
            if cache.attrs.get("metric") == "aokvqa" and method == "rank" and "choices" in cache.questions:
                import json

                choices = [json.loads(c) for c in np.asarray(cache.strings("questions", "choices"), dtype=object)[idx]]
            pred, settings, counts = _generative(cache, model, method, texts, rows, vocab, prompt, length_norm,
                                                 max_new_tokens, map_model, device, dtype, batch_size, decoding, choices,
                                                 progress, question_rows=idx)
        seconds = time.perf_counter() - started
    settings.update(split=split, images=int(len(np.unique(rows))), questions=int(len(idx)),
                    task="classify" if classify else "vqa", **({"preset": preset} if preset else {}))
    raw, mc = settings.pop("_raw", None), settings.pop("_choices", None)
    return ZeroShotResult(method, model, np.asarray(y, dtype=object), np.asarray(pred, dtype=object), vocab, seconds,
                          settings, counts, rows=idx, raw=raw, choices=mc)


def template_forms(template: str | list[str]) -> list[str]:
    """The text forms a template names: one of ITC_TEMPLATES, "ensemble" (CLIP's), or a list of forms in which
    {} (or {answer}) stands for the class or answer, and {question} for the question."""
    if isinstance(template, str):
        if template == "ensemble":
            return list(ENSEMBLE)
        if template not in ITC_TEMPLATES:
            raise ZeroShotError(f"--template must be one of {', '.join([*ITC_TEMPLATES, 'ensemble'])}, got {template!r}")
        return [ITC_TEMPLATES[template]]
    forms = [t.replace("{}", "{answer}") for t in template if t.strip()]
    bad = [t for t in forms if "{answer}" not in t]
    if not forms or bad:
        raise ZeroShotError(f"every template needs {{}} where the class name goes; got {bad[0] if bad else 'none'!r}")
    for form in forms:
        try:
            form.format(answer="x", question="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ZeroShotError(f"template {form!r} has a slot other than {{}} ({type(exc).__name__}: {exc}); write "
                                f"literal braces as {{{{ and }}}}") from None
    return forms


def read_templates(path) -> list[str]:
    """One template per line ({} for the class name); blank lines and lines starting with # are skipped."""
    from pathlib import Path

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ZeroShotError(f"cannot read templates from {path} ({exc}); give a UTF-8 text file, one template "
                            f"per line with {{}} for the class name") from None
    return template_forms([line for line in lines if line.strip() and not line.lstrip().startswith("#")])


def _generative(cache, model, method, texts, rows, vocab, prompt, length_norm, max_new_tokens, map_model, device,
                dtype, batch_size, decoding=None, choices=None, progress=True, question_rows=None):
    from .answers import map_by_embedding, match_answers
    from .finetune import is_generative_checkpoint_folder, load_generative_checkpoint, load_generative_or_finetuned
    from .rank import PAPER_PROMPT, check_prompt, generate_answers, score_answers

    lm = load_generative_or_finetuned(model, device=device, dtype=dtype)
    if is_generative_checkpoint_folder(model):  # its own prompt by default
        prompt = prompt or check_prompt(str(load_generative_checkpoint(model)["config"].get("prompt")),
                                        f"the prompt of {model}")
    lm.check_cache(cache.attrs, cache.path, cache.pairs)
    if lm.instruction_aware:  # InstructBLIP: each question's own query states; by default the language model
        rows = cache.array("questions", "pair_row")[question_rows]  # reads the text its Q-Former read
        prompt = prompt or check_prompt(str(cache.attrs.get("mm_prompt", "{}")), f"the mm_prompt of {cache.path}")
    prompt = prompt or PAPER_PROMPT
    from .presets import length_penalty_for

    decoding = dict(decoding or {"num_beams": 1, "length_penalty": 1.0, "min_length": 0})
    decoding["length_penalty"] = length_penalty_for(decoding["length_penalty"], lm.decoder_only)
    from .rank import answer_tokens, check_lengths

    try:
        extra = max(map(len, answer_tokens(lm, list(vocab)))) if method == "rank" and len(vocab) else max_new_tokens
    except ValueError as exc:  # an answer the tokenizer cannot encode
        raise ZeroShotError(f"{exc}; fix or drop it from the vocabulary") from None
    try:  # every prompt checked before the first is computed
        check_lengths(lm, [prompt.format(t) for t in dict.fromkeys(texts)], extra, "distinct question")
    except ValueError as exc:
        raise ZeroShotError(str(exc)) from None
    from tqdm.auto import tqdm

    pred, generated, picked = [], [], []
    show = progress and len(texts) > batch_size  # a bar for runs long enough to wait on
    for start in tqdm(range(0, len(texts), batch_size), desc=f"zeroshot {method}", unit="batch", disable=not show):
        part = slice(start, start + batch_size)
        used, inv = np.unique(rows[part], return_inverse=True)
        tokens = lm.image_tokens(cache, used)[inv]
        prompts = [prompt.format(t) for t in texts[part]]
        if method == "rank":
            try:
                scores = score_answers(lm, tokens, prompts, vocab, length_norm=length_norm)
            except ValueError as exc:  # an answer the tokenizer cannot encode
                raise ZeroShotError(f"{exc}; fix or drop it from the vocabulary") from None
            pred += [vocab[i] for i in scores.argmax(1)]
            for i in range(len(prompts)) if choices is not None else ():  # A-OKVQA: each question's own options
                options = choices[start + i]
                best = score_answers(lm, tokens[i:i + 1], prompts[i:i + 1], options, length_norm=length_norm)
                picked.append(options[int(best.argmax(1)[0])])
        else:
            generated += generate_answers(lm, tokens, prompts, max_new_tokens=max_new_tokens, **decoding)
    settings = {"prompt": prompt, "length_norm": length_norm} if method == "rank" else \
        {"prompt": prompt, "max_new_tokens": max_new_tokens, "map_model": map_model, **decoding,
         "lemmatizer": "none", "scored": "the generated text as it is (the benchmark's evaluator normalises it)"}
    if method == "rank":
        return pred, {**settings, **({"_choices": picked} if choices is not None else {})}, {}
    found, matched = match_answers(generated, vocab)
    counts = {"exact": int(matched.sum()), "mapped": 0, "unmatched": int((~matched).sum())}
    if map_model and counts["unmatched"]:
        from ..models.backbone import load_backbone

        bb = load_backbone(map_model, device=device)
        if not bb.has_text:
            raise ModelLoadError(f"--map-model {map_model} has no ITC text path; give a retrieval checkpoint "
                                 f"such as Salesforce/blip2-itm-vit-g")
        todo = [i for i, f in enumerate(found) if f is None]
        for i, answer in zip(todo, map_by_embedding([generated[i] for i in todo], vocab,
                                                    lambda t: bb.encode_texts(t)["text_proj"])):
            found[i] = answer
        counts.update(mapped=len(todo), unmatched=0)
    settings["examples"] = generated[:5]
    settings["_raw"] = generated
    return [f if f is not None else "<unmatched>" for f in found], settings, counts


def _retrieval_backbone(cache, model, device, method):
    from ..models.backbone import load_backbone

    bb = load_backbone(model, device=device)
    if not bb.has_text or bb.fingerprint != cache.attrs.get("model_fingerprint"):
        raise ModelLoadError(f"--method {method} needs the retrieval checkpoint that made {cache.path} "
                             f"({cache.attrs.get('model_id')}); {model} is not it")
    return bb


def _itm(cache, model, texts, rows, vocab, form, device, dataset):
    from .itm import VisionStates, itm_scores

    if "query_proj" not in cache.images:
        raise CacheFormatError(f"{cache.path} was made with a generative checkpoint, which has no ITM head; use "
                               f"--method rank or generate, or a cache of a retrieval checkpoint")
    bb = _retrieval_backbone(cache, model, device, "itm")
    if bb.itm_head is None:
        raise ModelLoadError(f"{model} has no trained ITM head (its checkpoint lacks itm_head weights); use --method itc")
    vision = VisionStates(cache, bb, dataset)
    pred = []
    for row in np.unique(rows):  # each image's ViT states once, for all its questions
        states = vision(int(row))
        for i in np.flatnonzero(rows == row):
            scores = itm_scores(bb, states, [form.format(question=texts[i], answer=a) for a in vocab])
            pred.append((i, vocab[int(scores.argmax())]))
    out = np.empty(len(texts), dtype=object)
    for i, answer in pred:
        out[i] = answer
    return list(out), {"template": form, "vision_states": "cache" if vision.stored else "recomputed"}, {}


def _class_embeddings(bb, forms: list[str], vocab: list[str]) -> np.ndarray:
    """(K, d) ITC text embedding per answer: with several templates, the mean of their L2-normalised
    embeddings, normalised again (CLIP's prompt ensembling)."""
    emb = np.stack([bb.encode_texts([form.format(answer=a) for a in vocab])["text_proj"] for form in forms])
    if len(forms) == 1:
        return emb[0]
    mean = emb.astype(np.float64).mean(axis=0)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def _itc(cache, model, texts, rows, vocab, forms, device, batch_size):
    if "query_proj" not in cache.images:
        raise CacheFormatError(f"{cache.path} has no ITC projections (/images/query_proj): it was made with a "
                               f"generative checkpoint; use --method rank or generate, or a retrieval cache")
    bb = _retrieval_backbone(cache, model, device, "itc")
    form = forms[0]
    per_answer = all("{question}" not in f for f in forms)
    if not per_answer and len(forms) > 1:
        raise ZeroShotError("templates with {question} cannot be ensembled; give one")
    if per_answer:
        answer_emb = _class_embeddings(bb, forms, vocab)
    pred = []
    for start in range(0, len(texts), batch_size):
        part = slice(start, start + batch_size)
        used, inv = np.unique(rows[part], return_inverse=True)
        image = cache.read("images", "query_proj", used).astype(np.float32)[inv]  # (B, 32, d)
        if per_answer:
            sims = np.einsum("btd,kd->btk", image, answer_emb).max(1)
        else:
            emb = bb.encode_texts([form.format(question=q, answer=a) for q in texts[part] for a in vocab])["text_proj"]
            sims = np.einsum("btd,bkd->btk", image, emb.reshape(len(image), len(vocab), -1)).max(1)
        pred += [vocab[i] for i in sims.argmax(1)]
    return pred, {"template": form if len(forms) == 1 else forms}, {}
