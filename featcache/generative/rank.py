"""Zero-shot classification over a closed answer set with a generative BLIP-2.

`score_answers` gives every candidate answer its log-likelihood under the language model, given the
image tokens and the prompt. The prompt's keys and values are computed once per question and shared
by all candidates, which are then scored in one batch (answers are 1-3 tokens):
- OPT (decoder-only): [image tokens][</s> prompt], then each candidate as " answer\\n": the leading
  space is how an answer follows "Answer:", and the end marker (BLIP-2's own answer end for OPT) makes
  "red" pay for stopping, so it cannot win merely by being a prefix of "red and white".
- Flan-T5 (encoder-decoder): the encoder runs once on [image tokens][prompt</s>]; the decoder scores
  each "answer</s>".
`generate_answers` is free generation (greedy) from the same inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.generative import GenerativeLM

PAPER_PROMPT = "Question: {} Answer:"
"""The BLIP-2 Classifier paper's baseline prompt (and BLIP-2's VQA prompt)."""
ONE_WORD_PROMPT = "Question: {} Answer in one word:"


def check_prompt(prompt, where: str = "--prompt") -> str:
    """A prompt holds exactly one {} (where the question goes) and no other slot; literal braces are doubled."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None]
        prompt.format("x")
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
        fields = [f"an unreadable slot ({exc})"]
    if fields != [""]:
        from ..errors import ZeroShotError

        raise ZeroShotError(f"{where} must hold exactly one {{}} where the question goes and no other slot (write "
                            f"literal braces as {{{{ and }}}}), got {prompt!r}")
    return prompt


def check_lengths(lm: GenerativeLM, prompts: list[str], extra: int, what: str) -> None:
    """Refuse, before any compute, prompts whose image tokens + prompt + `extra` (answer or new tokens) pass the
    language model's positions (OPT's learned positions end there: the model would fail mid-run)."""
    limit = getattr(lm.model.config.text_config, "max_position_embeddings", None) if lm.decoder_only else None
    if not limit or not prompts:
        return
    image = int(lm.model.config.num_query_tokens)
    lengths = [len(ids) for ids in lm.tokenizer(list(prompts)).input_ids]
    longest = max(range(len(prompts)), key=lengths.__getitem__)
    if image + lengths[longest] + extra > limit:
        n = sum(image + n + extra > limit for n in lengths)
        raise ValueError(f"{n} {what}{'s are' if n != 1 else ' is'} too long for {lm.model_id}: {image} image tokens + {lengths[longest]} prompt "
                         f"tokens + {extra} for the answer pass its {limit} positions (e.g. {prompts[longest][:80]!r}); "
                         f"shorten them (at most {limit - image - extra} prompt tokens) or use fewer answer tokens")


def answer_tokens(lm: GenerativeLM, answers: list[str]) -> list[list[int]]:
    """Each answer's tokens as the language model would produce them after the prompt, end included."""
    tok = lm.tokenizer
    if lm.decoder_only:
        end = lm.answer_end
        out = [tok(" " + a.strip(), add_special_tokens=False).input_ids + end for a in answers]
    else:
        out = [tok(a.strip()).input_ids for a in answers]  # T5's tokenizer closes with </s>
    unk = getattr(tok, "unk_token_id", None)
    for a, ids in zip(answers, out):
        if not a.strip() or (unk is not None and unk in ids):
            raise ValueError(f"answer {a!r} cannot be encoded by {lm.model_id}'s tokenizer"
                             + (" (unknown token)" if a.strip() else " (empty)"))
    return out


