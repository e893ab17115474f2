"""Heads learn, the factorised path equals the materialised one, models round-trip, views work."""

import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.base import clone

from featcache import open_cache
from featcache.errors import CacheFormatError
from featcache.extract import Compute, extract
from featcache.cache.synthetic import write_synthetic_cache
from featcache.cache.views import FactorizedFeatures
from heads import LightGBMHead, LogisticRegressionHead, MLPHead


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = write_synthetic_cache(tmp_path_factory.mktemp("syn") / "syn.h5", 300, 100, 3000, 1000,
                                 query_tokens=8, query_dim=48, proj_dim=24, noise=1.0)
    with open_cache(path) as cache:
        yield {v: (cache.view(v, "train"), cache.view(v, "test")) for v in ("pooled", "itc", "full", "sim")}


HEADS = [LogisticRegressionHead(), MLPHead(max_epochs=15), LightGBMHead(n_estimators=100)]


@pytest.mark.parametrize("head", HEADS, ids=lambda h: type(h).__name__)
@pytest.mark.parametrize("view", ["pooled", "itc"])
def test_heads_learn_the_signal(synthetic, head, view):
    (X, y), (Xt, yt) = synthetic[view]
    majority = max(np.mean(yt == c) for c in np.unique(yt))
    acc = head.fit(X, y).score(Xt, yt)
    # colour and shape questions (2/3 of them) are linearly separable; yes/no needs an interaction
    assert acc > 0.75 and acc > majority + 0.4, (acc, majority)
    assert set(head.classes_) == set(np.unique(y)) and head.classes_.dtype == object
    assert head.n_features_in_ == X.shape[1]


def test_views_keep_float16_and_share_images(synthetic):
    (X, y), _ = synthetic["itc"]
    assert isinstance(X, FactorizedFeatures)
    assert X.image_part.dtype == np.float16 and X.question_part.dtype == np.float16
    assert len(X.image_part) == 300 < len(X) == 3000  # the image part is stored once per image
    assert np.asarray(X).dtype == np.float32 and np.asarray(X).shape == X.shape == (3000, 8 * 24 + 24)


@pytest.mark.parametrize("view", ["itc", "full"])
def test_factorised_logistic_regression_equals_materialised(synthetic, view):
    (X, y), (Xt, yt) = synthetic[view]
    Xd, Xtd = np.asarray(X), np.asarray(Xt)
    # the same L-BFGS steps on both paths: equal to float tolerance
    fact = LogisticRegressionHead(max_iter=10, tol=0).fit(X, y)
    mat = LogisticRegressionHead(max_iter=10, tol=0).fit(Xd, y)
    np.testing.assert_allclose(fact.predict_proba(Xt), mat.predict_proba(Xtd), atol=1e-5)
    # run to convergence, the flat directions of the optimum let rounding differ, not the answers
    fact = LogisticRegressionHead(max_iter=300).fit(X, y)
    mat = LogisticRegressionHead(max_iter=300).fit(Xd, y)
    assert np.mean(fact.predict(Xt) == mat.predict(Xtd)) > 0.99
    assert abs(fact.loss_ - mat.loss_) < 1e-4


def test_factorised_and_plain_inputs_are_interchangeable(synthetic):
    """A head fitted on a factorised view predicts the same from the materialised matrix, and back."""
    (X, y), (Xt, _) = synthetic["itc"]
    for head in (MLPHead(max_epochs=3, normalize="token"), LogisticRegressionHead(max_iter=20)):
        head.fit(X, y)
        np.testing.assert_allclose(head.predict_proba(Xt), head.predict_proba(np.asarray(Xt)), atol=1e-5)
    plain = LogisticRegressionHead(max_iter=20).fit(np.asarray(X), y)
    np.testing.assert_allclose(plain.predict_proba(Xt), plain.predict_proba(np.asarray(Xt)), atol=1e-6)


