"""Files written by featcache 0.1 keep opening, and read as 0.1 read them (tests/fixtures/v0.1)."""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import featcache
from cli import main
from featcache.finetune.checkpoints import load_model
from featcache.cache.pooling import pool_tokens
from featcache.extract import merge_parts
from heads.trained import load_head
from tests.test_extract import assert_same_file

V01 = Path(__file__).parent / "fixtures" / "v0.1"
EXPECTED = json.loads((V01 / "expected.json").read_text())


@pytest.mark.parametrize("name", ["cache.h5", "parts.h5.parts"])
def test_caches_of_0_1_read_as_they_did(name):
    want = EXPECTED[name]
    with featcache.open_cache(V01 / name) as c:
        X, y = c.view("itc", split="train")
        Xt, _ = c.view("pooled", split="test")
        assert (c.n_images, c.n_questions) == (want["n_images"], want["n_questions"])
        assert c.attrs["model_fingerprint"] == want["model_fingerprint"]
        assert [str(k) for k in c.strings("images", "key")] == want["keys"]
        assert list(np.asarray(X).shape) == want["itc_train_shape"]
        assert float(np.asarray(X, dtype=np.float64).sum()) == pytest.approx(want["itc_train_sum"], abs=1e-9)
        assert float(np.asarray(Xt, dtype=np.float64).sum()) == pytest.approx(want["pooled_test_sum"], abs=1e-9)
        assert [str(a) for a in y] == want["train_answers"]


def test_parts_folder_of_0_1_merges_to_its_single_file(tmp_path):
    parts = tmp_path / "parts.h5.parts"
    shutil.copytree(V01 / "parts.h5.parts", parts)
    merge_parts(parts, tmp_path / "merged.h5")
    # the 0.1 file, plus the mean of the query states that writers now store (bit-equal to pooling on read)
    with h5py.File(tmp_path / "merged.h5", "a") as f:
        np.testing.assert_array_equal(f["images/query_pooled"][()], pool_tokens(f["images/query"][()]))
        del f["images/query_pooled"]
    assert_same_file(tmp_path / "merged.h5", V01 / "cache.h5")


@pytest.mark.parametrize("name", ["cache.h5", "parts.h5.parts"])
def test_info_and_verify_accept_0_1_caches(name):
    for command in ("info", "verify"):
        r = CliRunner().invoke(main, [command, str(V01 / name)])
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output


def test_head_of_0_1_loads_and_predicts_as_it_did():
    want = EXPECTED["head"]
    trained = load_head(V01 / "head")
    assert trained.view == want["view"] and [str(k) for k in trained.head.classes_] == want["classes"]
    with featcache.open_cache(V01 / "cache.h5") as c:
        X, _ = c.view(trained.view, split="test")
        assert [str(p) for p in trained.head.predict(X)] == want["test_predictions"]
        np.testing.assert_allclose(trained.head.predict_proba(X), want["test_proba"], atol=2e-6)


def test_finetune_checkpoint_of_0_1_loads():
    want = EXPECTED["ft/best"]
    ft = load_model(V01 / "finetune" / "best")
    assert ft["labels"] == want["labels"] and ft.get("base_model") == want["base_model"]
    assert {part: sorted(s) for part, s in ft["adapters"].items()} == want["adapters"]
    assert {k: list(v.shape) for k, v in sorted(ft["head"].items())} == want["head_shapes"]
