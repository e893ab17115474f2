"""Shards as the unit of work: SLURM-style runs merge to the local file, shard identity ignores unrelated
rows, one writer per output, a full disk stops cleanly and the rerun finishes the same file."""

import errno
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from cli import main
from featcache.errors import ExtractError
from featcache.extract import Compute, Spread, Storage, extract
from featcache.extract.guards import lock as _lock
from tests.test_extract import assert_same_file, saved_images

FAST = dict(compute=Compute(batch_size=2, workers=0), storage=Storage(shard_size=2), progress=False)


def test_shard_index_runs_then_merge_equal_a_local_run(small_dataset, backbone, tiny_itm, tmp_path):
    extract(small_dataset, tmp_path / "local.h5", model=backbone, **FAST)
    out = tmp_path / "slurm.h5"
    reports = [extract(small_dataset, out, model=backbone, **FAST, spread=Spread(shard_index=i, num_shards=3)) for i in range(3)]
    assert not out.exists() and all(not r.merged for r in reports)
    assert sum(r.shards for r in reports) == len(json.loads((tmp_path / "slurm.h5.parts" / "manifest.json")
                                                           .read_text())["shards"])
    r = CliRunner().invoke(main, ["merge", str(tmp_path / "slurm.h5.parts")])
    assert r.exit_code == 0 and "wrote" in r.output, r.output
    assert_same_file(out, tmp_path / "local.h5")
    assert not (tmp_path / "slurm.h5.parts").exists()


def test_merge_refuses_unfinished_parts(small_dataset, backbone, tmp_path):
    extract(small_dataset, tmp_path / "c.h5", model=backbone, **FAST, spread=Spread(shard_index=0, num_shards=2))
    r = CliRunner().invoke(main, ["merge", str(tmp_path / "c.h5.parts")])
    assert r.exit_code == 1 and "not finished yet" in r.output and "Traceback" not in r.output, r.output


def test_removing_a_row_or_renaming_keeps_the_other_shards(small_dataset, backbone, tmp_path):
    out = tmp_path / "c.h5"
    first = extract(small_dataset, out, model=backbone, **FAST, spread=Spread(shard_index=0, num_shards=1))
    assert first.shards_done_before == 0
    renamed = replace(small_dataset, name="renamed", source="/elsewhere/manifest.csv")
    again = extract(renamed, out, model=backbone, **FAST, spread=Spread(shard_index=0, num_shards=1))
    assert again.shards_done_before == again.shards and again.images_computed == 0
    gone = sorted(small_dataset.images())[4]  # drop every row of one image, as after removing a bad row
    fewer = replace(small_dataset, questions=[q for q in small_dataset.questions if q.image != gone])
    rep = extract(fewer, out, model=backbone, **FAST)
    assert rep.shards_done_before == rep.shards - 1  # only the shard that held the image is redone
    extract(fewer, tmp_path / "straight.h5", model=backbone, **FAST)
    assert_same_file(out, tmp_path / "straight.h5")


def test_a_second_run_on_the_same_output_is_refused(small_dataset, backbone, tmp_path):
    out = tmp_path / "c.h5"
    parts = tmp_path / "c.h5.parts"
    parts.mkdir()
    held = _lock(parts, "lock", out)  # as a first run holds it
    try:
        with pytest.raises(ExtractError, match=r"another featcache extract or merge is writing .*c\.h5 \(pid \d+"):
            extract(small_dataset, out, model=backbone, **FAST)
    finally:
        held.close()
    extract(small_dataset, out, model=backbone, **FAST)  # the lock dies with its holder


def test_full_disk_stops_with_the_space_needed_and_the_rerun_finishes(small_dataset, backbone, tmp_path,
                                                                      monkeypatch):
    import featcache.extract.run as extract_mod
    import featcache.cache.parts as shards_mod

    out = tmp_path / "c.h5"
    real_usage = shards_mod.shutil.disk_usage
    monkeypatch.setattr(extract_mod.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1000))
    with pytest.raises(ExtractError, match=r"no space left in .*c\.h5\.parts: this run needs about [0-9.]+ (B|KB|MB|GB)"):
        extract(small_dataset, out, model=backbone, **FAST)
    monkeypatch.undo()

    real_sha, calls = shards_mod.sha256_file, []

    def disk_fills(path):  # the third shard's write hits ENOSPC
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_sha(path)

    monkeypatch.setattr(shards_mod, "sha256_file", disk_fills)
    with pytest.raises(ExtractError, match="no space left in"):
        extract(small_dataset, out, model=backbone, **FAST)
    monkeypatch.undo()
    kept = saved_images(tmp_path / "c.h5.parts")
    assert kept >= 2 and not out.exists()
    rep = extract(small_dataset, out, model=backbone, **FAST)
    assert rep.images_computed == len(small_dataset.images()) - kept
    extract(small_dataset, tmp_path / "straight.h5", model=backbone, **FAST)
    assert_same_file(out, tmp_path / "straight.h5")


def test_the_sharded_form_reads_like_the_merged_file(small_dataset, backbone, tmp_path):
    import numpy as np

    from featcache import open_cache

    extract(small_dataset, tmp_path / "one.h5", model=backbone, **FAST)
    rep = extract(small_dataset, tmp_path / "many.h5", model=backbone, **FAST, spread=Spread(merge_output=False))
    assert not rep.merged and not (tmp_path / "many.h5").exists()
    parts = tmp_path / "many.h5.parts"
    with open_cache(tmp_path / "one.h5") as one, open_cache(parts) as many:
        assert many.n_images == one.n_images and many.n_questions == one.n_questions
        assert {k: many.attrs[k] for k in one.attrs if k != "created"} == \
            {k: one.attrs[k] for k in one.attrs if k != "created"}
        for view in ("itc", "pooled", "full", "sim"):
            for split in ("train", "test"):
                (Xa, ya), (Xb, yb) = one.view(view, split), many.view(view, split)
                np.testing.assert_array_equal(np.asarray(Xa), np.asarray(Xb), err_msg=view)
                assert list(ya) == list(yb)
        for name in ("key", "error"):
            assert list(one.strings("images", name)) == list(many.strings("images", name))
        assert list(one.strings("questions", "error")) == list(many.strings("questions", "error"))
    runner = CliRunner()
    for args in (["info", str(parts)], ["verify", str(parts)],
                 ["sweep", str(parts), "--heads", "lr", "--views", "sim", "--out", str(tmp_path / "r")]):
        r = runner.invoke(main, args)
        assert r.exit_code == 0, (args, r.output)
    r = runner.invoke(main, ["evaluate", str(tmp_path / "r" / "best"), str(parts), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0 and "accuracy" in r.output, r.output
