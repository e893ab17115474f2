"""Answer new (image, question) pairs with a saved head: the backbone runs live, no cache needed.

Features are computed exactly as `extract` computes them and rounded to the head's cache store
dtype, so a pair that is also in a cache gets the prediction the cache would give.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cache import MATCH_KEYS
from ..cache.views import VIEWS, view_from_arrays
from ..datasets.pairs import check_questions
from ..errors import CacheFormatError
from ..images import JPEG_DRAFT
from ..models.backbone import DEFAULT_MAX_TEXT_LENGTH, Backbone, load_backbone


def check_head_matches(provenance: dict, backbone: Backbone) -> None:
    mine = backbone.provenance()
    diffs = [f"{k}: head {provenance[k]!r}, model {mine[k]!r}" for k in MATCH_KEYS
             if k in provenance and k in mine and provenance[k] != mine[k]]
    if diffs:
        raise CacheFormatError(f"the head was trained on features of {provenance.get('model_id')!r}, but --model "
                               f"{backbone.model_id!r} computes different ones:\n  " + "\n  ".join(diffs)
                               + "\nUse the model the head's cache was extracted with.")


def predict(trained, pairs: list[tuple[str, str]], model: str | Backbone | None = None, device: str = "auto",
            top_k: int = 3, batch_size: int = 32, open_image=None) -> list[dict]:
    """Top-k answers with probabilities for each (image path, question). `open_image(ref, draft_size)` decodes
    an image that is not a file path (a dataset's key: `VQADataset.open_image`)."""
    if VIEWS[trained.view].question or VIEWS[trained.view].conditioned:
        check_questions(pairs)  # before any model is loaded
    backbone = model if isinstance(model, Backbone) else load_backbone(
        model or trained.provenance["model_id"], device,
        max_text_length=trained.provenance.get("max_text_length") or DEFAULT_MAX_TEXT_LENGTH,
        jpeg_draft=JPEG_DRAFT in str(trained.provenance.get("image_decoding", "")))
    check_head_matches(trained.provenance, backbone)
    spec = VIEWS[trained.view]
    store = np.dtype(trained.provenance.get("store_dtype", "float32"))
    position = {p: i for i, p in enumerate(dict.fromkeys(p for p, _ in pairs))}
    paths = list(position)
    image_row = np.array([position[p] for p, _ in pairs])
    if spec.conditioned:
        return _answers(trained, pairs, _conditioned_features(trained, backbone, pairs, paths, position, batch_size,
                                                              open_image, store), top_k)
    feats: dict[str, list] = {}
    for i in range(0, len(paths), batch_size):
        pre = backbone.preprocessor
        pixels = np.stack([pre.resize_uint8(open_image(p, pre.draft_size) if open_image else pre.load(p))
                           for p in paths[i:i + batch_size]])
        for k, v in backbone.encode_images(pixels).items():
            feats.setdefault(k, []).append(v)
    images = np.concatenate(feats[spec.image]).astype(store)
    question = None
    if spec.question:  # each distinct text once, a batch at a time (a dataset may hold many)
        texts = list(dict.fromkeys(q for _, q in pairs))
        encoded = np.concatenate([backbone.encode_texts(texts[i:i + 128])[spec.question]
                                  for i in range(0, len(texts), 128)])
        row_of = {t: i for i, t in enumerate(texts)}
        question = encoded[[row_of[q] for _, q in pairs]].astype(store)
    return _answers(trained, pairs, view_from_arrays(trained.view, images, image_row, question), top_k)


def _conditioned_features(trained, backbone: Backbone, pairs, paths, position, batch_size, open_image, store):
    """A question-conditioned view (mm, mm_pooled) computed live: each distinct (image, question) once, with the
    Q-Former text the head's cache used (its --mm-prompt), from one ViT pass per image."""
    from ..cache.views import FactorizedFeatures, pool_tokens

    if not backbone.has_multimodal:
        raise CacheFormatError(f"the head reads question-conditioned features, which {backbone.model_id} cannot "
                               f"compute (no Q-Former text path); use the model its cache was extracted with")
    prompt = str(trained.provenance.get("mm_prompt", "{}"))
    distinct = sorted(dict.fromkeys((position[p], q) for p, q in pairs), key=lambda pq: pq[0])  # batch order
    row_of = {pq: i for i, pq in enumerate(distinct)}
    states = []
    for i in range(0, len(paths), batch_size):
        pre = backbone.preprocessor
        pixels = np.stack([pre.resize_uint8(open_image(p, pre.draft_size) if open_image else pre.load(p))
                           for p in paths[i:i + batch_size]])
        mine = [(r - i, q) for r, q in distinct if i <= r < i + batch_size]
        owner = np.array([r for r, _ in mine], dtype=np.int64)
        feats = backbone.encode_images(pixels, pairs=(owner, [prompt.format(q) for _, q in mine], "full"))
        states.append(feats["mm_query"].astype(store))
    states = np.concatenate(states)  # in `distinct` order: images batch by batch, each batch's pairs in order
    pooled = VIEWS[trained.view].pool
    part = pool_tokens(states) if pooled else states.reshape(len(states), -1)
    return FactorizedFeatures(part, np.array([row_of[(position[p], q)] for p, q in pairs]), None,
                              1 if pooled else states.shape[1])


def _answers(trained, pairs, X, top_k: int) -> list[dict]:
    proba = trained.head.predict_proba(X)
    classes = trained.head.classes_
    out = []
    for (path, q), p in zip(pairs, proba):
        order = np.argsort(-p)[:top_k]
        out.append({"image": path, "question": q, "answer": str(classes[order[0]]), "probability": float(p[order[0]]),
                    "top_k": [(str(classes[j]), float(p[j])) for j in order]})
    return out


def is_finetune_checkpoint(path: str | Path) -> bool:
    """A fine-tune checkpoint (folder or featcache 0.1 .pt), as opposed to a head, judged without loading it."""
    from ..safe_folder import describe_file, read_meta

    path = Path(path)
    if path.is_dir():
        meta = read_meta(path)  # None: the head loader reports what is wrong with it
        return meta is not None and str(meta.get("format", "")).startswith("featcache-finetune")
    return describe_file(path).startswith("a torch.save")


class _GuardedImages:
    """Opens the pairs' images; with skip_bad an image that cannot be read is recorded (its rows then carry the
    error instead of an answer) and a blank stands in for it, so one bad row loses nothing else."""

    def __init__(self, open_image, skip_bad: bool) -> None:
        self.open_image, self.skip_bad, self.errors = open_image, skip_bad, {}

    def __call__(self, ref, draft_size=None):
        from PIL import Image

        from ..images import ImageLoadError, load_image

        if ref in self.errors:  # found unreadable before the model loaded: never opened
            return Image.new("RGB", (8, 8), (255, 255, 255))
        try:
            return self.open_image(ref, draft_size) if self.open_image else load_image(ref, draft_size)
        except ImageLoadError as exc:
            if not self.skip_bad:
                raise ImageLoadError(f"{exc}. Pass --skip-bad to answer the other rows and record this one as "
                                     f"failed") from None
            self.errors[ref] = str(exc)
            return Image.new("RGB", (8, 8), (255, 255, 255))


def _check_files(pairs: list[tuple[str, str]], skip_bad: bool) -> dict[str, str]:
    """Before any model loads: image paths that are missing or not regular files (a folder, a FIFO)."""
    from ..images import ImageLoadError
    from ..images.decode import check_image_file

    bad = {}
    for p in dict.fromkeys(p for p, _ in pairs):
        try:
            check_image_file(p)
        except ImageLoadError as exc:
            bad[p] = str(exc)
    if bad and not skip_bad:

        shown = "; ".join(list(bad.values())[:3])
        raise ImageLoadError(f"{len(bad)} of the images cannot be read: {shown}. Fix the paths, or pass --skip-bad "
                             f"to answer the other rows and record these as failed")
    return bad


def predict_saved(path: str | Path, pairs: list[tuple[str, str]], model: str | None = None, device: str = "auto",
                  top_k: int = 3, trust_pickle: bool = False, dataset=None,
                  skip_bad: bool = False) -> tuple[list[dict], bool]:
    """Predict with a saved head or fine-tune checkpoint: (results, whether it rests on random weights). With
    `dataset` (a VQADataset), the pairs' images are its keys, decoded by it (files, parquet cells, tar members).
    With skip_bad a row whose image cannot be read gets an "error" and no answer; the others are answered."""
    from ..models.names import TINY_RANDOM

    guard = _GuardedImages(dataset.open_image if dataset is not None else None, skip_bad)
    if dataset is None:
        guard.errors.update(_check_files(pairs, skip_bad))
    if is_finetune_checkpoint(path):
        from ..finetune import load_finetuned, predict_finetuned

        net = load_finetuned(path, model, device, trust_pickle)
        results, random = predict_finetuned(net, pairs, top_k=top_k, open_image=guard), net.backbone.model_id == TINY_RANDOM
    else:
        from heads.trained import load_head

        trained = load_head(path, trust_pickle)
        results = predict(trained, pairs, model=model, device=device, top_k=top_k, open_image=guard)
        random = trained.random_weights
    return [{**r, "answer": "", "probability": float("nan"), "top_k": [], "error": guard.errors[r["image"]]}
            if r["image"] in guard.errors else r for r in results], random


def results_file(results: list[dict], questions: list, metric: str):
    """Predictions of a benchmark's questions (row for row) in its results format (heads.benchmarks.submission);
    A-OKVQA's multiple choice is the likeliest of each question's choices under the head (results' top_k holding
    every answer)."""
    from heads.benchmarks import submission

    from ..cache.answers import References

    refs = References([q.qid for q in questions], [list(q.references) for q in questions],
                      [q.answer_type for q in questions], [q.question_type for q in questions],
                      [list(q.choices) for q in questions], metric, [q.answer for q in questions])
    mc = None
    if metric == "aokvqa":
        mc = []
        for r, q in zip(results, questions):
            probability = dict(r["top_k"])
            mc.append(max(q.choices, key=lambda c: (probability.get(c, 0.0), -q.choices.index(c))) if q.choices else "")
    return submission([r["answer"] for r in results], refs, mc)
