"""Question-conditioned features (extract --features multimodal) and InstructBLIP, on tiny random checkpoints and
real images: the states equal what transformers computes for the same (image, question), the ViT runs once per
image (also when the states come from a --store-vision cache), a killed run resumes to the same file, heads and
sweeps read the new views, and InstructBLIP ranks and generates from the cache as the uncached model does."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import main
from featcache import open_cache
from featcache.datasets import Question, VQADataset, load_dataset
from featcache.errors import CacheFormatError, ExtractError, FeatcacheError
from featcache.extract import Compute, Features, Spread, Storage, extract
from featcache.models.backbone import load_backbone
from test_extract import assert_same_file, killed_extract, saved_images

TEXTS = ["what color is the shape?", "is there a circle?", "what shape is in the image?", "how many shapes?"]


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    """80 Easy-VQA images (real PNGs) with their questions, a question asked twice of one image."""
    ds = load_dataset("easy-vqa", limit=300)
    ds.questions.append(Question(ds.questions[0].image, ds.questions[0].text, ds.questions[0].answer,
                                 ds.questions[0].split))
    return ds


@pytest.fixture(scope="module")
def instructblip(tmp_path_factory):
    from featcache.models.tiny_instructblip import build_tiny_instructblip

    return {lm: build_tiny_instructblip(tmp_path_factory.mktemp(f"ib_{lm}"), lm) for lm in ("t5", "llama")}


@pytest.fixture(scope="module")
def mm_cache(easy, tiny_itm, tmp_path_factory):
    out = tmp_path_factory.mktemp("mm") / "mm.h5"
    extract(easy, out, model=load_backbone(str(tiny_itm), device="cpu"), progress=False, compute=Compute(workers=0),
            storage=Storage(store_vision=True, store_dtype="float32", shard_size=16),
            features=Features(kind="multimodal"))
    return out


def _images(ds, keys):
    return [ds.open_image(str(k)) for k in keys]


def test_multimodal_states_equal_the_itm_path_and_depend_on_the_question(mm_cache, easy, tiny_itm):
    from transformers import AutoProcessor, Blip2ForImageTextRetrieval

    model = Blip2ForImageTextRetrieval.from_pretrained(tiny_itm).eval()
    processor = AutoProcessor.from_pretrained(tiny_itm)
    with open_cache(mm_cache) as cache:
        keys, texts = cache.strings("images", "key"), cache.strings("pairs", "text")
        image_row, states = cache.array("pairs", "image_row"), cache.read("pairs", "mm_query")
        pair_row, q_text = cache.array("questions", "pair_row"), cache.strings("questions", "text")
        q_image = cache.array("questions", "image_row")
        assert cache.n_questions == len(easy.questions) and len(texts) == cache.n_questions - 1  # the repeat: once
    np.testing.assert_array_equal(texts[pair_row], q_text)  # each question finds its own pair
    np.testing.assert_array_equal(image_row[pair_row], q_image)
    first = image_row == image_row[0]
    assert first.sum() >= 2  # one image, several questions: different states
    assert np.abs(states[first][0] - states[first][1]).max() > 1e-4
    for p in range(0, len(texts), 37):
        x = processor(images=_images(easy, [keys[image_row[p]]]), text=[texts[p]], return_tensors="pt")
        with torch.no_grad():
            out = model(**x, use_image_text_matching_head=True)
        reference = out.text_model_output.last_hidden_state[0, :32].numpy()
        np.testing.assert_allclose(states[p], reference, rtol=0, atol=2e-5, err_msg=texts[p])
        # and the ITM head over them gives the model's own match logits
        logits = model.itm_head(torch.as_tensor(states[p:p + 1])).mean(dim=1)
        np.testing.assert_allclose(logits.detach().numpy(), out.logits_per_image.detach().numpy(), atol=1e-4)


def test_the_vit_runs_once_per_image_and_from_vision_never(easy, tiny_itm, mm_cache, tmp_path):
    bb = load_backbone(str(tiny_itm), device="cpu")
    vit = []
    vision = bb.model.vision_model.forward
    bb.model.vision_model.forward = lambda *a, **kw: (vit.append(kw.get("pixel_values", a[0] if a else None).shape[0]),
                                                      vision(*a, **kw))[1]
    out = tmp_path / "fv.h5"
    extract(easy, out, model=bb, progress=False, compute=Compute(workers=0),
            storage=Storage(store_dtype="float32", shard_size=16),
            features=Features(kind="multimodal", from_vision=str(mm_cache)))
    assert vit == []  # the states came from the --store-vision cache
    with open_cache(out) as a, open_cache(mm_cache) as b:
        assert a.attrs["vision_from"] == str(mm_cache)
        for group, name in (("pairs", "mm_query"), ("images", "query"), ("images", "query_proj")):
            np.testing.assert_allclose(a.read(group, name), b.read(group, name), rtol=0, atol=1e-6, err_msg=name)
    extract(easy, tmp_path / "live.h5", model=bb, progress=False, compute=Compute(batch_size=8, workers=0),
            features=Features(kind="multimodal"))
    assert sum(vit) == len(easy.images())  # from the images: each image through the ViT once


def test_resume_after_kill_gives_the_uninterrupted_file(easy, tiny_itm, tmp_path):
    out = tmp_path / "resumed.h5"
    killed_extract(tmp_path, easy, tiny_itm, out, kill_at=5,
                   options='batch_size=4, shard_size=8, features="multimodal"')
    assert saved_images(Path(str(out) + ".parts")) >= 1 and not out.exists()  # finished shards kept, then death
    bb = load_backbone(str(tiny_itm), device="cpu")
    report = extract(easy, out, model=bb, progress=False, compute=Compute(batch_size=4, workers=0),
                     storage=Storage(shard_size=8), features=Features(kind="multimodal"))
    assert report.resumed and report.images_computed < len(easy.images())
    extract(easy, tmp_path / "straight.h5", model=bb, progress=False, compute=Compute(batch_size=4, workers=0),
            storage=Storage(shard_size=8), features=Features(kind="multimodal"))
    assert_same_file(out, tmp_path / "straight.h5")


def test_a_changed_question_recomputes_only_its_shard(easy, tiny_itm, tmp_path):
    bb = load_backbone(str(tiny_itm), device="cpu")
    out = tmp_path / "a.h5"
    extract(easy, out, model=bb, progress=False, compute=Compute(workers=0), storage=Storage(shard_size=8),
            spread=Spread(merge_output=False), features=Features(kind="multimodal"))
    changed = VQADataset(easy.name, easy.source, list(easy.questions), easy.image_paths)
    q = changed.questions[5]
    changed.questions[5] = Question(q.image, "is there a triangle?", q.answer, q.split)
    report = extract(changed, out, model=bb, progress=False, compute=Compute(workers=0), storage=Storage(shard_size=8),
                     features=Features(kind="multimodal"))
    assert 0 < report.shards - report.shards_done_before <= 2 and report.images_computed < len(easy.images())
    with open_cache(out) as cache:
        row = cache.array("questions", "pair_row")[5]
        assert cache.strings("pairs", "text")[row] == "is there a triangle?"


def test_pooled_store_sharded_form_and_the_views(easy, tiny_itm, mm_cache, tmp_path):
    bb = load_backbone(str(tiny_itm), device="cpu")
    pooled = tmp_path / "pooled.h5"
    extract(easy, pooled, model=bb, progress=False, compute=Compute(workers=0),
            storage=Storage(store_dtype="float32", shard_size=16), spread=Spread(merge_output=False),
            features=Features(kind="multimodal", mm_store="pooled"))
    parts = str(pooled) + ".parts"
    with open_cache(mm_cache) as full, open_cache(parts) as part:
        assert part.views()["mm_pooled"] == "" and "--mm-store full" in part.views()["mm"]
        with pytest.raises(CacheFormatError, match="--mm-store full"):
            part.view("mm", "train")
        a, ya = full.view("mm_pooled", "train")
        b, yb = part.view("mm_pooled", "train")
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)  # the mean, on the device or on read
        X, _ = full.view("mm", "test")
        streamed, _ = full.view("mm", "test", stream=True)
        assert X.shape[1] == 32 * 32 and np.array_equal(np.asarray(X), np.asarray(streamed))
        from featcache.cache.views import default_views

        assert default_views(full) == ["pooled", "itc", "mm_pooled", "mm"]


def test_sweep_compares_unimodal_and_conditioned_views_and_predict_reads_them(mm_cache, easy, tiny_itm, tmp_path):
    out = tmp_path / "report"
    r = CliRunner().invoke(main, ["sweep", str(mm_cache), "--heads", "lr", "--views", "pooled,mm_pooled,mm",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    ranking = json.loads((out / "results.json").read_text())["ranking"]
    assert {row["view"] for row in ranking} == {"pooled", "mm_pooled", "mm"}
    from featcache.workflows.predict import predict
    from heads.sweep import fit_head

    trained = fit_head(mm_cache, "lr", "mm_pooled")
    with open_cache(mm_cache) as cache:
        X, _ = cache.view("mm_pooled", "test")
        idx = np.flatnonzero(cache.strings("questions", "split") == "test")[:6]
        keys = cache.strings("images", "key")[cache.array("questions", "image_row")[idx]]
        texts = cache.strings("questions", "text")[idx]
    pairs = [(easy.image_paths[str(k)], str(t)) for k, t in zip(keys, texts)]
    answers = predict(trained, pairs, model=load_backbone(str(tiny_itm), device="cpu"))
    expected = trained.head.predict_proba(X.rows(np.arange(6)))
    np.testing.assert_allclose([a["probability"] for a in answers], expected.max(1), atol=1e-3)


def test_instructblip_states_rank_and_generate_equal_transformers(instructblip, easy, tmp_path):
    from transformers import AutoProcessor

    from featcache.generative.rank import answer_tokens, generate_answers, score_answers
    from featcache.generative.zeroshot import zeroshot
    from featcache.models.generative import load_generative

    small = VQADataset(easy.name, easy.source, easy.questions[:12], easy.image_paths)
    prompt = "Question: {} Answer:"
    answers = ["red", "blue", "circle", "yes", "no", "two"]
    for lm_name, folder in instructblip.items():
        out = tmp_path / f"{lm_name}.h5"
        extract(small, out, model=str(folder), progress=False, compute=Compute(device="cpu", workers=0),
                storage=Storage(store_dtype="float32"), features=Features(kind="multimodal", mm_prompt=prompt))
        lm = load_generative(str(folder), device="cpu")
        processor = AutoProcessor.from_pretrained(folder)
        with open_cache(out) as cache:
            lm.check_cache(cache.attrs, cache.path, cache.pairs)
            assert cache.views()["image"] == "" and cache.views()["mm"] == ""
            rows = cache.array("questions", "pair_row")[:3]
            states = cache.read("pairs", "mm_query", np.sort(rows))
            keys = cache.strings("images", "key")[cache.array("questions", "image_row")[:3]]
        tokens = lm.image_tokens(open_cache(out), np.sort(rows))
        texts = [prompt.format(q.text) for q in small.questions[:3]]
        cached = score_answers(lm, tokens, texts, answers)
        ids = answer_tokens(lm, answers)
        for i in range(3):
            x = processor(images=small.open_image(str(keys[i])), text=texts[i], return_tensors="pt")
            q_inputs = dict(qformer_input_ids=x["qformer_input_ids"], qformer_attention_mask=x["qformer_attention_mask"])
            with torch.no_grad():
                feats = lm.model.get_image_features(x["pixel_values"], **q_inputs)
                np.testing.assert_allclose(states[i], feats.qformer_outputs.last_hidden_state[0, :32].numpy(),
                                           atol=2e-5)
                direct = []
                for a in ids:
                    if lm.decoder_only:
                        logits = lm.model(pixel_values=x["pixel_values"], **q_inputs,
                                          input_ids=torch.cat([x["input_ids"], torch.tensor([a])], 1)).logits[0, -len(a) - 1:-1]
                    else:
                        logits = lm.model(pixel_values=x["pixel_values"], **q_inputs, input_ids=x["input_ids"],
                                          labels=torch.tensor([a])).logits[0]
                    direct.append(float(torch.log_softmax(logits.double(), -1)[torch.arange(len(a)), torch.tensor(a)].sum()))
                np.testing.assert_allclose(cached[i], direct, rtol=0, atol=1e-4)
                reference = lm.model.generate(**x, max_new_tokens=4, do_sample=False, num_beams=1,
                                              eos_token_id=lm.tokenizer.eos_token_id)
            new = reference[0, x["input_ids"].shape[1]:] if lm.decoder_only else reference[0]
            expected = lm.tokenizer.decode(new, skip_special_tokens=True).strip().split("\n")[0].strip()
            assert generate_answers(lm, tokens[i:i + 1], texts[i:i + 1], max_new_tokens=4) == [expected]
        assert cached.std() > 0
        result = zeroshot(out, str(folder), method="rank", split=None, vocabulary=answers, device="cpu", progress=False)
        assert result.settings["prompt"] == prompt and len(result.pred) == len(small.questions)
        assert result.pred[0] == answers[int(np.argmax(cached[0]))]


def test_instructblip_cli_zero_shot_is_labelled_random(easy, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    runner = CliRunner()
    cache = tmp_path / "ib.h5"
    r = runner.invoke(main, ["extract", "--dataset", "easy-vqa", "--limit", "40", "--out", str(cache), "--model",
                             "tiny-random-instructblip-t5", "--features", "multimodal", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "RANDOM" in r.output and "pairs" in r.output
    r = runner.invoke(main, ["zeroshot", str(cache), "--model", "tiny-random-instructblip-t5", "--method", "rank",
                             "--split", "test", "--device", "cpu", "--out", str(tmp_path / "zs")])
    assert r.exit_code == 0, r.output
    assert "RANDOM" in r.output
    assert "RANDOM" in (tmp_path / "zs" / "report.md").read_text()
    small = load_dataset("easy-vqa", limit=12)
    manifest = tmp_path / "small.csv"
    manifest.write_text("image,question,answer,split\n" + "".join(
        f"{small.image_paths[q.image]},{q.text},{q.answer},test\n" for q in small.questions))
    r = runner.invoke(main, ["zeroshot", "--dataset", str(manifest), "--model",
                             "tiny-random-instructblip-llama", "--method", "generate", "--split", "test",
                             "--device", "cpu", "--out", str(tmp_path / "zs-gen")])  # extracts conditioned first
    assert r.exit_code == 0, r.output
    assert "Question: {} Answer:" in r.output


def test_bad_input_is_named(easy, tiny_itm, tiny_itm_other, tiny_opt, instructblip, mm_cache, tmp_path):
    bb = load_backbone(str(tiny_itm), device="cpu")
    plain = tmp_path / "plain.h5"
    extract(easy, plain, model=bb, progress=False, compute=Compute(workers=0))
    with pytest.raises(ExtractError, match="--store-vision"):
        extract(easy, tmp_path / "x.h5", model=bb, progress=False,
                features=Features(kind="multimodal", from_vision=str(plain)))
    with pytest.raises(ExtractError, match="not .*weights|whose weights"):
        extract(easy, tmp_path / "y.h5", model=str(tiny_itm_other), progress=False, compute=Compute(device="cpu"),
                features=Features(kind="multimodal", from_vision=str(mm_cache)))
    with pytest.raises(ExtractError, match="no Q-Former text path"):
        extract(easy, tmp_path / "z.h5", model=str(tiny_opt), progress=False, compute=Compute(device="cpu"),
                features=Features(kind="multimodal"))
    with pytest.raises(ExtractError, match="exactly one"):
        extract(easy, tmp_path / "p.h5", model=bb, progress=False,
                features=Features(kind="multimodal", mm_prompt="Q: {} {}"))
    with open_cache(plain) as cache, pytest.raises(CacheFormatError, match="--features multimodal"):
        cache.view("mm", "train")
    fewer = VQADataset(easy.name, easy.source, easy.questions[:20], easy.image_paths)
    extract(fewer, tmp_path / "few.h5", model=bb, progress=False, compute=Compute(workers=0),
            storage=Storage(store_vision=True))
    with pytest.raises(ExtractError, match="lacks .* of this dataset's images"):
        extract(easy, tmp_path / "w.h5", model=bb, progress=False,
                features=Features(kind="multimodal", from_vision=str(tmp_path / "few.h5")))
    import shutil

    import h5py

    for edit, message in (("keys", "not in the order featcache writes"), ("shape", "ViT states are")):
        edited = tmp_path / f"edited-{edit}.h5"
        shutil.copy(mm_cache, edited)
        with h5py.File(edited, "r+") as f:
            if edit == "keys":  # two images' keys swapped: each would get the other's ViT states
                keys = f["images"]["key"][:]
                keys[[0, 1]] = keys[[1, 0]]
                f["images"]["key"][:] = keys
            else:  # the states reshaped
                vision = f["images"]["vision"][:]
                del f["images"]["vision"]
                f["images"].create_dataset("vision", data=vision[:, :-1])  # one state fewer per image
        with pytest.raises(ExtractError, match=message):
            extract(easy, tmp_path / f"v-{edit}.h5", model=bb, progress=False,
                    features=Features(kind="multimodal", from_vision=str(edited)))
    from featcache.generative.zeroshot import zeroshot

    unconditioned = tmp_path / "ib-plain.h5"
    extract(fewer, unconditioned, model=str(instructblip["t5"]), progress=False,
            compute=Compute(device="cpu", workers=0))
    with pytest.raises(FeatcacheError, match="--features multimodal"):
        zeroshot(unconditioned, str(instructblip["t5"]), method="rank", split=None, device="cpu", progress=False)
    r = CliRunner().invoke(main, ["extract", "--dataset", "easy-vqa", "--limit", "20", "--out", str(tmp_path / "c.h5"),
                                  "--model", str(tiny_opt), "--features", "multimodal", "--device", "cpu"])
    assert r.exit_code != 0 and "Traceback" not in r.output and "no Q-Former text path" in r.output


def test_a_bad_image_fails_its_questions_and_keeps_the_others(easy, tiny_itm, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = dict(easy.image_paths, **{easy.questions[0].image: str(broken)})
    ds = VQADataset(easy.name, easy.source, easy.questions[:40], paths)
    bb = load_backbone(str(tiny_itm), device="cpu")
    with pytest.raises(ExtractError, match="broken.png"):
        extract(ds, tmp_path / "a.h5", model=bb, progress=False, compute=Compute(workers=0),
                features=Features(kind="multimodal"))
    report = extract(ds, tmp_path / "a.h5", model=bb, progress=False, compute=Compute(workers=0),
                     storage=Storage(skip_bad=True), features=Features(kind="multimodal"))
    bad = [i for i, q in enumerate(ds.questions) if q.image == easy.questions[0].image]
    assert report.failed_questions == bad and report.failed_images == [easy.questions[0].image]
    with open_cache(tmp_path / "a.h5") as cache:
        X, y = cache.view("mm", None)
        assert len(y) == len(ds.questions) - len(bad)
        states = cache.read("pairs", "mm_query")
        assert not states[cache.array("questions", "pair_row")[bad]].any()  # zeros, never read by a view
