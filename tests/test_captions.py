"""`featcache caption`: captions from a cache equal captions from the images, are reproducible, and are
scored by pycocoevalcap / bert-score (never by our own metric code)."""

import html
import json
import shutil

import pytest

from featcache.errors import FeatcacheError
from featcache.extract import Compute, Storage, extract
from featcache.generative.caption import CaptionSettings, caption, read_captions
from featcache.generative.caption_metrics import caption_scores
from featcache.models.tiny_generative import build_tiny_generative

JAVA = shutil.which("java")


@pytest.fixture(scope="module", params=["opt", "t5"])
def captioner(request, tmp_path_factory):
    from tests.conftest import write_images
    from featcache.datasets.base import Question, VQADataset

    root = tmp_path_factory.mktemp(f"cap_{request.param}")
    paths = write_images(root / "imgs", 6)
    ds = VQADataset("caps", str(root), [Question(p.stem, "what is it?", "x", "test") for p in paths],
                    {p.stem: str(p) for p in paths})
    folder = build_tiny_generative(root / "model", request.param, seed=0)
    extract(ds, root / "c.h5", model=str(folder), progress=False, compute=Compute(device="cpu", workers=0),
            storage=Storage(store_dtype="float32"))
    return folder, root / "c.h5", ds


def test_captions_from_the_cache_equal_captions_from_the_images(captioner, tmp_path):
    folder, cache, ds = captioner
    settings = CaptionSettings(num_beams=3, max_new_tokens=8)
    a = read_captions(caption(str(folder), tmp_path / "a.csv", cache=cache, settings=settings, progress=False))
    b = read_captions(caption(str(folder), tmp_path / "b.jsonl", dataset=ds, settings=settings, progress=False))
    assert a == b and sorted(a) == sorted(ds.images()) and all(len(v) == 1 for v in a.values())
    made = json.loads((tmp_path / "a.csv.settings.json").read_text())
    assert made["num_beams"] == 3 and made["model"] == str(folder)


def test_sampled_captions_repeat_with_the_seed(captioner, tmp_path):
    folder, cache, _ = captioner
    runs = [read_captions(caption(str(folder), tmp_path / f"{i}.csv", cache=cache, progress=False,
                                  settings=CaptionSettings(do_sample=True, seed=seed, max_new_tokens=8, top_p=1.0,
                                                           temperature=20.0)))
            for i, seed in enumerate([7, 7, 8])]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_greedy_caption_equals_model_generate(captioner):
    import torch
    from transformers import AutoProcessor

    from featcache.generative.caption import caption_tokens
    from featcache.models.generative import load_generative

    folder, _, ds = captioner
    lm = load_generative(str(folder), device="cpu")
    processor = AutoProcessor.from_pretrained(folder)
    x = processor(images=ds.open_image(ds.images()[0]), text="", return_tensors="pt")
    with torch.no_grad():
        ref = lm.model.generate(**x, max_new_tokens=6, num_beams=1, do_sample=False, min_new_tokens=1)
        tokens = lm.model.get_image_features(pixel_values=x["pixel_values"]).pooler_output
    new = ref[0, x["input_ids"].shape[1]:] if lm.decoder_only else ref[0]
    ours = caption_tokens(lm, tokens, CaptionSettings(num_beams=1, max_new_tokens=6))
    text = lm.tokenizer.decode(new, skip_special_tokens=True)
    assert ours == [" ".join(text.replace("\ufffd", " ").split())]  # (a random model's half characters left out)
    assert "\ufffd" not in ours[0]


