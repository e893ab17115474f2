"""Likely label errors in a single-label training split: cleanlab's `find_label_issues` on out-of-fold probabilities.

Each training row is predicted by a head fitted on the other folds (folds of whole images, so a question is never
predicted by a head that saw its image); cleanlab ranks the rows whose given label those probabilities contradict.
cleanlab is an extra: `pip install 'featcache[labels]'`.
"""

from __future__ import annotations

import numpy as np

from featcache.errors import FeatcacheError

CLEANLAB_HINT = "pip install cleanlab (or: pip install 'featcache[labels]')"


def out_of_fold_proba(make_head, X, y, folds: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities of each row from a head that did not see its image, the classes they are over)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    y = np.asarray(y, dtype=object)
    classes = np.unique(y)
    index = {c: i for i, c in enumerate(classes)}
    groups = getattr(X, "image_row", None)
    if groups is not None:
        splits = GroupKFold(n_splits=folds).split(np.zeros(len(y)), y, groups)
    else:
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    proba = np.zeros((len(y), len(classes)))
    for train, test in splits:
        head = make_head().fit(X[train], y[train])
        columns = [index[c] for c in head.classes_]
        proba[np.ix_(test, columns)] = head.predict_proba(X[test])
    return proba, classes


def find_label_issues(cache, view: str, split: str, make_head, folds: int = 5) -> list[dict]:
    """The rows of `split` whose label the out-of-fold probabilities contradict, most suspicious first."""
    try:
        from cleanlab.filter import find_label_issues as cleanlab_issues
    except ImportError:
        raise FeatcacheError(f"finding label issues needs cleanlab: {CLEANLAB_HINT}") from None
    from featcache.cache.views import question_rows

    from .benchmarks import split_references

    refs = split_references(cache, split)
    if refs is not None and refs.metric in ("vqa", "vizwiz") and refs.scored:
        raise FeatcacheError("label issues are found on single-label data; this cache has several human answers per "
                             "question (VQA's soft scores): there is no one given label to doubt")
    X, y = cache.view(view, split)
    y = np.asarray(y, dtype=object)
    counts = np.unique(y, return_counts=True)[1]
    if len(counts) < 2 or counts.min() < folds:
        raise FeatcacheError(f"every class needs at least {folds} rows for {folds}-fold probabilities (the rarest "
                             f"has {counts.min()}); use --folds {max(2, int(counts.min()))} or fold rare classes")
    proba, classes = out_of_fold_proba(make_head, X, y, folds)
    labels = np.searchsorted(classes, y)
    ranked = cleanlab_issues(labels, proba, return_indices_ranked_by="self_confidence")
    rows = question_rows(cache, split)
    text = cache.strings("questions", "text") if "text" in cache.questions else None
    keys = cache.strings("images", "key")
    image_row = np.asarray(cache.read("questions", "image_row"))
    out = []
    for rank, i in enumerate(ranked, 1):
        row = int(rows[i])
        out.append({"rank": rank, "row": row, "image": str(keys[image_row[row]]),
                    "question": None if text is None else str(text[row]), "given": str(y[i]),
                    "suggested": str(classes[int(np.argmax(proba[i]))]),
                    "given_probability": round(float(proba[i, labels[i]]), 4),
                    "suggested_probability": round(float(proba[i].max()), 4)})
    return out
