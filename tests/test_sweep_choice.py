"""The sweep chooses every hyperparameter, head and view on validation only; minibatch candidates train in one
pass; LightGBM that cannot fit its budget is skipped with a reason the report gives; progress is shown."""

import json

import numpy as np
import pytest

from featcache import open_cache
from featcache.cache.synthetic import write_synthetic_cache
from heads import LightGBMHead


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("choice") / "c.h5", 200, 60, 1600, 480, query_tokens=4,
                                 query_dim=16, proj_dim=8, noise=1.0)


def grid(tmp_path, content):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(content))
    return str(path)


def test_a_candidate_best_on_test_but_worse_on_validation_is_not_chosen(cache, tmp_path, monkeypatch):
    import heads.sweep_fit as sweep_mod
    from heads.sweep import sweep_to_folder

    with open_cache(cache) as c:
        n_test = len(c.view("pooled", "test")[1])
    real = sweep_mod.evaluate

    def rigged(head, X, y, labels=None, refs=None, **kwargs):  # the test split says the weak LightGBM is perfect
        metrics = real(head, X, y, labels, refs, **kwargs)
        if len(y) == n_test:
            metrics["accuracy"] = 1.0 if isinstance(head, LightGBMHead) else 0.0
        return metrics

    monkeypatch.setattr(sweep_mod, "evaluate", rigged)
    g = grid(tmp_path, {"lr": [{"C": 1.0}], "lgbm": [{"n_estimators": 1, "n_components": 2}]})
    rep = sweep_to_folder(cache, tmp_path / "out", heads=["lr", "lgbm"], views=["pooled"], grid=g,
                                    progress=False)
    rows = {r["head"]: r for r in rep.result.rows}
    assert rows["lgbm"]["accuracy"] > rows["lr"]["accuracy"]  # best on test...
    assert rows["lr"]["validation_accuracy"] > rows["lgbm"]["validation_accuracy"]  # ...worse on validation
    assert rep.result.best.name == "lr" and [r["head"] for r in rep.result.rows] == ["lr", "lgbm"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "never used to choose" in report


def test_minibatch_candidates_train_in_one_pass_and_the_best_on_validation_is_kept(cache, tmp_path, capsys):
    from heads.sweep import run_sweep

    g = grid(tmp_path, {"lr": [{"C": c, "solver": "minibatch", "max_epochs": 3, "batch_size": 64, "lr": 0.01}
                               for c in (0.01, 1.0)],
                        "mlp": [{"hidden_sizes": [16], "max_epochs": 30}, {"hidden_sizes": [8], "max_epochs": 30}]})
    result = run_sweep(cache, heads=["lr", "mlp"], views=["pooled"], grid=g, progress=True)
    err = capsys.readouterr().err
    assert "sweep" in err and "lr on pooled (2 at once)" in err and "epoch" in err  # the sweep's and the fit's bars
    for row in result.rows:
        assert row["candidates"] == 2 and row["validation_accuracy"] > 0.5
    best = max(result.rows, key=lambda r: r["validation_accuracy"])
    assert result.best.name == best["head"]


def test_lightgbm_over_its_budget_is_skipped_with_a_reason(cache, tmp_path, monkeypatch):
    import heads.gbm as gbm
    from heads.sweep import sweep_to_folder
    from heads.sweep_fit import skip_reason

    y = np.array([f"a{i % 400}" for i in range(200_000)], dtype=object)
    reason = skip_reason("lgbm", [{}], None, y, 400)
    assert reason.startswith("skipped: LightGBM grows one tree per class per round; 200,000 rows x 400 classes")
    assert skip_reason("lgbm", [{}], None, y[:1000], 400) is None and skip_reason("lr", [{}], None, y, 400) is None
    monkeypatch.setattr(gbm, "LGBM_MAX_WORK", 10.0)
    rep = sweep_to_folder(cache, tmp_path / "out", heads=["lr", "lgbm"], views=["pooled"], progress=False)
    assert [r["head"] for r in rep.result.rows] == ["lr"]
    assert "lgbm on pooled** skipped: LightGBM grows one tree" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["skipped"][0]["head"] == "lgbm"
