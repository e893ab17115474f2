"""An evaluation split cut from a cache that has only one (an image folder without train/ and test/): seeded,
image-disjoint and class-stratified, recorded in the report; and the checks that name a missing split."""

from __future__ import annotations

import numpy as np

from featcache.errors import FeatcacheError


def holdout_positions(labels, images, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training positions, evaluation positions) among rows with these `labels` and `images`: about `fraction`
    of the rows held out, whole images only (no evaluated image is trained on), each class in proportion."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < fraction < 1:
        raise FeatcacheError(f"--test-fraction must be between 0 and 1, got {fraction}")
    labels = np.asarray(labels, dtype=object).astype(str)
    n_images = len(np.unique(images))
    folds = max(2, min(int(round(1 / fraction)), n_images))
    if n_images < 2:
        raise FeatcacheError("the split holds one image: nothing can be held out for evaluation")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, held = next(splitter.split(np.zeros(len(labels)), labels, groups=np.asarray(images)))
    return np.sort(train), np.sort(held)


def check_splits(cache, train_split: str, eval_split: str, test_fraction: float | None) -> str | None:
    """Refuse a missing split with the way on; returns a warning where the evaluation scores training rows."""
    splits = sorted(set(cache.strings("questions", "split")))
    for name, which in ((train_split, "--train-split"), (eval_split, "--eval-split")):
        if name in splits:
            continue
        if len(splits) == 1:
            raise FeatcacheError(f"the cache has one split, {splits[0]!r}, and no {name!r} ({which}). Pass "
                                 f"--train-split {splits[0]} --eval-split {splits[0]} --test-fraction 0.2 to hold out "
                                 f"a seeded, image-disjoint, class-stratified fifth of its images for evaluation "
                                 f"(recorded in the report)")
        raise FeatcacheError(f"the cache has no split {name!r} ({which}); its splits: {', '.join(splits)}")
    if test_fraction is not None and train_split != eval_split:
        raise FeatcacheError("--test-fraction cuts the evaluation rows from the training split: give the same "
                             "--train-split and --eval-split")
    if train_split == eval_split and test_fraction is None:
        return (f"train and eval are the same split ({train_split!r}): every evaluated question was trained on, so "
                f"the figures are training scores. Pass --test-fraction 0.2 to hold out images for evaluation")
    return None
