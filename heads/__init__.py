"""CPU classifiers over BLIP-2 feature caches, as scikit-learn estimators.

    cache = featcache.open_cache("easyvqa.h5")
    X, y = cache.view("itc", split="train")
    LogisticRegressionHead().fit(X, y).score(*cache.view("itc", split="test"))

Importing this package never imports transformers.
"""

from .attnpool import AttentionPoolHead
from .gbm import LightGBMHead
from .knn import KNNHead
from .linear import LogisticRegressionHead
from .mlp import ClassifierNet, MLPHead

__all__ = ["AttentionPoolHead", "ClassifierNet", "KNNHead", "LightGBMHead", "LogisticRegressionHead", "MLPHead"]
