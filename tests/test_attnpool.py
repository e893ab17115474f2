"""The attention-pooling probe: invariant to the order of the query tokens, learns what a token view holds, trains in
one pass with other heads exactly as alone, reads a streamed view as an in-memory one, and saves safely."""

import numpy as np
import pytest
import torch

from featcache.cache.views import FactorizedFeatures
from heads import AttentionPoolHead, MLPHead
from heads.together import fit_together
from heads.trained import TrainedHead


def token_problem(n_images=300, per_image=4, tokens=8, width=16, seed=0):
    """The answer is carried by ONE token of each image, a different one per question type (the question says which),
    both in the same directions: which query saw what matters. Each token also carries its own signature, as each of
    BLIP-2's learned queries does, which is how a probe without positions tells them apart."""
    rng = np.random.default_rng(seed)
    n = n_images * per_image
    row = np.repeat(np.arange(n_images), per_image)
    kind = rng.integers(0, 2, n)  # question type 0 asks token 0, type 1 asks token 1
    label_of = rng.integers(0, 3, (n_images, 2))
    directions = rng.normal(size=(3, width))
    image = 0.5 * rng.normal(size=(n_images, tokens, width)) + 2 * rng.normal(size=(1, tokens, width))
    image[:, 0] += directions[label_of[:, 0]]
    image[:, 1] += directions[label_of[:, 1]]
    question = np.eye(2)[kind] + 0.1 * rng.normal(size=(n, 2))
    y = label_of[row, kind]
    X = FactorizedFeatures(image.reshape(n_images, -1).astype(np.float32), row, question.astype(np.float32), tokens)
    return X, y


@pytest.fixture(scope="module")
def problem():
    X, y = token_problem()
    images = np.unique(X.image_row)
    held = np.isin(X.image_row, images[:60])
    return (X[np.flatnonzero(~held)], y[~held]), (X[np.flatnonzero(held)], y[held])


def test_the_probe_is_invariant_to_the_order_of_the_tokens(problem):
    (X, y), (Xt, _) = problem
    for question in (True, False):
        def view(A, perm=None):
            img = A.image_part.reshape(len(A.image_part), 8, 16)
            img = img if perm is None else img[:, perm]
            return FactorizedFeatures(img.reshape(len(img), -1), A.image_row, A.question_part if question else None, 8)

        head = AttentionPoolHead(max_epochs=3, num_queries=2).fit(view(X), y)
        perm = np.random.default_rng(1).permutation(8)
        np.testing.assert_allclose(head.predict_proba(view(Xt, perm)), head.predict_proba(view(Xt)), atol=1e-12)


def test_it_learns_which_token_the_question_asks_about(problem):
    (X, y), (Xt, yt) = problem
    head = AttentionPoolHead(max_epochs=40, patience=8, lr=3e-3).fit(X, y)
    assert head.score(Xt, yt) >= 0.9
    # the average of the tokens mixes the two answers: an MLP on the mean-pooled view cannot tell them apart
    pooled = lambda A: FactorizedFeatures(A.image_part.reshape(len(A.image_part), 8, 16).mean(1), A.image_row,  # noqa
                                          A.question_part, 1)
    mlp = MLPHead(hidden_sizes=(64,), max_epochs=40, patience=8).fit(pooled(X), y)
    assert mlp.score(pooled(Xt), yt) < head.score(Xt, yt) - 0.1


def test_in_one_pass_it_trains_as_alone(problem):
    (X, y), _ = problem
    val = np.flatnonzero(np.isin(X.image_row, np.unique(X.image_row)[::10]))
    make = lambda: [AttentionPoolHead(max_epochs=3, precision="fp32"),  # noqa: E731
                    AttentionPoolHead(max_epochs=3, hidden_sizes=(16,), dropout=0.3, num_queries=2, precision="fp32")]
    together = fit_together(make(), X, y, validation_rows=val)
    alone = [fit_together([h], X, y, validation_rows=val)[0] for h in make()]
    for a, b in zip(together, alone):
        for p, q in zip(a.net_.state_dict().values(), b.net_.state_dict().values()):
            assert torch.equal(p, q)


def test_a_plain_matrix_is_read_as_tokens(problem):
    (X, y), (Xt, _) = problem
    image_only = lambda A: np.asarray(A.image_part)[A.image_row]  # noqa: E731
    head = AttentionPoolHead(tokens=8, max_epochs=2).fit(image_only(X), y)
    assert head.net_.n_tokens == 8 and head.predict_proba(image_only(Xt)).shape == (len(Xt), 3)
    with pytest.raises(ValueError, match="tokens must be"):
        AttentionPoolHead(tokens=7).fit(image_only(X), y)


def test_a_saved_probe_predicts_the_same(problem, tmp_path):
    (X, y), (Xt, _) = problem
    head = AttentionPoolHead(max_epochs=2, hidden_sizes=(8,)).fit(X, y.astype(str))
    TrainedHead(head, "itc", {}, "train").save(tmp_path / "probe")
    loaded = TrainedHead.load(tmp_path / "probe").head
    np.testing.assert_array_equal(loaded.predict_proba(Xt), head.predict_proba(Xt))
