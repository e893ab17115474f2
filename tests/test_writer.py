"""The writer process: shards and the final file written off the feeding process, as they finish. The file it
streams equals a merge after the fact and the in-thread writer's; its failures and its parent's death lose
nothing committed; --cuda-graphs falls back to eager (and says so) where it cannot capture."""

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from featcache import open_cache
from featcache.errors import ExtractError
from featcache.extract import Compute, Spread, Storage, extract, merge_parts
from featcache.models.backbone import load_backbone
from test_extract import assert_same_file, killed_extract, read_all, saved_images

def fast(**compute) -> dict:
    """The quick settings (a compute setting of the call's own added)."""
    return dict(compute=Compute(batch_size=2, workers=0, **compute), storage=Storage(shard_size=2), progress=False)


def test_streamed_file_equals_a_merge_after_the_fact_and_the_thread_writer(small_dataset, backbone, tmp_path,
                                                                        monkeypatch):
    extract(small_dataset, tmp_path / "streamed.h5", model=backbone, **fast(writer="process"))
    extract(small_dataset, tmp_path / "later.h5", model=backbone, **fast(), spread=Spread(merge_output=False))
    merge_parts(str(tmp_path / "later.h5") + ".parts")
    assert_same_file(tmp_path / "streamed.h5", tmp_path / "later.h5")
    extract(small_dataset, tmp_path / "thread.h5", model=backbone, **fast(writer="thread"))
    assert_same_file(tmp_path / "streamed.h5", tmp_path / "thread.h5")
    import featcache.extract.writer as writer

    monkeypatch.setattr(writer.mp, "get_all_start_methods", lambda: ["spawn"])  # no fork: a thread, whatever asked
    extract(small_dataset, tmp_path / "nofork.h5", model=backbone, **fast(writer="process"))
    assert_same_file(tmp_path / "streamed.h5", tmp_path / "nofork.h5")
    with open_cache(tmp_path / "streamed.h5") as cache:
        assert cache.n_images == len(small_dataset.images())


def test_a_resumed_run_streams_the_new_shards_and_copies_the_old(small_dataset, backbone, tmp_path):
    out = tmp_path / "c.h5"
    half = small_dataset.limit(len(small_dataset.questions) // 2)
    extract(half, out, model=backbone, **fast(), spread=Spread(merge_output=False))  # some shards finished, kept as parts
    report = extract(small_dataset, out, model=backbone, **fast(writer="process"))
    assert report.shards_done_before > 0 and not Path(str(out) + ".parts").exists()
    extract(small_dataset, tmp_path / "straight.h5", model=backbone, **fast())
    assert_same_file(out, tmp_path / "straight.h5")


def test_a_write_failure_in_the_writer_process_is_named_and_keeps_the_shards(small_dataset, backbone, tmp_path,
                                                                              monkeypatch):
    import featcache.cache.parts as parts

    real, calls = parts.sha256_file, []

    def full_after_two(path):  # runs in the writer process: the fork carries the patch
        calls.append(path)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path)

    monkeypatch.setattr(parts, "sha256_file", full_after_two)
    out = tmp_path / "c.h5"
    with pytest.raises(ExtractError, match="no space left in"):
        extract(small_dataset, out, model=backbone, **fast(writer="process"))
    monkeypatch.undo()
    kept = saved_images(Path(str(out) + ".parts"))
    assert kept >= 2 and not out.exists() and not out.with_name("c.h5.tmp").exists()
    assert not (tmp_path / "c.h5.parts" / "final.h5.tmp").exists()
    report = extract(small_dataset, out, model=backbone, **fast())
    assert report.images_computed == len(small_dataset.images()) - kept


def test_the_writer_process_ends_with_its_parent(small_dataset, tiny_itm, tmp_path):
    out = tmp_path / "c.h5"
    proc = killed_extract(tmp_path, small_dataset, tiny_itm, out, options='batch_size=2, shard_size=2, writer="process"',
                          before_kill='import multiprocessing; print("writer", multiprocessing.active_children()[0].pid, '
                                      'flush=True)')
    child = int(proc.stdout.split("writer")[1].split()[0])
    for _ in range(100):  # it sees its pipe close, drops the unfinished final file and exits
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the writer process outlived its parent")
    assert not out.exists() and not (tmp_path / "c.h5.parts" / "final.h5.tmp").exists()
    assert saved_images(Path(str(out) + ".parts")) >= 2  # what was committed stays


def test_cuda_graphs_fall_back_to_eager_and_say_so(small_dataset, tiny_itm, tmp_path):
    report = extract(small_dataset, tmp_path / "g.h5", model=load_backbone(str(tiny_itm), device="cpu"),
                     **fast(cuda_graphs=True))
    assert report.cuda_graphs == "off: cpu is not a CUDA device"
    extract(small_dataset, tmp_path / "e.h5", model=load_backbone(str(tiny_itm), device="cpu"), **fast())
    a, attrs = read_all(tmp_path / "g.h5")
    b, _ = read_all(tmp_path / "e.h5")
    assert attrs["cuda_graphs"] == report.cuda_graphs
    for name in ("images/query", "images/query_proj", "questions/text_proj"):
        assert (a[name] == b[name]).all(), name
    with pytest.raises(ExtractError, match="does not combine"):
        extract(small_dataset, tmp_path / "x.h5", model=str(tiny_itm),
                **fast(device="cpu", cuda_graphs=True, compile=True))
