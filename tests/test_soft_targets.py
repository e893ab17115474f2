"""Heads on soft targets (VQA's soft scores): the losses are the ones they name, checked against scikit-learn;
soft targets pass through GridSearchCV with X and y; a soft-score MLP stops on the VQA score of its answers."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.multiclass import OneVsRestClassifier

from heads.linear import LogisticRegressionHead
from heads.mlp import MLPHead
from heads.targets import SoftTargets


def problem(n=300, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = np.array(["a", "b", "c"])[np.argmax(X[:, :k] + 0.5 * rng.normal(size=(n, k)), axis=1)]
    return X, y


def one_hot(y):
    return np.array([{label: 1.0} for label in y], dtype=object)


def test_soft_cross_entropy_on_one_hot_targets_is_cross_entropy():
    X, y = problem()
    ce = LogisticRegressionHead(C=0.5, loss="ce").fit(X, y)
    soft = LogisticRegressionHead(C=0.5, loss="soft_ce").fit(X, y, soft_targets=one_hot(y))
    np.testing.assert_allclose(soft.predict_proba(X), ce.predict_proba(X), atol=1e-6)


def test_bce_on_one_hot_targets_is_scikit_learns_one_vs_rest_logistic_regression():
    """Summed over answers, BCE + ||W||^2 / (2 C n) splits into one C-regularised logistic regression per answer."""
    X, y = problem()
    ours = LogisticRegressionHead(C=0.5, loss="bce", standardize=False, max_iter=500, tol=1e-7)
    ours.fit(X, y, soft_targets=one_hot(y))
    ref = OneVsRestClassifier(LogisticRegression(C=0.5, tol=1e-8, max_iter=2000)).fit(X, y)
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), atol=2e-3)
    assert ours.loss_function_ == "bce"


def test_soft_targets_are_sliced_by_grid_search_and_loss_auto_picks_bce():
    X, y = problem()
    soft = np.array([{label: 1.0, "b": 0.3} if label != "b" else {"b": 1.0} for label in y], dtype=object)
    search = GridSearchCV(LogisticRegressionHead(), {"C": [0.1, 1.0]}, cv=3).fit(X, y, soft_targets=soft)
    assert search.best_estimator_.loss_function_ == "bce" and search.score(X, y) > 0.6
    with pytest.raises(ValueError, match="soft_targets has 2 rows"):
        LogisticRegressionHead().fit(X, y, soft_targets=soft[:2])
    with pytest.raises(ValueError, match=r"soft scores lie in \[0, 1\]"):
        LogisticRegressionHead().fit(X, y, soft_targets=np.array([{"a": 3.0}] * len(y), dtype=object))


def test_an_mlp_on_soft_scores_stops_on_the_score_of_its_answers():
    X, y = problem(n=400)
    soft = np.array([{label: 1.0, "a": 0.3} if label != "a" else {"a": 1.0} for label in y], dtype=object)
    head = MLPHead(hidden_sizes=(16,), max_epochs=8, patience=8, random_state=0).fit(X, y, soft_targets=soft)
    assert head.loss_function_ == "bce"
    # the validation figure is the mean soft score of the predicted answers (on exact VQA soft scores: the VQA
    # accuracy), here on the held-out 10% (the first rows of the seed's permutation)
    val = np.sort(np.random.default_rng(0).permutation(len(y))[:40])
    targets = SoftTargets.build(soft, head.classes_, np.searchsorted(head.classes_, y))
    pred = np.searchsorted(head.classes_, head.predict(X[val]))
    scores = targets.score_of(val, pred)
    assert head.best_validation_score_ == pytest.approx(scores.mean(), abs=1.5 / len(val))
    assert np.isclose(scores, 0.3).any() or np.isclose(scores, 1.0).all()  # partial credit is counted
