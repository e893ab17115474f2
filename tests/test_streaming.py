"""Heads over caches larger than memory: a streamed view (`cache.view(..., stream=True)`) leaves the
images on disk, heads read them block by block, and the fitted heads equal the in-memory ones."""

import re

import numpy as np
import pytest

from featcache import open_cache
from featcache.extract import Compute, Spread, Storage, extract
from featcache.cache.synthetic import write_synthetic_cache
from heads import AttentionPoolHead, LightGBMHead, LogisticRegressionHead, MLPHead

BLOCK = 64  # images per block: the synthetic cache below has 360, so every fit streams several blocks


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("stream") / "syn.h5", n_train_images=300, n_test_images=60,
                                 n_train_questions=2400, n_test_questions=480, query_tokens=4, query_dim=24,
                                 proj_dim=8, seed=3)


HEADS = {
    "lr": lambda: LogisticRegressionHead(C=0.5, max_iter=40, block_images=BLOCK),
    "mlp": lambda: MLPHead(hidden_sizes=(32,), max_epochs=4, batch_size=64, block_images=BLOCK),
    "mlp-paper-normalisation": lambda: MLPHead(hidden_sizes=(32,), max_epochs=3, batch_size=64, normalize="token",
                                               standardize=False, block_images=BLOCK),
    "lgbm": lambda: LightGBMHead(n_components=6, n_estimators=20, pca_max_rows=100, num_threads=1),
    "attnpool": lambda: AttentionPoolHead(max_epochs=3, batch_size=64, block_images=BLOCK),
}


def _count_reads(cache, monkeypatch) -> list[int]:
    """Record how many image rows each read of the cache returns."""
    sizes, read = [], cache.read

    def counting(group, name, rows=slice(None)):
        out = read(group, name, rows)
        if group == "images":
            sizes.append(len(out))
        return out

    monkeypatch.setattr(cache, "read", counting)
    return sizes


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("view", ["itc", "full"])
def test_a_streamed_fit_equals_the_in_memory_fit(cache_path, head, view, monkeypatch):
    monkeypatch.setattr("heads.gbm.ROWS_PER_READ", 64)  # LightGBM's batches of rows: a few images each
    with open_cache(cache_path) as cache:
        X, y = cache.view(view, "train")
        Xt, yt = cache.view(view, "test")
        S, ys = cache.view(view, "train", stream=True)
        St, _ = cache.view(view, "test", stream=True)
        assert S.streamed and not X.streamed and list(ys) == list(y)
        np.testing.assert_array_equal(np.asarray(S), np.asarray(X))  # the same numbers, read later
        memory = HEADS[head]().fit(X, y)
        reads = _count_reads(cache, monkeypatch)
        streamed = HEADS[head]().fit(S, ys)
        # a block of images at a time (read as the cache range it spans, at most twice its rows; LightGBM:
        # its PCA sample of 100 rows, then batches of 64 rows), never the whole view
        limit = 200 if head == "lgbm" else 2 * BLOCK
        assert reads and max(reads) <= limit < len(X.image_part), (max(reads), len(X.image_part))
        np.testing.assert_allclose(streamed.predict_proba(St), memory.predict_proba(Xt), rtol=0, atol=1e-6)
        assert (streamed.predict(St) == memory.predict(Xt)).all()
        assert streamed.score(St, yt) == memory.score(Xt, yt)


def test_blocks_do_not_change_a_small_fit(cache_path):
    """Fewer images than a block: one block, the same fit as before blocks existed (and as a big block)."""
    with open_cache(cache_path) as cache:
        X, y = cache.view("itc", "train")
        Xt, _ = cache.view("itc", "test")
    for make in (lambda b: LogisticRegressionHead(max_iter=30, block_images=b),
                 lambda b: MLPHead(hidden_sizes=(16,), max_epochs=2, block_images=b)):
        np.testing.assert_array_equal(make(10_000).fit(X, y).predict_proba(Xt), make(400).fit(X, y).predict_proba(Xt))


def test_streaming_reads_the_sharded_form(small_dataset, backbone, tmp_path):
    extract(small_dataset, tmp_path / "c.h5", model=backbone, progress=False, compute=Compute(batch_size=2, workers=0),
            storage=Storage(shard_size=3), spread=Spread(merge_output=False))
    with open_cache(tmp_path / "c.h5.parts") as parts:
        X, y = parts.view("pooled")
        S, _ = parts.view("pooled", stream=True)
        np.testing.assert_array_equal(np.asarray(S), np.asarray(X))
        a = LogisticRegressionHead(max_iter=20, block_images=4).fit(X, y)
        b = LogisticRegressionHead(max_iter=20, block_images=4).fit(S, y)
        np.testing.assert_allclose(b.predict_proba(S), a.predict_proba(X), atol=1e-6)


def test_the_sim_view_is_not_streamed(cache_path):
    from featcache.errors import CacheFormatError

    with open_cache(cache_path) as cache, pytest.raises(CacheFormatError, match="cannot be streamed"):
        cache.view("sim", stream=True)


def test_the_cli_streams_with_the_same_results(cache_path, tmp_path):
    from click.testing import CliRunner

    from cli import main

    runner = CliRunner()
    rows = {}
    for mode in ("memory", "stream"):
        flag = ["--stream"] if mode == "stream" else []
        r = runner.invoke(main, ["sweep", str(cache_path), "--heads", "lr,mlp", "--views", "itc,sim", "--jobs", "2",
                                 "--out", str(tmp_path / mode), *flag])
        assert r.exit_code == 0, r.output
        rows[mode] = re.findall(r"(?:lr|mlp) +(?:itc|sim) +acc [0-9.]+  macro-F1 [0-9.]+", r.output)
        r = runner.invoke(main, ["evaluate", str(tmp_path / mode / "best"), str(cache_path), "--out",
                                 str(tmp_path / f"ev-{mode}"), *flag])
        assert r.exit_code == 0 and "accuracy" in r.output, r.output
        rows[mode].append(r.output.splitlines()[0])
        r = runner.invoke(main, ["fit", str(cache_path), "--head", "lr", "--view", "full", "--out",
                                 str(tmp_path / f"fit-{mode}"), *flag])
        assert r.exit_code == 0, r.output
    assert rows["stream"] == rows["memory"] and len(rows["memory"]) == 5
