"""Fast reads of a cache give what the plain reads gave: the stored mean of the query states equals pooling them
on read, several splits read at once equal each split read alone, and references parse as one JSON text each."""

import h5py
import numpy as np
import pytest

from featcache import open_cache
from featcache.cache.answers import json_lists
from featcache.cache.pooling import pool_tokens
from featcache.extract import Compute, Spread, Storage, extract

SETTINGS = dict(compute=Compute(batch_size=2, workers=0), storage=Storage(shard_size=4), progress=False)


def without(path, dataset: str, out):
    """A copy of the cache file at `path` without `dataset` (as caches written before it was stored)."""
    with h5py.File(path, "r") as src, h5py.File(out, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for group in src:
            dst.create_group(group)
            for name in src[group]:
                if f"{group}/{name}" != dataset:
                    src.copy(src[group][name], dst[group], name)
    return out


@pytest.fixture
def cache_file(small_dataset, backbone, tmp_path):
    path = tmp_path / "c.h5"
    extract(small_dataset, path, model=backbone, **SETTINGS)
    return path


def test_extraction_stores_the_pooled_query_states_and_views_equal_pooling_on_read(cache_file, tmp_path):
    old = without(cache_file, "images/query_pooled", tmp_path / "old.h5")
    with open_cache(cache_file) as new, open_cache(old) as before:
        np.testing.assert_array_equal(new.read("images", "query_pooled"), pool_tokens(new.read("images", "query")))
        assert "query_pooled" not in before.images
        for view in ("pooled", "image"):
            for split in ("train", "test"):
                for stream in (False, True):
                    X, y = new.view(view, split, stream=stream)
                    X0, y0 = before.view(view, split, stream=stream)
                    np.testing.assert_array_equal(np.asarray(X), np.asarray(X0), err_msg=f"{view} {split} {stream}")
                    np.testing.assert_array_equal(y, y0)


@pytest.mark.parametrize("sharded", [False, True])
def test_split_views_equal_each_split_read_alone(small_dataset, backbone, tmp_path, sharded):
    path = tmp_path / "c.h5"
    extract(small_dataset, path, model=backbone, **SETTINGS, spread=Spread(merge_output=not sharded))
    with open_cache(str(path) + ".parts" if sharded else path) as cache:
        for view in [v for v, why in cache.views().items() if not why]:
            for splits in (["train", "test"], ["test", "train"]):
                together = cache.split_views(view, splits)
                for split, (X, y) in zip(splits, together):
                    X0, y0 = cache.view(view, split)
                    np.testing.assert_array_equal(np.asarray(X), np.asarray(X0), err_msg=f"{view} {split}")
                    np.testing.assert_array_equal(y, y0)
        with pytest.raises(Exception, match="no usable questions in split 'nope'"):
            cache.split_views("itc", ["train", "nope"])


def test_json_lists_parse_as_one_text_each():
    texts = ['["a", "b"]', "[]", '["1,2", "x]"]', '["\\u00e9t\\u00e9"]', "[1]"]
    assert json_lists(texts) == [["a", "b"], [], ["1,2", "x]"], ["été"], [1]]
    with pytest.raises(ValueError):
        json_lists(['[1], [2]', "[3]"])  # one text that is two lists is not one JSON text
    with pytest.raises(ValueError):
        json_lists(['["a"]', ""])


def test_a_benchmark_split_read_with_its_view_in_a_thread_equals_the_reads_one_after_another(tmp_path, monkeypatch):
    from pathlib import Path

    from heads.benchmarks import read_splits, soft_targets, split_references

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from vqav2_synthetic import write_cache  # (the VQAv2-format cache of benchmarks/vqav2_heads.py, tiny)

    path = tmp_path / "vqa.h5"
    write_cache(path, 0.002)
    with open_cache(path) as cache:
        data = read_splits(cache, "itc", ["train", "val"])
    with open_cache(path) as cache:
        views = cache.split_views("itc", ["train", "val"])
        refs = [split_references(cache, split) for split in ("train", "val")]
    for (X, y), (X0, y0) in zip(data.views, views):
        np.testing.assert_array_equal(np.asarray(X.image_part), np.asarray(X0.image_part))
        np.testing.assert_array_equal(np.asarray(X.question_part), np.asarray(X0.question_part))
        np.testing.assert_array_equal(X.image_row, X0.image_row)
        assert list(y) == list(y0)
    assert [r.answers for r in data.references] == [r.answers for r in refs]
    assert list(data.soft) == list(soft_targets(refs[0])) and len(data.soft) == len(views[0][1])
