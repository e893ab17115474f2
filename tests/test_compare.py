"""featcache compare: one table across report folders and a paired test on the questions two runs share; and
label-issues: cleanlab finds labels flipped on purpose, from out-of-fold probabilities."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import ttest_rel

from cli import main
from featcache.cache.synthetic import write_synthetic_cache
from heads.predictions import read_predictions


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("cmp") / "c.h5", 160, 40, 1500, 400, noise=2.5)


def test_compare_tables_runs_and_tests_them_question_by_question(cache, tmp_path):
    runner = CliRunner()
    for name, heads in (("a", "lr"), ("b", "knn")):
        r = runner.invoke(main, ["sweep", str(cache), "--heads", heads, "--views", "pooled", "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert "shared questions" in r.output
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [row["head"] for row in result["runs"]] == ["lr", "knn"]
    a, b = (read_predictions(tmp_path / n / "predictions.jsonl") for n in "ab")
    sa, sb = np.array([s["score"] for s in a]), np.array([s["score"] for s in b])
    (pair,) = result["paired"]
    assert pair["questions"] == len(a) == len(b)
    assert pair["difference"] == pytest.approx(round(100 * (sb - sa).mean(), 2))
    assert pair["ci95"][0] <= pair["difference"] <= pair["ci95"][1] and 0 <= pair["p_bootstrap"] <= 1
    if (sb != sa).any():
        assert pair["p_ttest"] == pytest.approx(ttest_rel(sb, sa).pvalue, rel=1e-3)
        assert pair["disagreements"] and all(d["baseline_score"] != d["other_score"] for d in pair["disagreements"])
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<script" not in html and "against" in html
    assert (tmp_path / "cmp" / "compare.csv").read_text().count("\n") == 3


def test_compare_names_a_folder_that_is_not_a_report(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "empty")])
    assert r.exit_code != 0 and "not a report folder" in r.output and "Traceback" not in r.output


def test_label_issues_finds_flipped_labels(tmp_path):
    pytest.importorskip("cleanlab")
    flipped_cache = write_synthetic_cache(tmp_path / "flipped.h5", 160, 40, 1500, 400, noise=1.0)
    with h5py.File(flipped_cache, "r+") as f:
        answers = f["questions"]["answer"][:].astype(str)
        split = f["questions"]["split"][:].astype(str)
        train = np.flatnonzero(split == "train")
        colour = [i for i in train if answers[i] in ("red", "green", "blue", "yellow")]
        flipped = np.random.default_rng(0).choice(colour, 30, replace=False)
        swap = {"red": "green", "green": "blue", "blue": "yellow", "yellow": "red"}
        for i in flipped:
            answers[i] = swap[answers[i]]
        f["questions"]["answer"][:] = answers.astype(object)
    r = CliRunner().invoke(main, ["label-issues", str(flipped_cache), "--view", "pooled", "--head", "mlp",
                                  "--out", str(tmp_path / "li")])  # (a linear head cannot answer yes/no here)
    assert r.exit_code == 0, r.output
    issues = [json.loads(line) for line in (tmp_path / "li" / "label_issues.jsonl").read_text().splitlines()]
    top, flagged = {i["row"] for i in issues[:30]}, {i["row"] for i in issues}
    # most flipped labels rank among the 30 most suspicious of the 1,200 training rows (chance: under 1); the rest
    # of the top are real confusions of the synthetic data's noise
    assert len(top & set(flipped.tolist())) >= 20 and len(flagged & set(flipped.tolist())) >= 27
    assert (tmp_path / "li" / "label_issues.html").stat().st_size > 0


def test_compare_names_damaged_report_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text("[1, 2]")
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a")])
    assert r.exit_code != 0 and "not a featcache report" in r.output and "unexpected" not in r.output
    (tmp_path / "a" / "results.json").write_text("{}")
    (tmp_path / "a" / "predictions.jsonl").write_text('[1]\n')
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a")])
    assert r.exit_code != 0 and "line 1 is not a prediction record" in r.output and "unexpected" not in r.output
