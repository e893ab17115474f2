"""Evaluation holds a block of probabilities at a time (VQAv2 val's would be 5.4 GB in float64): the metrics, the
benchmark's figures and the top 5 are those of the whole probability matrix, and a small subset of a factorised
view keeps only its own images (a validation part does not read every image of the training split)."""

import numpy as np
import pytest

from featcache.cache.answers import References
from featcache.cache.views import FactorizedFeatures
from heads import KNNHead, LogisticRegressionHead
from heads import predictions
from heads.benchmarks import mc_choices
from heads.evaluate import evaluate, top_k_accuracy


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    answers = np.array(["unanswerable", "red", "blue", "two", "yes", "no", "cat"], dtype=object)
    image = rng.normal(size=(40, 12)).astype(np.float16)
    row = np.sort(rng.integers(0, 40, 300))
    question = rng.normal(size=(300, 4)).astype(np.float16)
    y = answers[(row + (question[:, 0] > 0)) % len(answers)]
    return FactorizedFeatures(image, row, question, 3), y, answers


def references(y, metric, answers):
    rng = np.random.default_rng(1)
    n = len(y)
    humans = [[str(label)] * 6 + [str(a) for a in rng.choice(answers, 4)] for label in y]
    choices = [sorted({str(label), *map(str, rng.choice(answers, 3))}) for label in y]
    kinds = ["unanswerable" if label == "unanswerable" else "other" for label in y]
    flags = ["unanswerable" if label == "unanswerable" else "answerable" for label in y]
    return References([str(i) for i in range(n)], humans, kinds, flags if metric == "vizwiz" else kinds, choices,
                      metric, [str(label) for label in y])


@pytest.mark.parametrize("metric", ["vqa", "vizwiz", "aokvqa"])
@pytest.mark.parametrize("kind", ["lr", "knn"])
def test_metrics_in_blocks_equal_those_of_the_whole_matrix(data, monkeypatch, metric, kind):
    X, y, answers = data
    head = (LogisticRegressionHead(C=1.0) if kind == "lr" else KNNHead(k=5)).fit(X[:200], y[:200])
    Xe, ye = X[200:], y[200:]
    refs = references(ye, metric, answers)
    whole = evaluate(head, Xe, ye, references=refs, keep_outputs=True)
    monkeypatch.setattr(predictions, "PREDICT_ROWS", 7)
    blocks = evaluate(head, Xe, ye, references=refs, keep_outputs=True)
    for metrics in (whole, blocks):  # both as computed from the whole matrix directly
        proba = head.predict_proba(Xe)
        assert metrics["accuracy"] == pytest.approx(np.mean(head.classes_[np.argmax(proba, 1)] == ye))
        assert metrics["top5_accuracy"] == pytest.approx(top_k_accuracy(ye, proba, head.classes_, 5))
        np.testing.assert_array_equal(metrics["outputs"].top[:, 0], np.argmax(proba, 1))
    for key in ("accuracy", "macro_f1", "top5_accuracy", "benchmark", "submission"):
        assert whole[key] == blocks[key], key
    np.testing.assert_array_equal(whole["outputs"].top, blocks["outputs"].top)
    if metric == "aokvqa":  # each row's multiple-choice answer from its own probabilities
        mc = mc_choices(head.predict_proba(Xe), head.classes_, refs)
        assert [v["multiple_choice"] for v in blocks["submission"].values()] == mc
    if metric == "vizwiz":  # answerability: 1 - the probability of "unanswerable"
        column = list(head.classes_).index("unanswerable")
        expected = np.round(1 - head.predict_proba(Xe)[:, column], 6)
        np.testing.assert_allclose([r["answerable"] for r in blocks["submission"]], expected)


def test_a_small_subset_of_a_factorised_view_keeps_only_its_images(data):
    X, y, _ = data
    few = np.array([3, 17, 250])
    sub = X[few]
    assert len(sub.image_part) == len(np.unique(X.image_row[few])) < len(X.image_part)
    np.testing.assert_array_equal(np.asarray(sub), np.asarray(X)[few])
    most = X[np.arange(10, 300)]  # a training part: the image array is shared, not copied
    assert most.image_part is X.image_part
    np.testing.assert_array_equal(np.asarray(most), np.asarray(X)[10:])


def test_the_top_5_sorted_a_few_rows_at_a_time_is_that_of_one_sort_ties_included(monkeypatch):
    rng = np.random.default_rng(2)
    proba = rng.choice([0.0, 0.1, 0.2, 0.3], size=(23, 9))  # many ties: the lower class index comes first
    whole = np.argsort(-proba, axis=1, kind="stable")[:, :5]
    monkeypatch.setattr(predictions, "SORT_ROWS", 4)
    out = predictions.Outputs.of(proba, np.arange(9))
    np.testing.assert_array_equal(out.top, whole)
    np.testing.assert_array_equal(out.top_p, np.take_along_axis(proba, whole, 1))
    assert predictions.Outputs.of(proba[:0], np.arange(9)).top.shape == (0, 5)