def test_reference_preset_is_the_papers_classifier(synthetic):
    """8,448 -> 5,012 -> 2,056 -> 1,024 -> 512 -> classes on the itc view; Linear -> ReLU -> BatchNorm1d ->
    Dropout(0.5) per hidden layer; the paper's optimiser settings."""
    from torch import nn

    (X, y), _ = synthetic["itc"]
    head = MLPHead.reference(max_epochs=1)
    params = head.get_params()
    assert (params["lr"], params["weight_decay"], params["l1"], params["t_max"], params["eta_min"]) == \
        (1e-4, 1e-6, 0.01, 500, 1e-6)
    assert params["scheduler"] == "cosine" and params["normalize"] == "token" and not params["standardize"]
    head.fit(X[:400], y[:400])
    net = head.net_
    first = net.first
    assert first.image.in_features + first.question.in_features == X.shape[1]  # 8,448 on blip2-itm-vit-g
    assert first.image.out_features == 5012
    kinds = [next(k for k in (nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear) if isinstance(m, k)) for m in net.rest]
    assert kinds == [nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear] * 4  # (heads.mlp.Dropout: nn.Dropout's mask faster)
    linears = [m for m in net.rest if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == \
        [(5012, 2056), (2056, 1024), (1024, 512), (512, len(head.classes_))]
    assert all(m.p == 0.5 for m in net.rest if isinstance(m, nn.Dropout))


def test_compact_preset_learns(synthetic):
    (X, y), (Xt, yt) = synthetic["itc"]
    head = MLPHead.compact()
    params = head.get_params()
    assert params["hidden_sizes"] == (512,) and params["normalize"] == "token" and params["l1"] == 0.01
    assert params["lr"] == 1e-3 and params["scheduler"] is None  # the paper's 1e-4 is for its 55 M weights
    majority = max(np.mean(yt == c) for c in np.unique(yt))
    assert head.fit(X, y).score(Xt, yt) > majority + 0.3


def test_mlp_is_deterministic_under_a_seed(synthetic):
    (X, y), (Xt, _) = synthetic["pooled"]
    a = MLPHead(max_epochs=3, random_state=7).fit(X, y).predict_proba(Xt)
    b = MLPHead(max_epochs=3, random_state=7).fit(X, y).predict_proba(Xt)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("view", ["pooled", "itc"])
@pytest.mark.parametrize("head", HEADS, ids=lambda h: type(h).__name__)
def test_safe_save_load_round_trip(synthetic, head, view, tmp_path):
    """A saved head is JSON + safetensors only and reloads to bit-identical probabilities."""
    from heads.trained import TrainedHead, load_head

    (X, y), (Xt, _) = synthetic[view]
    head = clone(head).fit(X, y)
    saved = TrainedHead(head, view, {"model_id": "m"}, "train", "x", {"a": (1, 2)}).save(tmp_path / "h")
    assert sorted(p.name for p in saved.iterdir()) == ["featcache.json", "tensors.safetensors"]
    back = load_head(saved)
    assert type(back.head) is type(head) and back.head.get_params() == head.get_params()
    np.testing.assert_array_equal(back.head.predict_proba(Xt), head.predict_proba(Xt))
    np.testing.assert_array_equal(back.head.predict(np.asarray(Xt)), head.predict(np.asarray(Xt)))
    assert list(back.head.classes_) == list(head.classes_) and back.view == view


@pytest.mark.parametrize("head", HEADS, ids=lambda h: type(h).__name__)
def test_pickle_and_joblib_round_trip(synthetic, head, tmp_path):
    (X, y), (Xt, _) = synthetic["pooled"]
    head.fit(X, y)
    expected = head.predict_proba(Xt)
    joblib.dump(head, tmp_path / "h.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "h.joblib").predict_proba(Xt), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(head)).predict(Xt), head.predict(Xt))


def test_views_on_a_tiny_model_cache(small_dataset, backbone, tmp_path):
    extract(small_dataset, tmp_path / "c.h5", model=backbone, progress=False, compute=Compute(workers=0))
    n_train = sum(q.split == "train" for q in small_dataset.questions)
    with open_cache(tmp_path / "c.h5") as cache:
        views = cache.views()
        assert {v for v, why in views.items() if not why} == {"itc", "pooled", "full", "sim", "image", "image_proj"}
        assert "--features multimodal" in views["mm"]  # a unimodal cache names how to get the conditioned ones
        shapes = {v: cache.view(v, "train")[0].shape for v in ("itc", "pooled", "full", "sim", "image", "image_proj")}
        X, y = cache.view("itc", "train")
        assert list(y) == [q.answer for q in small_dataset.questions if q.split == "train"]
        row = 0  # first train question's features are its image's query_proj and its own text_proj
        img = cache.array("images", "query_proj")[cache.array("questions", "image_row")[row]].reshape(-1)
        np.testing.assert_array_equal(np.asarray(X)[row], np.concatenate([img, cache.array("questions", "text_proj")[row]]))
    assert shapes == {"itc": (n_train, 32 * 16 + 16), "pooled": (n_train, 32 + 16), "full": (n_train, 32 * 32 + 32),
                      "sim": (n_train, 32), "image": (n_train, 32), "image_proj": (n_train, 32 * 16)}
    LogisticRegressionHead().fit(*shapes and open_cache(tmp_path / "c.h5").view("pooled", "train"))


def test_generative_cache_offers_image_view_only(small_dataset, tiny_opt, tmp_path):
    extract(small_dataset, tmp_path / "g.h5", model=str(tiny_opt), progress=False, compute=Compute(workers=0))
    with open_cache(tmp_path / "g.h5") as cache:
        available = [v for v, why in cache.views().items() if not why]
        assert available == ["image"]
        with pytest.raises(CacheFormatError, match="(?s)view 'itc' needs /images/query_proj.*Available views: image"):
            cache.view("itc", "train")
        X, _ = cache.view("image", "train")
        assert X.shape[1] == 32


def test_importing_heads_does_not_import_transformers():
    code = "import sys, heads, featcache; featcache.open_cache; assert 'transformers' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lightgbm_results_do_not_depend_on_the_thread_count(synthetic):
    """Its default thread count follows the machine's load, so this must hold for results to be reproducible."""
    (X, y), (Xt, _) = synthetic["pooled"]
    a = LightGBMHead(n_estimators=30, num_threads=1).fit(X, y).predict_proba(Xt)
    b = LightGBMHead(n_estimators=30, num_threads=2).fit(X, y).predict_proba(Xt)
    np.testing.assert_array_equal(a, b)
