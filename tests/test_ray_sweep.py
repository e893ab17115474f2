"""`featcache sweep --engine ray` on a local Ray instance: the same rows, choices and best head as a local sweep."""

import json

import pytest

from featcache.cache.synthetic import write_synthetic_cache

ray = pytest.importorskip("ray")


def test_a_ray_sweep_equals_the_local_sweep(cluster, tmp_path):
    from click.testing import CliRunner

    from cli import main

    cache = write_synthetic_cache(tmp_path / "c.h5", 160, 40, 1200, 300, query_tokens=4, query_dim=16, proj_dim=8)
    runner, reports = CliRunner(), {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        r = runner.invoke(main, ["sweep", str(cache), "--heads", "lr,mlp,lgbm", "--views", "pooled,itc", "--jobs", "2",
                                 "--engine", engine, "--out", str(out)])
        assert r.exit_code == 0, r.output
        reports[engine] = json.loads((out / "results.json").read_text())
        reports[engine]["best"] = json.loads((out / "best" / "featcache.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # noqa: E731
    assert strip(reports["ray"]["ranking"]) == strip(reports["local"]["ranking"])
    assert len(reports["ray"]["ranking"]) == 6
    for key in ("view", "name", "search_params"):
        assert reports["ray"]["best"][key] == reports["local"]["best"][key]