def _padded(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    return ids.to(device), mask.to(device)


def _prefix(lm: GenerativeLM, image_tokens: torch.Tensor, prompt: str) -> torch.Tensor:
    """[image tokens][prompt tokens] embedded, as Blip2Processor + the model's forward arrange them."""
    ids = torch.tensor([lm.tokenizer(prompt).input_ids])
    return torch.cat([image_tokens[None].to(lm.dtype), lm.embed(ids)], dim=1)


def _kv_argument(model) -> str:
    """The name under which this transformers takes a key/value cache: `cache` (5.2x), `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _kv_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


CHUNK_BYTES = 1 << 28
"""What one chunk of candidates may hold, per large tensor (its log-probabilities over the vocabulary, its
copy of the prompt's keys and values): 256 MiB, so memory stays flat however many answers are ranked
(benchmarks/zeroshot_speed.py --memory measures it)."""


def candidate_chunk(lm: GenerativeLM, n_candidates: int, width: int, prefix_len: int,
                    chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many candidates one pass scores: the most whose float64 log-probabilities (width x vocabulary each)
    and repeated prompt keys / values (OPT: layers x 2 x prefix x hidden each) fit in `chunk_bytes`."""
    text = lm.model.config.text_config
    vocab = int(getattr(text, "vocab_size", 0) or len(lm.tokenizer))
    per_logits = max(1, width * vocab * 8)
    per_cache = 0
    if lm.decoder_only:
        per_cache = (int(getattr(text, "num_hidden_layers", 1)) * 2 * prefix_len * int(getattr(text, "hidden_size", 1))
                     * torch.finfo(lm.dtype).bits // 8)
    return max(1, min(n_candidates, chunk_bytes // per_logits, chunk_bytes // max(1, per_cache)))


@torch.inference_mode()
def score_answers(lm: GenerativeLM, image_tokens: torch.Tensor, prompts: list[str], answers: list[str],
                  length_norm: bool = False, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """(questions, answers) log-likelihoods; image_tokens (questions, 32, d_LLM) from `lm.project`.
    With length_norm each is divided by its number of tokens. Candidates are scored in chunks bounded by
    `chunk_bytes` (the prompt's keys and values computed once per question, copied per chunk)."""
    import copy

    cands = answer_tokens(lm, answers)
    check_lengths(lm, prompts, max(map(len, cands)), "prompt")
    pad = lm.tokenizer.pad_token_id or 0
    ids_all, mask_all = _padded(cands, pad, lm.device)
    k = len(cands)
    lengths = mask_all.sum(1).to(torch.float64)
    out = np.empty((len(prompts), k), dtype=np.float64)
    for i, prompt in enumerate(prompts):
        prefix = _prefix(lm, image_tokens[i], prompt)
        n = prefix.shape[1]
        step = candidate_chunk(lm, k, ids_all.shape[1], n, chunk_bytes)
        if lm.decoder_only:
            first = lm.lm(inputs_embeds=prefix, use_cache=True)
        else:
            encoded = lm.lm.get_encoder()(inputs_embeds=prefix).last_hidden_state
        for a in range(0, k, step):
            ids, mask = ids_all[a:a + step], mask_all[a:a + step]
            c = len(ids)
            if lm.decoder_only:
                kept = _kv_of(first)
                cache = copy.deepcopy(kept) if step < k else kept
                cache.batch_repeat_interleave(c)
                rest = lm.lm(input_ids=ids, **{_kv_argument(lm.lm): cache}, use_cache=False,
                             attention_mask=torch.cat([torch.ones((c, n), dtype=torch.long, device=lm.device), mask], 1))
                logits = torch.cat([first.logits[:, -1:].expand(c, -1, -1), rest.logits[:, :-1]], dim=1)
                del cache, rest
            else:
                start = torch.full((c, 1), lm.model.config.text_config.decoder_start_token_id, device=lm.device)
                logits = lm.lm(encoder_outputs=(encoded.expand(c, -1, -1),),
                               decoder_input_ids=torch.cat([start, ids[:, :-1]], 1),
                               decoder_attention_mask=torch.cat([torch.ones_like(start), mask[:, :-1]], 1)).logits
            logp = torch.log_softmax(logits.double(), dim=-1).gather(2, ids[..., None])[..., 0] * mask
            del logits
            scores = logp.sum(1)
            out[i, a:a + c] = (scores / lengths[a:a + c] if length_norm else scores).cpu().numpy()
    return out


@torch.inference_mode()
def generate_answers(lm: GenerativeLM, image_tokens: torch.Tensor, prompts: list[str], max_new_tokens: int = 4,
                     num_beams: int = 1, length_penalty: float = 1.0, min_length: int = 0) -> list[str]:
    """Generation after each prompt, decoded text: greedy by default (the report's setting: max_new_tokens 4), or
    beam search as LAVIS evaluates BLIP-2 zero-shot (featcache.generative.presets)."""
    check_lengths(lm, prompts, max_new_tokens, "prompt")
    texts = []
    stop = None
    if lm.decoder_only:  # an OPT answer ends at "\n" (BLIP-2's answer end), or at </s>
        stop = list(dict.fromkeys(lm.answer_end[-1:] + [lm.tokenizer.eos_token_id]))
    for i, prompt in enumerate(prompts):
        prefix = _prefix(lm, image_tokens[i], prompt)
        mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=lm.device)
        new = lm.lm.generate(inputs_embeds=prefix, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=num_beams, length_penalty=length_penalty,
                             min_length=min_length, **({"eos_token_id": stop} if stop else {}))
        texts.append(lm.tokenizer.decode(new[0], skip_special_tokens=True).strip().split("\n")[0].strip())
    return texts
