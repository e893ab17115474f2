"""The weighted kNN head: exact neighbours and votes as a direct numpy computation, soft-score voting, the factorised
search, FAISS, saving, and k chosen on validation in a sweep from one search."""

import numpy as np
import pytest
import torch

from featcache.cache.views import FactorizedFeatures
from heads import KNNHead
from heads.trained import TrainedHead


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def numpy_knn(train, test, y_train, n_classes, k, T):
    """DINO's weighted kNN in float64: cosine similarities, the top k, votes exp(s / T) per neighbour's label."""
    sims = unit(test) @ unit(train).T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    s = np.take_along_axis(sims, idx, 1)
    votes = np.zeros((len(test), n_classes))
    for r in range(len(test)):
        np.add.at(votes[r], y_train[idx[r]], np.exp(s[r] / T))
    return s, idx, votes / votes.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def plain():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    y = rng.integers(0, 4, 500)
    X = (centres[y] + 1.5 * rng.normal(size=(500, 16))).astype(np.float32)
    return X, y


@pytest.mark.parametrize("blocks", [dict(), dict(query_rows=7, block_rows=50)])
def test_neighbours_and_votes_equal_a_direct_numpy_computation(plain, blocks):
    X, y = plain
    head = KNNHead(k=15, temperature=0.1, **blocks).fit(X[:400], y[:400])
    sims, idx = head.kneighbors(X[400:])
    s_ref, idx_ref, proba_ref = numpy_knn(X[:400].astype(np.float64), X[400:].astype(np.float64), y[:400], 4, 15, 0.1)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_allclose(sims, s_ref, atol=1e-6)
    np.testing.assert_allclose(head.predict_proba(X[400:]), proba_ref, atol=1e-5)


def test_soft_scores_vote_with_their_weights():
    # three training rows; the query is closest to row 0, then row 1, then row 2
    X = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    y = np.array(["red", "blue", "green"], dtype=object)
    soft = [{"red": 1.0, "blue": 0.3}, {"blue": 0.6}, {"green": 1.0}]
    head = KNNHead(k=2, temperature=0.5).fit(X, y, soft_targets=soft)
    q = np.array([[1.0, 0.1]], dtype=np.float32)
    s0, s1 = unit(q[0].astype(np.float64)) @ unit(X[0]), unit(q[0].astype(np.float64)) @ unit(X[1])
    w0, w1 = np.exp(s0 / 0.5), np.exp(s1 / 0.5)
    votes = {"red": w0 * 1.0, "blue": w0 * 0.3 + w1 * 0.6, "green": 0.0}  # row 2 is not among the 2 nearest
    total = sum(votes.values())
    proba = dict(zip(head.classes_, head.predict_proba(q)[0]))
    for answer, v in votes.items():
        assert proba[answer] == pytest.approx(v / total, rel=1e-6)


def test_a_factorised_view_searches_per_image_with_each_part_weighing_the_same():
    rng = np.random.default_rng(1)
    tokens, width = 4, 6
    image = rng.normal(size=(60, tokens * width)).astype(np.float32)
    row = rng.integers(0, 60, 700)
    question = rng.normal(size=(700, 5)).astype(np.float32)
    y = rng.integers(0, 3, 700)
    X = FactorizedFeatures(image, row, question, tokens)
    train, test = np.arange(550), np.arange(550, 700)
    head = KNNHead(k=9, query_rows=13, block_rows=64).fit(X[train], y[train])

    def direct(rows):  # each token L2-normalised, then each part, each part weighing 1/2 of the cosine
        img = unit(unit(image.astype(np.float64).reshape(60, tokens, width)).reshape(60, -1))
        return np.concatenate([img[row[rows]], unit(question[rows].astype(np.float64))], axis=1) / np.sqrt(2)

    s_ref, idx_ref, proba_ref = numpy_knn(direct(train), direct(test), y[train], 3, 9, 0.07)
    sims, idx = head.kneighbors(X[test])
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_allclose(sims, np.take_along_axis(direct(test) @ direct(train).T, idx_ref, 1), atol=1e-6)
    np.testing.assert_allclose(head.predict_proba(X[test]), proba_ref, atol=1e-5)
    # the plain matrix of the same rows gives the same answers (it is cut into the parts the head was fitted on)
    np.testing.assert_allclose(head.predict_proba(np.asarray(X[test])), proba_ref, atol=1e-5)


