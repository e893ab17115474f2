"""Every head is a proper scikit-learn estimator."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from heads import AttentionPoolHead, KNNHead, LightGBMHead, LogisticRegressionHead, MLPHead

# Small but honest settings so the ~40 checks per head stay fast.
ESTIMATORS = [
    LogisticRegressionHead(),
    MLPHead(hidden_sizes=(32,), max_epochs=40, batch_size=32, lr=1e-2, validation_fraction=0.0),
    LightGBMHead(n_estimators=30, min_child_samples=2, n_components=None, validation_fraction=0.0),
    KNNHead(),
    AttentionPoolHead(max_epochs=40, batch_size=32, lr=1e-2, validation_fraction=0.0),  # a plain matrix: one token
]

# No check is expected to fail: every head passes the whole suite.


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    check(estimator)
