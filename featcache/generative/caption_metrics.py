"""Caption metrics against reference captions, computed by maintained packages, never by our own code.

- BLEU-1..4, METEOR, ROUGE-L, CIDEr: `pycocoevalcap` (the COCO caption evaluation code, as published
  results use it). The COCO protocol tokenizes with Stanford's PTBTokenizer, and METEOR is a Java
  program: both need `java` on the PATH. Without Java, BLEU / ROUGE-L / CIDEr are computed on a
  lower-cased, punctuation-stripped split (said in the result, as the scores then differ slightly
  from published ones) and METEOR is reported as unavailable, with the fix.
- BERTScore (optional): the `bert-score` package with a model you name (a hub id or a local folder);
  when it cannot be loaded (no hub here) the result says so instead of failing the other metrics.
"""

from __future__ import annotations

import contextlib

import re
import shutil

from ..errors import FeatcacheError

_PUNCT = re.compile(r"[^\w\s]")


def _simple_tokens(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: [" ".join(_PUNCT.sub(" ", c.lower()).split()) for c in v] for k, v in captions.items()}


def caption_scores(candidates: dict[str, str], references: dict[str, list[str]], java: str | None = "auto",
                   bertscore_model: str | None = None, bertscore_layers: int | None = None) -> dict:
    """Corpus scores of one candidate caption per image against its references. `java`: "auto" finds it
    on the PATH, None forces the Python-only path. Images without references are counted, not scored."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise FeatcacheError("caption metrics need pycocoevalcap: pip install 'featcache[captions]'") from None
    ids = sorted(k for k in candidates if references.get(k))
    if not ids:
        raise FeatcacheError("no captioned image has a reference caption: do the references' image column and "
                             "the captions' image keys agree?")
    java = shutil.which("java") if java == "auto" else java
    res = {k: [candidates[k]] for k in ids}
    gts = {k: list(references[k]) for k in ids}
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tok = PTBTokenizer()
        with _java_quiet():  # (its "PTBTokenizer tokenized N tokens at ..." line on every command)
            res = tok.tokenize({k: [{"caption": c} for c in v] for k, v in res.items()})
            gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
        tokenizer = "PTBTokenizer (the COCO protocol)"
    else:
        res, gts = _simple_tokens(res), _simple_tokens(gts)
        tokenizer = "lower-case, punctuation stripped (no java: PTBTokenizer unavailable; scores differ slightly " \
                    "from the COCO protocol)"
    scores: dict = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    unavailable = {}
    if java:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()  # a Java process, ended when the object is collected
        scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
        del meteor
    else:
        unavailable["METEOR"] = "needs Java (e.g. apt install default-jre-headless)"
    if bertscore_model:
        scores_b, why = _bertscore([candidates[k] for k in ids], [references[k] for k in ids], bertscore_model,
                                   bertscore_layers)
        scores.update(scores_b)
        if why:
            unavailable["BERTScore"] = why
    return {"scores": scores, "images": len(ids), "without_references": len(candidates) - len(ids),
            "tokenizer": tokenizer, "unavailable": unavailable}


def _bertscore(cands: list[str], refs: list[list[str]], model: str, layers: int | None) -> tuple[dict, str | None]:
    try:
        import bert_score
    except ImportError:
        return {}, "needs bert-score: pip install 'featcache[captions]'"
    try:
        p, r, f = bert_score.score(cands, refs, model_type=model, num_layers=layers, verbose=False)
    except (OSError, KeyError, ValueError) as exc:  # no hub, unknown model type, layers not given
        hint = " (a hub id needs the hub: give a local folder, with --bertscore-layers)" if isinstance(exc, OSError) \
            else " (give --bertscore-layers for a model bert-score does not know)"
        return {}, f"could not load {model!r}: {str(exc).splitlines()[0][:200]}{hint}"
    return {"BERTScore-P": float(p.mean()), "BERTScore-R": float(r.mean()), "BERTScore-F1": float(f.mean())}, None


@contextlib.contextmanager
def _java_quiet():
    """The Java tokenizer's progress line (written by the child process to this process's stderr) silenced."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