def test_probabilities_do_not_depend_on_the_batch(plain):
    X, y = plain
    head = KNNHead().fit(X[:400], y[:400])
    whole = head.predict_proba(X[400:])
    parts = np.concatenate([head.predict_proba(X[400 + s:400 + s + 9]) for s in range(0, 100, 9)])
    np.testing.assert_array_equal(whole, parts)


def test_faiss_finds_the_same_neighbours(plain):
    pytest.importorskip("faiss")
    X, y = plain
    torch_head = KNNHead(k=10, backend="torch").fit(X[:400], y[:400])
    faiss_head = KNNHead(k=10, backend="faiss").fit(X[:400], y[:400])
    np.testing.assert_array_equal(torch_head.kneighbors(X[400:])[1], faiss_head.kneighbors(X[400:])[1])
    np.testing.assert_allclose(torch_head.predict_proba(X[400:]), faiss_head.predict_proba(X[400:]), atol=1e-12)


def test_more_neighbours_than_rows_and_bad_parameters(plain):
    X, y = plain
    head = KNNHead(k=50).fit(X[:30], y[:30])
    assert head.kneighbors(X[:3])[1].shape == (3, 30)
    for bad in (dict(k=0), dict(temperature=0), dict(metric="l2"), dict(backend="annoy")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            KNNHead(**bad).fit(X, y)


def test_a_saved_knn_predicts_the_same(plain, tmp_path):
    X, y = plain
    head = KNNHead(k=7).fit(X[:400], y[:400].astype(str))
    TrainedHead(head, "pooled", {}, "train").save(tmp_path / "knn")
    loaded = TrainedHead.load(tmp_path / "knn").head
    np.testing.assert_array_equal(loaded.predict_proba(X[400:]), head.predict_proba(X[400:]))
    assert list(loaded.classes_) == list(head.classes_)


@pytest.mark.parametrize("block", [None, 7])
def test_a_sweep_chooses_k_on_validation_from_one_search(tmp_path, monkeypatch, block):
    """(block: evaluation's rows at a time, heads.predictions.PREDICT_ROWS; a sweep's VQAv2 validation rows are
    ten blocks, each scored with its own rows' votes)"""
    from heads import predictions
    from heads.sweep_fit import _Voted

    if block:
        monkeypatch.setattr(predictions, "PREDICT_ROWS", block)
        calls = []
        real = _Voted.predict_proba
        monkeypatch.setattr(_Voted, "predict_proba", lambda self, X: calls.append(len(X)) or real(self, X))
    from featcache import open_cache
    from featcache.cache.synthetic import write_synthetic_cache
    from heads.evaluate import all_labels, evaluate, primary_score
    from heads.sweep import run_sweep
    from heads.sweep_fit import image_disjoint_split

    path = write_synthetic_cache(tmp_path / "c.h5", 150, 40, 1400, 380, noise=3.0)
    result = run_sweep(path, heads=["knn"], views=["pooled"], grid="default", progress=False)
    (row,) = result.rows
    with open_cache(path) as cache:
        X, y = cache.view("pooled", "train")
        _, ye = cache.view("pooled", "test")
    tr, va = image_disjoint_split(X, 0.1, 0)
    direct = {k: primary_score(evaluate(KNNHead(k=k).fit(X[tr], y[tr]), X[va], y[va], all_labels(y, ye)))
              for k in (10, 20, 100, 200)}
    assert row["validation_accuracy"] == pytest.approx(max(direct.values()))
    assert direct[row["params"]["k"]] == max(direct.values())
    if block:  # each block of rows got its own probabilities, not the whole validation set's
        assert calls and max(calls) <= block


def test_the_training_images_are_kept_as_given_and_a_head_holding_them_normalised_predicts_the_same():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(50, 12)).astype(np.float16)
    row = np.sort(rng.integers(0, 50, 400))
    question = rng.normal(size=(400, 5)).astype(np.float16)
    y = rng.integers(0, 3, 400)
    X = FactorizedFeatures(image, row, question, 3)
    head = KNNHead(k=7).fit(X, y)
    assert head.train_.image.dtype == torch.float16 and np.shares_memory(head.train_.image.numpy(), image)
    expected = head.predict_proba(X[:60])
    old = KNNHead(k=7).fit(X, y)  # as saved by earlier versions: the image part normalised, in float32
    old.train_ = old._normalised(old._parts(X))
    old.raw_image_ = False
    np.testing.assert_array_equal(old.predict_proba(X[:60]), expected)