def test_metrics_come_from_pycocoevalcap():
    refs = {"a": ["a red square on a table", "a red box"], "b": ["two blue circles", "blue circles on white"]}
    perfect = caption_scores({"a": "a red square on a table", "b": "two blue circles"}, refs, java=None)
    worse = caption_scores({"a": "a green dog", "b": "circles"}, refs, java=None)
    assert perfect["scores"]["BLEU-1"] == pytest.approx(1.0) and perfect["scores"]["ROUGE-L"] == pytest.approx(1.0)
    assert all(worse["scores"][m] < perfect["scores"][m] for m in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"))
    assert "METEOR" in perfect["unavailable"] and "no java" in perfect["tokenizer"]
    assert caption_scores({"a": "x", "zzz": "y"}, refs, java=None)["without_references"] == 1
    with pytest.raises(FeatcacheError, match="no captioned image has a reference"):
        caption_scores({"q": "x"}, refs, java=None)


@pytest.mark.skipif(JAVA is None, reason="the COCO protocol's tokenizer and METEOR need java")
def test_the_coco_protocol_with_java_gives_the_same_bleu_on_plain_text_and_meteor():
    refs = {"a": ["a red square on a table", "a red box"], "b": ["two blue circles", "blue circles on white"]}
    cands = {"a": "a red square", "b": "two circles"}
    coco, plain = caption_scores(cands, refs), caption_scores(cands, refs, java=None)
    assert coco["tokenizer"].startswith("PTBTokenizer") and 0 < coco["scores"]["METEOR"] < 1
    for m in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert coco["scores"][m] == pytest.approx(plain["scores"][m])


def test_bertscore_with_a_local_model_and_a_message_without_one(tiny_itm, tmp_path):
    pytest.importorskip("bert_score")
    from transformers import BertConfig, BertModel, BertTokenizer

    tok = BertTokenizer.from_pretrained(tiny_itm)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    refs = {"a": ["a red square"], "b": ["two blue circles"]}
    same = caption_scores({"a": "a red square", "b": "two blue circles"}, refs, java=None,
                          bertscore_model=str(tmp_path / "bert"), bertscore_layers=2)
    assert same["scores"]["BERTScore-F1"] == pytest.approx(1.0, abs=1e-5)
    assert "BERTScore" not in same["unavailable"]
    missing = caption_scores({"a": "a red square"}, refs, java=None, bertscore_model=str(tmp_path / "nothing"),
                             bertscore_layers=2)
    assert "BLEU-4" in missing["scores"] and "could not load" in missing["unavailable"]["BERTScore"]


def test_caption_cli_writes_captions_and_metrics(captioner, tmp_path):
    from click.testing import CliRunner

    from cli import main

    folder, cache, ds = captioner
    refs = tmp_path / "refs.csv"
    refs.write_text("image,caption\n" + "".join(f"{k},a small picture\n{k},a picture of a shape\n" for k in ds.images()))
    runner = CliRunner()
    r = runner.invoke(main, ["caption", str(cache), "--model", str(folder), "--out", str(tmp_path / "c.jsonl"),
                             "--num-beams", "2", "--max-new-tokens", "6", "--references", str(refs)])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "c.jsonl.metrics.json").read_text())
    assert metrics["images"] == len(ds.images()) and set(metrics["scores"]) >= {"BLEU-4", "CIDEr", "ROUGE-L"}
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == len(ds.images())
    page = (tmp_path / "c.jsonl.html").read_text()  # each image with its caption and references, and the scores
    captions = [json.loads(line)["caption"] for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert "CIDEr" in page and "a picture of a shape" in page and page.count('class="card"') == len(ds.images())
    assert all(html.escape(c) in page for c in captions) and "<script" not in page
    bad = tmp_path / "bad.csv"
    bad.write_text("img,text\nx,y\n")
    for args, message in (([str(cache), "--out", str(tmp_path / "c.txt")], "must end in .csv or .jsonl"),
                          (["--out", str(tmp_path / "c.csv")], "give a CACHE or --dataset"),
                          ([str(cache), "--out", str(tmp_path / "d.csv"), "--references", str(bad)],
                           "must name the columns image and caption")):
        r = runner.invoke(main, ["caption", "--model", str(folder), *args])
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output
